"""Routes for a session's webhook: configure, read, delete, and send a test."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ..audit import audit
from ..config import CONNECTION_HEADERS, reserved_header
from ..delivery.headers import delivery_headers
from ..delivery.netpolicy import RefusedTarget, check_url
from ..events import EVENT_TYPES, format_timestamp
from ..models import Webhook
from ..store import new_uid
from .common import (
    ApiError,
    ok,
    principal,
    read_json_object,
    requires,
    session_param,
    state,
)

MAX_SECRET_CHARS = 256
MAX_URL_CHARS = 2048
MAX_HEADERS = 16
MAX_HEADER_VALUE_CHARS = 1024
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_CONFIG_FIELDS = ("url", "events", "secret", "isActive", "headers")
_KNOWN = ", ".join(sorted(EVENT_TYPES))


def check_target(request: web.Request, url: object, field: str = "url") -> str:
    """Validate a webhook URL: its form, and a literal host against the network policy.

    Host names are checked when connecting (netpolicy.PolicyResolver), since DNS can change.
    """
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{field}: must be a non-empty string")
    if len(url) > MAX_URL_CHARS:
        raise ApiError(400, f"{field}: longer than {MAX_URL_CHARS} characters")
    delivery = state(request).config.delivery
    try:
        check_url(url, require_https=delivery.require_https, allow_networks=delivery.allow_networks)
    except RefusedTarget as exc:
        raise ApiError(400, f"{field}: {exc}") from None
    return url


def _check_events(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "events: must be a non-empty list of event types or '*'")
    for i, item in enumerate(value):
        if not isinstance(item, str) or (item != "*" and item not in EVENT_TYPES):
            raise ApiError(
                400, f"events[{i}]: unknown event type {item!r}; known: {_KNOWN}, or '*'"
            )
    return list(dict.fromkeys(value))


def check_secret(value: object, field: str = "secret") -> str | None:
    """A secret is optional, 1-256 characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SECRET_CHARS:
        raise ApiError(400, f"{field}: must be a string of 1-{MAX_SECRET_CHARS} characters")
    return value


