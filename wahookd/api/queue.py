"""Routes for the queue and the stats of SPEC §6, and the sessions overview."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from ..audit import audit
from ..events import format_timestamp
from ..models import CLEARABLE_STATES, QUEUE_STATES, State, Webhook
from ..store import SessionStats
from .common import ApiError, check_session, ok, principal, requires, session_param
from .keys import CLOCK, REGISTRY, STORE


@requires("viewer")
async def get_queue(request: web.Request) -> web.Response:
    """GET /api/webhook/queue[?sessionId=]: queued deliveries by state."""
    who = principal(request)
    sessions: set[str] | None
    if "sessionId" in request.query:
        sessions = {check_session(request, request.query["sessionId"], "sessionId")}
    else:
        sessions = None if who.sessions is None else set(who.sessions)
    counts = await request.app[STORE].queue_counts(sessions)
    return ok({"success": True, "queue": counts})


@requires("admin")
async def delete_queue(request: web.Request) -> web.Response:
    """DELETE /api/webhook/queue/{sessionId}[?status=]: drop queued deliveries (not in flight)."""
    session_id = session_param(request)
    states: tuple[State, ...] = CLEARABLE_STATES
    if "status" in request.query:
        wanted = request.query["status"]
        allowed = [s.value for s in CLEARABLE_STATES]
        if wanted not in allowed:
            raise ApiError(400, f"status: must be one of {', '.join(allowed)}")
        states = (State(wanted),)
    removed = await request.app[STORE].clear_queue(session_id, states, request.app[CLOCK].time())
    audit(
        "queue.clear",
        by=principal(request).subject,
        session=session_id,
        details="removed " + ", ".join(f"{n} {name}" for name, n in removed.items()),
    )
    return ok({"success": True, "removed": removed})


@requires("viewer")
async def get_stats(request: web.Request) -> web.Response:
    """GET /api/webhook/stats/{sessionId}: all-time delivery statistics."""
    session_id = session_param(request)
    stats = await request.app[STORE].session_stats(session_id)
    if stats is None and not request.app[REGISTRY].serves(session_id):
        raise ApiError(404, f"no webhook and no deliveries for session '{session_id}'")
    return ok({"success": True, "stats": stats_json(stats)})


@requires("viewer")
async def list_sessions(request: web.Request) -> web.Response:
    """GET /api/webhook/sessions: each session with a webhook or queued deliveries, at a glance."""
    who = principal(request)
    store, registry = request.app[STORE], request.app[REGISTRY]
    queued = await store.queue_counts_by_session()
    ids = sorted(
        s for s in registry.session_ids() | set(queued) if who.sessions is None or s in who.sessions
    )
    stats = await store.sessions_stats(ids)
    zero = {s.value: 0 for s in QUEUE_STATES}
    sessions = [
        {
            "sessionId": session_id,
            "webhooks": [
                {"kind": hook.kind, "url": _shown_url(hook), "isActive": hook.is_active}
                for hook in registry.serving(session_id)
            ],
            "queue": queued.get(session_id, zero),
            "stats": stats_json(stats.get(session_id)),
        }
        for session_id in ids
    ]
    return ok({"success": True, "sessions": sessions})


def _shown_url(hook: Webhook) -> str:
    """A static webhook serves sessions the token may not own: hide its query (keys)."""
    if hook.kind != "static":
        return hook.url
    parts = urlsplit(hook.url)
    hidden = "?…" if parts.query else ""
    return urlunsplit(parts._replace(query="", fragment="")) + hidden


def stats_json(stats: SessionStats | None) -> dict[str, Any]:
    """A session's stats in the guide's shape; all zero when it never finished a delivery."""
    if stats is None:
        return {
            "totalSent": 0,
            "successful": 0,
            "failed": 0,
            "averageResponseTime": "0ms",
            "lastDelivery": None,
            "byEvent": {},
        }
    average = round(stats.success_ms_total / stats.successful) if stats.successful else 0
    last = stats.last_delivery_at
    return {
        "totalSent": stats.successful + stats.failed,
        "successful": stats.successful,
        "failed": stats.failed,
        "averageResponseTime": f"{average}ms",
        "lastDelivery": None if last is None else format_timestamp(last),
        "byEvent": stats.by_event,
    }
