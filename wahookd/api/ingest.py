"""POST /api/events: validate, fan out, commit (group commit), then wake the scheduler."""

from __future__ import annotations

from aiohttp import web

from ..chats import ChatKind, chat_kind, chat_of
from ..delivery.ordering import ordering_key
from ..events import EventError, parse_ingest_body
from ..models import Webhook
from ..store import IngestItem
from .common import ApiError, check_scope, ok, read_json_object, requires
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
    # a batch mostly repeats one session, a few types and kinds of chat: check each
    # session and match each combination once
    filtering: dict[str, bool] = {}  # session -> a webhook of it filters chats
    fan_out: dict[tuple[str, str, ChatKind | None], _Plan] = {}
    for event, obj in zip(events, objects, strict=True):
        session_id = event.session_id
        filters = filtering.get(session_id)
        if filters is None:
            check_scope(request, session_id)  # validate_event checked the id's form
            filters = filtering[session_id] = registry.filters_chats(session_id)
        kind = None
        if filters:  # else the kind of chat changes nothing: no need to work it out
            chat = chat_of(obj)
            kind = None if chat is None else chat_kind(chat)
        key = (session_id, event.type, kind)
        plan = fan_out.get(key)
        if plan is None:
            plan = fan_out[key] = _plan(registry.match_kind(session_id, event.type, kind))
        ids, orderings = plan
        if orderings is None:
            items.append(IngestItem(event, ids))
        else:
            keys = tuple(ordering_key(ordering, obj) for ordering in orderings)
            items.append(IngestItem(event, ids, keys))
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


# the webhook ids an event goes to, and their orderings when any of them orders
_Plan = tuple[tuple[int, ...], tuple[str, ...] | None]


def _plan(hooks: tuple[Webhook, ...]) -> _Plan:
    if len(hooks) == 1:  # the usual fan-out, once per session in a request: no generators
        (hook,) = hooks
        return (hook.id,), None if hook.ordering == "none" else (hook.ordering,)
    ids = tuple(hook.id for hook in hooks)
    if any(hook.ordering != "none" for hook in hooks):
        return ids, tuple(hook.ordering for hook in hooks)
    return ids, None
