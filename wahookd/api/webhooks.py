"""Routes for a session's webhook: configure, read, delete, and send a test."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..delivery.headers import delivery_headers
from ..events import format_timestamp
from ..jsontext import dumps_compact
from ..models import Webhook
from ..rules import check_events, check_headers, check_secret, check_url, keep_masked, mask
from ..store import new_uid
from ..webhooks import SessionWebhookFields
from .common import (
    ApiError,
    ok,
    principal,
    read_json_object,
    requires,
    session_param,
)
from .keys import CLOCK, REGISTRY, SENDER, SETTINGS, WEBHOOKS

_CONFIG_FIELDS = ("url", "events", "secret", "isActive", "headers")


def check_target(request: web.Request, url: object, field: str = "url") -> str:
    """A webhook URL under the config in force (rules.check_url)."""
    delivery = request.app[SETTINGS].config.delivery
    return check_url(
        url,
        require_https=delivery.require_https,
        allow_networks=delivery.allow_networks,
        field=field,
    )


def check_header_map(value: object) -> list[tuple[str, str]]:
    """Extra request headers (rules.check_headers); null: none."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ApiError(400, "headers: must be an object of header names to values")
    return check_headers(value)


def _config_json(hook: Webhook, *, masked: bool, times: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "url": hook.url,
        "events": list(hook.events),
        "secret": mask(hook.secret) if masked else hook.secret,
        "isActive": hook.is_active,
    }
    if hook.headers:
        data["headers"] = dict(hook.headers)
    if times:
        data["createdAt"] = format_timestamp(hook.created_at)
        data["updatedAt"] = format_timestamp(hook.updated_at)
    return data


def check_active(value: object) -> bool:
    """isActive: a boolean."""
    if not isinstance(value, bool):
        raise ApiError(400, "isActive: must be true or false")
    return value


def _check_fields(body: dict[str, Any]) -> None:
    unknown = [k for k in body if k not in _CONFIG_FIELDS]
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field; allowed: {', '.join(_CONFIG_FIELDS)}")


def _fields(
    url: str,
    events: list[str],
    secret: str | None,
    is_active: bool,
    headers: list[tuple[str, str]],
) -> SessionWebhookFields:
    return SessionWebhookFields(url, tuple(events), secret, is_active, tuple(headers))


@requires("admin")
async def put_config(request: web.Request) -> web.Response:
    """PUT /api/webhook/config/{sessionId}: create or replace the session's webhook."""
    session_id = session_param(request)
    body = await read_json_object(request)
    _check_fields(body)
    if "url" not in body:
        raise ApiError(400, "url: required")
    if "events" not in body:
        raise ApiError(400, "events: required")
    url = check_target(request, body["url"])
    events = check_events(body["events"])
    old = request.app[REGISTRY].session_webhook(session_id)
    secret = keep_masked(check_secret(body.get("secret")), old.secret if old else None)
    is_active = check_active(body.get("isActive", True))
    headers = check_header_map(body.get("headers"))
    hook = await request.app[WEBHOOKS].put_session(
        session_id,
        _fields(url, events, secret, is_active, headers),
        now=request.app[CLOCK].time(),
        by=principal(request).subject,
    )
    return ok(
        {
            "success": True,
            "message": "Webhook configured successfully",
            "config": _config_json(hook, masked=False, times=False),
        }
    )


@requires("admin")
async def patch_config(request: web.Request) -> web.Response:
    """PATCH /api/webhook/config/{sessionId}: change some fields; omitted ones keep their value.

    `"secret": null` removes the secret and `"headers": null` the extra headers.
    """
    session_id = session_param(request)
    body = await read_json_object(request)
    _check_fields(body)
    old = request.app[REGISTRY].session_webhook(session_id)
    if old is None:
        raise ApiError(404, f"no webhook configured for session '{session_id}'")
    url = check_target(request, body["url"]) if "url" in body else old.url
    events = check_events(body["events"]) if "events" in body else list(old.events)
    secret = old.secret
    if "secret" in body:
        secret = keep_masked(check_secret(body["secret"]), old.secret)
    is_active = check_active(body["isActive"]) if "isActive" in body else old.is_active
    headers = check_header_map(body["headers"]) if "headers" in body else list(old.headers)
    hook = await request.app[WEBHOOKS].put_session(
        session_id,
        _fields(url, events, secret, is_active, headers),
        now=request.app[CLOCK].time(),
        by=principal(request).subject,
        action="webhook.patch",
    )
    return ok({"success": True, "config": _config_json(hook, masked=True, times=True)})


@requires("viewer")
async def get_config(request: web.Request) -> web.Response:
    """GET /api/webhook/config/{sessionId}: the config with the secret masked."""
    session_id = session_param(request)
    hook = request.app[REGISTRY].session_webhook(session_id)
    if hook is None:
        raise ApiError(404, f"no webhook configured for session '{session_id}'")
    return ok({"success": True, "config": _config_json(hook, masked=True, times=True)})


@requires("admin")
async def delete_config(request: web.Request) -> web.Response:
    """DELETE /api/webhook/config/{sessionId}: remove the webhook, drop its queued deliveries."""
    session_id = session_param(request)
    hook = await request.app[WEBHOOKS].delete_session(session_id, by=principal(request).subject)
    if hook is None:
        raise ApiError(404, f"no webhook configured for session '{session_id}'")
    return ok({"success": True, "message": "Webhook deleted successfully"})


@requires("admin")
async def test_webhook(request: web.Request) -> web.Response:
    """POST /api/webhook/test: one signed POST now, no retry; reports what came back."""
    body = await read_json_object(request)
    unknown = [k for k in body if k not in ("url", "payload", "secret")]
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field; allowed: url, payload, secret")
    if "url" not in body:
        raise ApiError(400, "url: required")
    url = check_target(request, body["url"])
    secret = check_secret(body.get("secret"))
    now = request.app[CLOCK].time()
    payload = body.get("payload")
    if payload is None:
        payload = {
            "event": "test",
            "timestamp": format_timestamp(now),
            "message": "This is a test webhook",
        }
    if not isinstance(payload, dict):
        raise ApiError(400, "payload: must be a JSON object")
    raw = dumps_compact(payload).encode()
    msg_id = new_uid("test")
    event = payload.get("event")
    headers = delivery_headers(
        event_type=str(event) if _header_safe(event) else "test",
        msg_id=msg_id,
        attempt=1,
        timestamp=int(now),
        body=raw,
        secret=secret,
    )
    result = await request.app[SENDER].post(url, raw, headers, now)
    answer: dict[str, Any] = {
        "success": result.ok,
        "statusCode": result.status_code,
        "responseTime": f"{result.duration_ms}ms",
        "responseBody": result.response_body,
    }
    if result.error is not None:
        answer["error"] = result.error
    return ok(answer)


def _header_safe(value: object) -> bool:
    return (
        isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable()
    )
