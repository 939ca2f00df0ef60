"""What every handler shares: the error envelope, JSON in and out, roles, the caller."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..auth import AuthError, Principal, Role, Verifier
from ..jsontext import JsonError, dumps_compact, parse_json_object
from ..rules import RuleError, check_session_id
from ..store import StorageUnavailable
from .keys import REFUSALS, SETTINGS

log = logging.getLogger("wahookd.api")
auth_log = logging.getLogger("wahookd.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ERROR_CODES: dict[int, str] = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}


PRINCIPAL_KEY = web.RequestKey("wahookd_principal", Principal)


class ApiError(Exception):
    """An error answer in the envelope of SPEC §3."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def ok(data: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(data, status=status, dumps=dumps_compact)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The error envelope: {"success": false, "error": {"code", "message"}}."""
    code = ERROR_CODES.get(status, "internal" if status >= 500 else "validation_error")
    body = {"success": False, "error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers, dumps=dumps_compact)


def principal(request: web.Request) -> Principal:
    """Who made the request (set by the auth middleware)."""
    return request[PRINCIPAL_KEY]


def session_param(request: web.Request) -> str:
    """The {sessionId} of the route, validated and within the token's scope."""
    return check_session(request, request.match_info["sessionId"], "sessionId")


def check_session(request: web.Request, session_id: object, field: str) -> str:
    """Validate a session id and check the token may act on it."""
    session_id = check_session_id(session_id, field)
    check_scope(request, session_id)
    return session_id


def check_scope(request: web.Request, session_id: str) -> None:
    """403 unless the token may act on this (valid) session id."""
    if not principal(request).can_see(session_id):
        raise ApiError(403, f"the token does not cover session '{session_id}'")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object of strict JSON values, or a 4xx ApiError."""
    if request.content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    raw = await request.read()
    try:
        return parse_json_object(raw)
    except JsonError as exc:
        raise ApiError(400, str(exc)) from None


def requires(role: Role) -> Callable[[Handler], Handler]:
    """Mark a handler with the least role it needs."""

    def mark(handler: Handler) -> Handler:
        handler.wahookd_role = role  # type: ignore[attr-defined]
        return handler

    return mark


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as the JSON envelope; nothing leaks a stack trace."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except RuleError as exc:
        return error_response(400, str(exc))
    except AuthError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, headers)
    except StorageUnavailable:
        retry = str(StorageUnavailable.retry_after_s)
        return error_response(
            503, "storage is unavailable, try again later", {"Retry-After": retry}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, _http_message(exc, request), headers)
    except ConnectionError:
        if request.transport is not None and not request.transport.is_closing():
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal error")
        # the client hung up mid-request (reading its body, say): nobody hears an answer
        log.info(
            "client %s closed the connection during %s %s",
            request.remote,
            request.method,
            request.rel_url.raw_path,
        )
        return error_response(400, "the connection closed before the request was read")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal error")


def _http_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no route {request.method} {request.path}"
    if exc.status == 405:
        return f"method {request.method} not allowed on {request.path}"
    if exc.status == 413:
        limit = request.app[SETTINGS].config.server.max_body
        return f"request body larger than {limit} bytes"
    return exc.reason


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api route needs a bearer token whose role suffices."""
    needed: Role | None = getattr(request.match_info.handler, "wahookd_role", None)
    matched = request.match_info.http_exception is None
    if needed is None and matched and request.path.startswith("/api/"):
        needed = "admin"  # fail closed: an /api route someone forgot to mark is admin-only
    if needed is None:
        return await handler(request)
    verifier: Verifier = request.app[SETTINGS].verifier
    try:
        who = verifier.verify(request.headers.get("Authorization"))
        if not who.allows(needed):
            message = f"role '{who.role}' may not do this (needs '{needed}')"
            raise AuthError(403, message, "role_too_low")
    except AuthError as exc:
        _log_refusal(request, exc)
        raise
    request[PRINCIPAL_KEY] = who
    return await handler(request)


def _log_refusal(request: web.Request, exc: AuthError) -> None:
    # Only words of ours: the reason, the route's template and the peer's address. Never
    # exc.message, the header or the path as sent: they may quote the token or its claims.
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.rel_url.raw_path
    request.app[REFUSALS].warning(
        exc.reason,
        "refused a token (%d %s) on %s %s from %s",
        exc.status,
        exc.reason,
        request.method,
        route,
        request.remote,
        extra={"reason": exc.reason, "route": route, "client": request.remote},
    )
