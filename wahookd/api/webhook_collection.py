"""The webhook collection of SPEC §8: `GET/POST /api/webhooks`, `GET/PATCH/DELETE
/api/webhooks/{id}`.

Every session's default webhook (the guide's /api/webhook/config) is listed with
`"default": true`, its extra ones beside it, the config file's static ones with
`"static": true` (read-only: 409 on change). Changes go through the webhook service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from ..events import format_timestamp
from ..models import Webhook
from ..rules import (
    WEBHOOK_ID_RE,
    check_description,
    check_events,
    check_filter,
    check_ordering,
    check_rate_limit,
    check_secret,
    keep_masked,
    mask,
)
from ..store import MAX_EXTRA_WEBHOOKS, WebhookFields, WebhookHealth, WebhookLimitReached
from ..webhooks import StaticWebhook, fields_of
from .common import ApiError, check_session, ok, principal, read_json_object, requires
from .keys import CLOCK, REGISTRY, STORE, WEBHOOKS
from .webhooks import check_active, check_header_map, check_target

# what a client may write; the rest of W is read-only
WRITABLE: Final = (
    "sessionId",
    "url",
    "events",
    "secret",
    "isActive",
    "headers",
    "description",
    "filter",
    "ordering",
    "rateLimit",
)
READ_ONLY: Final = ("id", "default", "static", "createdAt", "updatedAt", "health")
_BOOLEANS: Final = {"true": True, "false": False}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else format_timestamp(ts)


def health_json(hook: Webhook, health: WebhookHealth | None) -> dict[str, Any]:
    """`health` of W: disabled when inactive, failing since the first unanswered attempt."""
    failing_since = None if health is None else health.failing_since
    if not hook.is_active:
        state = "disabled"
    elif failing_since is not None:
        state = "failing"
    else:
        state = "healthy"
    return {
        "state": state,
        "failingSince": _iso(failing_since),
        "lastStatus": None if health is None else health.last_status,
        "lastAttemptAt": _iso(None if health is None else health.last_attempt_at),
    }


def webhook_json(hook: Webhook, health: WebhookHealth | None) -> dict[str, Any]:
    """W of SPEC §8, the secret masked.

    A static webhook may serve sessions the token does not own: its URL's query and its
    header values (keys, often) are hidden, as on /api/webhook/sessions.
    """
    static = hook.kind == "static"
    data: dict[str, Any] = {
        "id": hook.public_id,
        "sessionId": hook.session,
        "url": _hidden_query(hook.url) if static else hook.url,
        "events": list(hook.events),
        "secret": mask(hook.secret),
        "isActive": hook.is_active,
    }
    if hook.headers:
        data["headers"] = {k: "****" if static else v for k, v in hook.headers}
    if hook.description is not None:
        data["description"] = hook.description
    if hook.filter_chats is not None:
        data["filter"] = {"chats": list(hook.filter_chats)}
    data.update(
        {
            "ordering": hook.ordering,
            "rateLimit": hook.rate_limit,
            "default": hook.kind == "session",
            "static": static,
            "createdAt": format_timestamp(hook.created_at),
            "updatedAt": format_timestamp(hook.updated_at),
            "health": health_json(hook, health),
        }
    )
    return data


def _hidden_query(url: str) -> str:
    parts = urlsplit(url)
    hidden = "?…" if parts.query else ""
    return urlunsplit(parts._replace(query="", fragment="")) + hidden


def _bool_query(request: web.Request, name: str) -> bool | None:
    if name not in request.query:
        return None
    value = _BOOLEANS.get(request.query[name])
    if value is None:
        raise ApiError(400, f"{name}: must be true or false")
    return value


def _visible(request: web.Request, hook: Webhook) -> bool:
    """A scoped token sees its sessions' webhooks and the static ones serving them."""
    who = principal(request)
    if who.sessions is None:
        return True
    if hook.kind == "static" and hook.session == "*":
        return True
    return who.can_see(hook.session)


def _lookup(request: web.Request) -> Webhook:
    """The webhook of `{id}`: 400 for a malformed id, 404 unknown, 403 outside the token."""
    public_id = request.match_info["id"]
    if not WEBHOOK_ID_RE.fullmatch(public_id):
        raise ApiError(400, "id: must be wh_ followed by 16 hexadecimal digits")
    hook = request.app[REGISTRY].by_public_id(public_id)
    if hook is None:
        raise ApiError(404, f"no webhook '{public_id}'")
    if not _visible(request, hook):
        # as for a session in a path (SPEC §3); ids are random, so this tells nothing useful
        raise ApiError(403, f"the token does not cover session '{hook.session}'")
    return hook


async def _answer(request: web.Request, hooks: Sequence[Webhook]) -> list[dict[str, Any]]:
    health = await request.app[STORE].webhook_health([hook.id for hook in hooks])
    return [webhook_json(hook, health.get(hook.id)) for hook in hooks]


