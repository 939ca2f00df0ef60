"""POST /api/events: validate, fan out, commit (group commit), then wake the scheduler."""

from __future__ import annotations

from aiohttp import web

from ..chats import ChatKind, chat_kind, chat_of
from ..delivery.ordering import ordering_key
from ..events import EventError, parse_ingest_body
from ..models import Webhook
from ..store import IngestItem
from .common import ApiError, check_session, ok, read_json_object, requires
from .keys import CLOCK, METRICS, REGISTRY, SCHEDULER, STORE


@requires("ingest")
async def post_events(request: web.Request) -> web.Response:
    """Accept one event or {"events": [...]}; 202 once committed to disk."""
    body = await read_json_object(request)
    app = request.app
    now = app[CLOCK].time()
    try:
        events = parse_ingest_body(body, now=now, parsed=True)
    except EventError as exc:
        raise ApiError(400, str(exc)) from None
    batch = set(body) == {"events"}
    objects = body["events"] if batch else [body]
    registry = app[REGISTRY]
    items = []
    # a batch mostly repeats one session, a few types and kinds of chat: check and match
    # each combination once
    checked: set[str] = set()
    fan_out: dict[tuple[str, str, ChatKind | None], tuple[Webhook, ...]] = {}
    for i, (event, obj) in enumerate(zip(events, objects, strict=True)):
        session_id = event.session_id
        if session_id not in checked:
            check_session(request, session_id, f"events[{i}].sessionId" if batch else "sessionId")
            checked.add(session_id)
        chat = chat_of(obj)
        kind = None if chat is None else chat_kind(chat)
        key = (session_id, event.type, kind)
        hooks = fan_out.get(key)
        if hooks is None:
            hooks = fan_out[key] = registry.match_kind(session_id, event.type, kind)
        ids = tuple(hook.id for hook in hooks)
        if any(hook.ordering != "none" for hook in hooks):
            keys = tuple(ordering_key(hook.ordering, obj) for hook in hooks)
            items.append(IngestItem(event, ids, keys))
        else:
            items.append(IngestItem(event, ids))
    results = await app[STORE].ingest(items, now)
    app[METRICS].observe_ingest(items, results)
    queued = [due for r in results for due in r.deliveries]
    app[SCHEDULER].push(queued)
    return ok(
        {
            "success": True,
            "accepted": len(results),
            "ids": [r.event_uid for r in results],
            # held ones are queued as well: behind an earlier delivery of their chat
            "queued": len(queued) + sum(r.held for r in results),
        },
        status=202,
    )
