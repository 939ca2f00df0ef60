"""The delivery log: list and inspect a session's deliveries, retry failed ones."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any, Final

from aiohttp import web

from ..audit import audit
from ..delivery.headers import delivery_headers
from ..events import EVENT_TYPES, format_timestamp, is_timestamp
from ..logquery import CURSOR_RE, DEFAULT_LIMIT, DELIVERY_ID_RE, MAX_LIMIT, MAX_SINCE_CHARS
from ..models import State, Webhook
from ..registry import Registry
from ..rules import WEBHOOK_ID_RE
from ..store import DeliveryRow
from ..units import parse_duration
from .common import ApiError, ok, principal, requires, session_param
from .keys import CLOCK, REGISTRY, SCHEDULER, STORE

_LIST_QUERY: Final = ("status", "event", "limit", "cursor", "webhookId")
_PARKED: Final = ", parked behind an inactive webhook"


def delivery_json(row: DeliveryRow, registry: Registry) -> dict[str, Any]:
    """A delivery and its attempts as the API shows them."""
    hook = registry.get(row.webhook_id)

    def ts(value: float | None) -> str | None:
        return None if value is None else format_timestamp(value)

    return {
        "id": row.uid,
        "eventId": row.event_uid,
        "sessionId": row.session_id,
        "webhookId": None if hook is None else hook.public_id,
        "event": row.event_type,
        "status": row.state,
        "attemptCount": row.attempts,
        "createdAt": format_timestamp(row.created_at),
        "updatedAt": format_timestamp(row.updated_at),
        "nextAttemptAt": ts(row.next_attempt_at),
        "finishedAt": ts(row.finished_at),
        "lastStatusCode": row.last_status,
        "lastError": row.last_error,
        "attempts": [
            {
                "attempt": a.attempt,
                "startedAt": format_timestamp(a.started_at),
                "responseTime": f"{a.duration_ms}ms",
                "statusCode": a.status_code,
                "outcome": a.outcome,
                "error": a.error,
                "responseBody": a.response_body or "",
            }
            for a in row.attempt_log
        ],
    }


SIGNATURE_HEADERS: Final = ("X-Webhook-Signature", "webhook-signature")


def sent_headers(row: DeliveryRow, body: bytes, hook: Webhook | None) -> dict[str, Any] | None:
    """The headers of the delivery's latest attempt, rebuilt from what is stored.

    The signatures are recomputed with the webhook's secret as it is now (and its previous
    one while that still signed at the attempt's time), so they are marked as such. None
    before the first attempt and once the webhook is deleted. A static webhook's own header
    values are hidden, as in its W.
    """
    if hook is None or not row.attempt_log:
        return None
    last = row.attempt_log[-1]
    previous: tuple[str, ...] = ()
    if hook.previous_secret and last.started_at < (hook.previous_secret_until or 0.0):
        previous = (hook.previous_secret,)
    static = hook.kind == "static"
    headers = delivery_headers(
        event_type=row.event_type,
        msg_id=row.uid,
        attempt=last.attempt,
        timestamp=int(last.started_at),
        body=body,
        secret=hook.secret,
        previous_secrets=previous,
        custom=((k, "****" if static else v) for k, v in hook.headers),
    )
    headers["Content-Length"] = str(len(body))
    return {
        "attempt": last.attempt,
        "headers": headers,
        "signatures": [name for name in SIGNATURE_HEADERS if name in headers],
    }


def _only(request: web.Request, allowed: tuple[str, ...]) -> None:
    for name in request.query:
        if name not in allowed:
            raise ApiError(400, f"{name}: unknown query parameter; known: {', '.join(allowed)}")


def _delivery_id(request: web.Request) -> str:
    value = request.match_info["deliveryId"]
    if not DELIVERY_ID_RE.fullmatch(value):
        raise ApiError(400, "deliveryId: must look like dlv_ followed by hex digits")
    return value


def _webhook_query(request: web.Request, session_id: str) -> int | None:
    """`?webhookId=`: a webhook serving the session (its own or a static one), else 404."""
    public_id = request.query.get("webhookId")
    if public_id is None:
        return None
    if not WEBHOOK_ID_RE.fullmatch(public_id):
        raise ApiError(400, "webhookId: must be wh_ followed by 16 hexadecimal digits")
    hook = request.app[REGISTRY].by_public_id(public_id)
    if hook is None or hook.session not in (session_id, "*"):
        raise ApiError(404, f"no webhook '{public_id}' serving session '{session_id}'")
    return hook.id


@requires("viewer")
async def list_deliveries(request: web.Request) -> web.Response:
    """GET /api/webhook/deliveries/{sessionId}: newest first, with attempts, paged."""
    session_id = session_param(request)
    _only(request, _LIST_QUERY)
    q = request.query
    status: State | None = None
    if "status" in q:
        try:
            status = State(q["status"])
        except ValueError:
            known = ", ".join(s.value for s in State)
            raise ApiError(400, f"status: must be one of {known}") from None
    event = q.get("event")
    if event is not None and event not in EVENT_TYPES:
        raise ApiError(400, f"event: unknown event type {event!r}")
    limit = DEFAULT_LIMIT
    if "limit" in q:
        raw = q["limit"]
        # ASCII digits, few: isdigit() alone passes "²" and 5000 digits, which int() refuses
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and 1 <= int(raw) <= MAX_LIMIT):
            raise ApiError(400, f"limit: must be an integer from 1 to {MAX_LIMIT}")
        limit = int(raw)
    before: int | None = None
    if "cursor" in q:
        if not CURSOR_RE.fullmatch(q["cursor"]):
            raise ApiError(400, "cursor: must be a nextCursor value from a previous page")
        before = int(q["cursor"])
    webhook_id = _webhook_query(request, session_id)
    rows = await request.app[STORE].list_deliveries(
        session_id, status, event, before, limit + 1, webhook_id
    )
    page = rows[:limit]
    more = len(rows) > limit
    return ok(
        {
            "success": True,
            "deliveries": [delivery_json(r, request.app[REGISTRY]) for r in page],
            "nextCursor": str(page[-1].row_id) if more else None,
        }
    )


@requires("viewer")
async def get_delivery(request: web.Request) -> web.Response:
    """GET /api/webhook/deliveries/{sessionId}/{deliveryId}: one delivery and its payload."""
    session_id = session_param(request)
    _only(request, ())
    found = await request.app[STORE].get_delivery(session_id, _delivery_id(request))
    if found is None:
        raise ApiError(404, f"no delivery {request.match_info['deliveryId']} in this session")
    row, body = found
    registry = request.app[REGISTRY]
    data = delivery_json(row, registry)
    data["payload"] = json.loads(body)
    data["sentHeaders"] = sent_headers(row, body, registry.get(row.webhook_id))
    return ok({"success": True, "delivery": data})


@requires("admin")
async def retry_delivery(request: web.Request) -> web.Response:
    """POST .../deliveries/{sessionId}/{deliveryId}/retry: a failed delivery, due again now."""
    session_id = session_param(request)
    _only(request, ())
    uid = _delivery_id(request)
    store, scheduler = request.app[STORE], request.app[SCHEDULER]
    found = await store.get_delivery(session_id, uid)
    if found is None:
        raise ApiError(404, f"no delivery {uid} in this session")
    if found[0].state != State.FAILED:
        raise ApiError(409, f"{uid} is {found[0].state}: only failed deliveries can be retried")
    result = await store.retry_failed(session_id, request.app[CLOCK].time(), uid=uid)
    scheduler.push(result.due)
    again = await store.get_delivery(session_id, uid)
    if again is None:  # cleared meanwhile
        raise ApiError(404, f"no delivery {uid} in this session")
    if again[0].state == State.FAILED:
        raise ApiError(409, f"{uid} cannot be retried: its webhook was deleted")
    audit(
        "delivery.retry",
        by=principal(request).subject,
        session=session_id,
        webhook=again[0].webhook_id,
        details=f"{uid} queued again" + (_PARKED if result.parked else ""),
    )
    return ok({"success": True, "delivery": delivery_json(again[0], request.app[REGISTRY])})


@requires("admin")
async def retry_failed(request: web.Request) -> web.Response:
    """POST /api/webhook/queue/{sessionId}/retry-failed[?since=&webhookId=]: failed ones, again."""
    session_id = session_param(request)
    _only(request, ("since", "webhookId"))
    webhook_id = _webhook_query(request, session_id)
    now = request.app[CLOCK].time()
    since = _since(request.query["since"], now) if "since" in request.query else None
    result = await request.app[STORE].retry_failed(
        session_id, now, finished_since=since, webhook_id=webhook_id
    )
    request.app[SCHEDULER].push(result.due)
    answer: dict[str, Any] = {
        "success": True,
        "retried": result.retried,
        "parked": result.parked,
    }
    if result.parked:
        answer["message"] = (
            f"{result.parked} of them wait behind an inactive webhook until it is enabled"
        )
    if result.retried:
        audit(
            "queue.retry_failed",
            by=principal(request).subject,
            session=session_id,
            details=f"{result.retried} failed deliveries queued again"
            + (f"; {result.parked} of them{_PARKED}" if result.parked else ""),
        )
    return ok(answer)


def _since(value: str, now: float) -> float:
    """An ISO 8601 time, or a duration back from now ("2h": failed in the last 2 hours)."""
    # exactly the two forms the OpenAPI document states, and bounded like every input
    if len(value) <= MAX_SINCE_CHARS:
        with contextlib.suppress(ValueError):
            return now - parse_duration(value)
        if is_timestamp(value):
            return datetime.fromisoformat(value.upper()).timestamp()
    raise ApiError(
        400,
        "since: must be an ISO 8601 time with a zone (2024-01-01T12:00:00Z) or a duration (2h)",
    )
