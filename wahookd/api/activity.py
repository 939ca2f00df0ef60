"""Recent activity: deliveries finished per minute (the console's overview chart)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..events import format_timestamp
from .common import ApiError, check_session, ok, principal, requires
from .keys import CLOCK, STORE

DEFAULT_MINUTES: Final = 60
MAX_MINUTES: Final = 1440  # a day: the index scan stays one short range
_QUERY: Final = ("minutes", "sessionId")


@requires("viewer")
async def get_activity(request: web.Request) -> web.Response:
    """GET /api/webhook/activity[?minutes=&sessionId=]: finished deliveries per minute."""
    q = request.query
    for name in q:
        if name not in _QUERY:
            raise ApiError(400, f"{name}: unknown query parameter; known: {', '.join(_QUERY)}")
    minutes = DEFAULT_MINUTES
    if "minutes" in q:
        raw = q["minutes"]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4):
            raise ApiError(400, f"minutes: must be an integer from 1 to {MAX_MINUTES}")
        if not 1 <= int(raw) <= MAX_MINUTES:
            raise ApiError(400, f"minutes: must be an integer from 1 to {MAX_MINUTES}")
        minutes = int(raw)
    who = principal(request)
    sessions: set[str] | None
    if "sessionId" in q:
        sessions = {check_session(request, q["sessionId"], "sessionId")}
    else:
        sessions = None if who.sessions is None else set(who.sessions)
    now = request.app[CLOCK].time()
    # whole minutes, the current one included (still filling)
    first = (int(now) // 60 - minutes + 1) * 60
    found = {m.minute: m for m in await request.app[STORE].activity(first, sessions)}
    series: list[dict[str, Any]] = []
    delivered = failed = 0
    for minute in range(first, first + minutes * 60, 60):
        row = found.get(minute)
        d, f = (0, 0) if row is None else (row.delivered, row.failed)
        series.append({"at": format_timestamp(minute), "delivered": d, "failed": f})
        delivered += d
        failed += f
    return ok(
        {
            "success": True,
            "since": format_timestamp(first),
            "minutes": series,
            "delivered": delivered,
            "failed": failed,
        }
    )