def _check_headers(value: object) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ApiError(400, "headers: must be an object of header names to values")
    if len(value) > MAX_HEADERS:
        raise ApiError(400, f"headers: at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    out = []
    for name, val in value.items():
        lower = name.lower()
        if not _TOKEN_RE.fullmatch(name):
            raise ApiError(400, f"headers: {name!r} is not a valid header name")
        if lower in CONNECTION_HEADERS:
            raise ApiError(400, f"headers.{name}: a connection header, which wahookd controls")
        if reserved_header(name):
            raise ApiError(400, f"headers.{name}: wahookd sets this header itself")
        if lower in seen:
            raise ApiError(400, f"headers.{name}: given twice")
        if (
            not isinstance(val, str)
            or len(val) > MAX_HEADER_VALUE_CHARS
            or not _VALUE_RE.fullmatch(val)
        ):
            raise ApiError(
                400,
                f"headers.{name}: must be a string of at most {MAX_HEADER_VALUE_CHARS}"
                " printable characters",
            )
        seen.add(lower)
        out.append((name, val))
    return out


def mask(secret: str | None) -> str | None:
    """First 4 characters then ****; short secrets show less so most stays hidden."""
    if secret is None:
        return None
    return secret[: min(4, len(secret) // 2)] + "****"


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


def keep_masked(secret: str | None, current: str | None) -> str | None:
    """A secret written back in its masked form (as a read showed it) keeps the current one.

    So a config read, edited and written back never signs with `your****` (SPEC §8).
    """
    if secret is not None and current is not None and secret == mask(current):
        return current
    return secret


def _check_active(value: object) -> bool:
    if not isinstance(value, bool):
        raise ApiError(400, "isActive: must be true or false")
    return value


def _check_fields(body: dict[str, Any]) -> None:
    unknown = [k for k in body if k not in _CONFIG_FIELDS]
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field; allowed: {', '.join(_CONFIG_FIELDS)}")


def _changed(old: Webhook | None, new: Webhook) -> str:
    """What a write changed, by field name only (an audit line never shows values)."""
    if old is None:
        return "created"
    fields = [
        name
        for name, before, after in (
            ("url", old.url, new.url),
            ("events", old.events, new.events),
            ("secret", old.secret, new.secret),
            ("headers", old.headers, new.headers),
            ("isActive", old.is_active, new.is_active),
        )
        if before != after
    ]
    return "changed " + ", ".join(fields) if fields else "unchanged"


async def _commit_config(
    request: web.Request,
    session_id: str,
    old: Webhook | None,
    url: str,
    events: list[str],
    secret: str | None,
    is_active: bool,
    headers: list[tuple[str, str]],
    action: str,
) -> Webhook:
    """Store the session's webhook, mirror it, wake the scheduler, and audit the change."""
    st = state(request)
    hook, _ = await st.store.put_session_webhook(
        session_id, url, events, secret, is_active, headers, st.clock.time()
    )
    st.registry.put(hook)
    if old is None or old.is_active != hook.is_active:
        st.scheduler.webhook_changed(hook, hook.id)
    details = _changed(old, hook)
    if old is not None and old.is_active != hook.is_active:
        details += "; enabled" if hook.is_active else "; disabled by the operator"
    audit(
        action, by=principal(request).subject, session=session_id, webhook=hook.id, details=details
    )
    return hook


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
    events = _check_events(body["events"])
    old = state(request).registry.session_webhook(session_id)
    secret = keep_masked(check_secret(body.get("secret")), old.secret if old else None)
    is_active = _check_active(body.get("isActive", True))
    headers = _check_headers(body.get("headers"))
    hook = await _commit_config(
        request, session_id, old, url, events, secret, is_active, headers, "webhook.put"
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
    old = state(request).registry.session_webhook(session_id)
    if old is None:
        raise ApiError(404, f"no webhook configured for session '{session_id}'")
    url = check_target(request, body["url"]) if "url" in body else old.url
    events = _check_events(body["events"]) if "events" in body else list(old.events)
    secret = old.secret
    if "secret" in body:
        secret = keep_masked(check_secret(body["secret"]), old.secret)
    is_active = _check_active(body["isActive"]) if "isActive" in body else old.is_active
    headers = _check_headers(body["headers"]) if "headers" in body else list(old.headers)
    hook = await _commit_config(
        request, session_id, old, url, events, secret, is_active, headers, "webhook.patch"
    )
    return ok({"success": True, "config": _config_json(hook, masked=True, times=True)})


@requires("viewer")
async def get_config(request: web.Request) -> web.Response:
    """GET /api/webhook/config/{sessionId}: the config with the secret masked."""
    session_id = session_param(request)
    hook = state(request).registry.session_webhook(session_id)
    if hook is None:
        raise ApiError(404, f"no webhook configured for session '{session_id}'")
    return ok({"success": True, "config": _config_json(hook, masked=True, times=True)})


@requires("admin")
async def delete_config(request: web.Request) -> web.Response:
    """DELETE /api/webhook/config/{sessionId}: remove the webhook, drop its queued deliveries."""
    session_id = session_param(request)
    st = state(request)
    hook = await st.store.delete_session_webhook(session_id)
    if hook is None:
        raise ApiError(404, f"no webhook configured for session '{session_id}'")
    st.registry.remove(hook.id)
    st.scheduler.webhook_changed(None, hook.id)
    audit(
        "webhook.delete",
        by=principal(request).subject,
        session=session_id,
        webhook=hook.id,
        details="deleted with its queued deliveries",
    )
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
    st = state(request)
    now = st.clock.time()
    payload = body.get("payload")
    if payload is None:
        payload = {
            "event": "test",
            "timestamp": format_timestamp(now),
            "message": "This is a test webhook",
        }
    if not isinstance(payload, dict):
        raise ApiError(400, "payload: must be a JSON object")
    raw = json_bytes(payload)
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
    result = await st.sender.post(url, raw, headers, now)
    answer: dict[str, Any] = {
        "success": result.ok,
        "statusCode": result.status_code,
        "responseTime": f"{result.duration_ms}ms",
        "responseBody": result.response_body,
    }
    if result.error is not None:
        answer["error"] = result.error
    return ok(answer)


def json_bytes(data: object) -> bytes:
    """Compact UTF-8 JSON, as delivered."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _header_safe(value: object) -> bool:
    return (
        isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable()
    )
