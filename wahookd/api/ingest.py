"""POST /api/events: validate, fan out, commit (group commit), then wake the scheduler."""

from __future__ import annotations

from aiohttp import web

from ..events import EventError, parse_ingest_body
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
    items = []
    # a batch mostly repeats one session and a few types: check and match each once
    checked: set[str] = set()
    fan_out: dict[tuple[str, str], tuple[int, ...]] = {}
    for i, event in enumerate(events):
        session_id = event.session_id
        if session_id not in checked:
            check_session(request, session_id, f"events[{i}].sessionId" if batch else "sessionId")
            checked.add(session_id)
        key = (session_id, event.type)
        webhook_ids = fan_out.get(key)
        if webhook_ids is None:
            webhook_ids = fan_out[key] = app[REGISTRY].match(session_id, event.type)
        items.append(IngestItem(event, webhook_ids))
    results = await app[STORE].ingest(items, now)
    app[METRICS].observe_ingest(items, results)
    queued = [due for r in results for due in r.deliveries]
    app[SCHEDULER].push(queued)
    return ok(
        {
            "success": True,
            "accepted": len(results),
            "ids": [r.event_uid for r in results],
            "queued": len(queued),
        },
        status=202,
    )