def _check_keys(body: dict[str, Any], allowed: Sequence[str]) -> None:
    for key in body:
        if key in READ_ONLY:
            raise ApiError(400, f"{key}: read-only")
        if key not in allowed:
            raise ApiError(400, f"{key}: unknown field; allowed: {', '.join(allowed)}")


def _fields(request: web.Request, body: dict[str, Any], base: WebhookFields) -> WebhookFields:
    """`base` with the fields the body gives, each checked; see SPEC §8 "Secrets"."""
    secret = base.secret
    if "secret" in body:
        # null removes it; the masked form of the current one keeps it
        secret = keep_masked(check_secret(body["secret"]), base.secret)
    filter_chats = base.filter_chats
    if "filter" in body:
        filter_chats = check_filter(body["filter"])
    return WebhookFields(
        url=check_target(request, body["url"]) if "url" in body else base.url,
        events=tuple(check_events(body["events"])) if "events" in body else base.events,
        secret=secret,
        is_active=check_active(body["isActive"]) if "isActive" in body else base.is_active,
        headers=tuple(check_header_map(body["headers"])) if "headers" in body else base.headers,
        description=(
            check_description(body["description"]) if "description" in body else base.description
        ),
        filter_chats=filter_chats,
        ordering=check_ordering(body["ordering"]) if "ordering" in body else base.ordering,
        rate_limit=check_rate_limit(body["rateLimit"]) if "rateLimit" in body else base.rate_limit,
    )


@requires("viewer")
async def list_webhooks(request: web.Request) -> web.Response:
    """GET /api/webhooks[?sessionId=&active=&failing=]: the webhooks the token may see.

    Without `sessionId`, every session's (an unscoped token: all of them, the admin's
    cross-session view); `failing=true` keeps the failing ones only.
    """
    registry = request.app[REGISTRY]
    active = _bool_query(request, "active")
    failing = _bool_query(request, "failing")
    if "sessionId" in request.query:
        session_id = check_session(request, request.query["sessionId"], "sessionId")
        hooks = registry.serving(session_id)
    else:
        hooks = [hook for hook in registry.all() if _visible(request, hook)]
    if active is not None:
        hooks = [hook for hook in hooks if hook.is_active == active]
    shown = await _answer(request, hooks)
    if failing is not None:
        shown = [w for w in shown if (w["health"]["state"] == "failing") == failing]
    return ok({"success": True, "webhooks": shown})


@requires("viewer")
async def get_webhook(request: web.Request) -> web.Response:
    """GET /api/webhooks/{id}: one webhook, its secret masked."""
    (shown,) = await _answer(request, [_lookup(request)])
    return ok({"success": True, "webhook": shown})


@requires("admin")
async def create_webhook(request: web.Request) -> web.Response:
    """POST /api/webhooks: a new extra webhook for a session (at most 16 besides the default)."""
    body = await read_json_object(request)
    _check_keys(body, WRITABLE)
    for required in ("sessionId", "url", "events"):
        if required not in body:
            raise ApiError(400, f"{required}: required")
    session_id = check_session(request, body["sessionId"], "sessionId")
    empty = WebhookFields(url="", events=(), secret=None, is_active=True)
    fields = _fields(request, body, empty)
    try:
        hook = await request.app[WEBHOOKS].create(
            session_id,
            fields,
            now=request.app[CLOCK].time(),
            by=principal(request).subject,
            max_extra=MAX_EXTRA_WEBHOOKS,
        )
    except WebhookLimitReached as exc:
        raise ApiError(409, str(exc)) from None
    (shown,) = await _answer(request, [hook])
    return ok({"success": True, "webhook": shown}, status=201)


@requires("admin")
async def patch_webhook(request: web.Request) -> web.Response:
    """PATCH /api/webhooks/{id}: change some fields; omitted ones keep their value."""
    hook = _lookup(request)
    body = await read_json_object(request)
    _check_keys(body, WRITABLE)
    if hook.kind == "static":
        raise ApiError(409, str(StaticWebhook(hook)))
    if "sessionId" in body and body["sessionId"] != hook.session:
        raise ApiError(400, "sessionId: a webhook cannot move to another session")
    fields = _fields(request, body, fields_of(hook))
    new = await request.app[WEBHOOKS].update(
        hook, fields, now=request.app[CLOCK].time(), by=principal(request).subject
    )
    if new is None:
        raise ApiError(404, f"no webhook '{hook.public_id}'")
    (shown,) = await _answer(request, [new])
    return ok({"success": True, "webhook": shown})


@requires("admin")
async def delete_webhook(request: web.Request) -> web.Response:
    """DELETE /api/webhooks/{id}: remove it and drop its queued deliveries."""
    hook = _lookup(request)
    if hook.kind == "static":
        raise ApiError(409, str(StaticWebhook(hook)))
    gone = await request.app[WEBHOOKS].delete(hook, by=principal(request).subject)
    if gone is None:
        raise ApiError(404, f"no webhook '{hook.public_id}'")
    return ok({"success": True, "message": "Webhook deleted successfully"})
