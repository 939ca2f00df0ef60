"""What every handler shares: the app state, the error envelope, JSON in and out."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..auth import AuthError, Principal, Role, Verifier
from ..clock import Clock
from ..config import Config
from ..delivery.scheduler import Scheduler
from ..delivery.sender import Sender
from ..events import EventError, check_json, is_session_id
from ..jsontext import MAX_JSON_DEPTH, decode_object
from ..logs import RateLimitedLog
from ..metrics import Metrics
from ..registry import Registry
from ..store import StorageUnavailable, Store

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


@dataclass
class AppState:
    """Everything the handlers reach: built at startup by app.py."""

    config: Config
    store: Store
    registry: Registry
    scheduler: Scheduler
    sender: Sender
    verifier: Verifier
    clock: Clock
    metrics: Metrics


STATE = web.AppKey("wahookd_state", AppState)
# one warning per refusal reason every 10 s (built by app.py with the app's clock)
REFUSALS = web.AppKey("wahookd_refusals", RateLimitedLog)
PRINCIPAL_KEY = web.RequestKey("wahookd_principal", Principal)


class ApiError(Exception):
    """An error answer in the envelope of SPEC §3."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def dumps(data: Any) -> str:
    """Compact JSON, unicode kept as is."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def ok(data: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(data, status=status, dumps=dumps)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The error envelope: {"success": false, "error": {"code", "message"}}."""
    code = ERROR_CODES.get(status, "internal" if status >= 500 else "validation_error")
    body = {"success": False, "error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


def state(request: web.Request) -> AppState:
    """The app state of the request's application."""
    return request.app[STATE]


def principal(request: web.Request) -> Principal:
    """Who made the request (set by the auth middleware)."""
    return request[PRINCIPAL_KEY]


def session_param(request: web.Request) -> str:
    """The {sessionId} of the route, validated and within the token's scope."""
    return check_session(request, request.match_info["sessionId"], "sessionId")


def check_session(request: web.Request, session_id: object, field: str) -> str:
    """Validate a session id and check the token may act on it."""
    if not is_session_id(session_id):
        raise ApiError(400, f"{field}: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    if not principal(request).can_see(session_id):
        raise ApiError(403, f"the token does not cover session '{session_id}'")
    return session_id


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object of strict JSON values, or a 4xx ApiError."""
    if request.content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    raw = await request.read()
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """raw as a JSON object of strict JSON values, or a 400 ApiError that names the problem."""
    data = decode_object(raw)
    if data is not None:
        return data
    # msgspec refused it or was unsure: the standard library decides, and explains
    return parse_json_object_stdlib(raw)


def parse_json_object_stdlib(raw: bytes) -> dict[str, Any]:
    """parse_json_object with the standard library alone: the reference, and every 400."""
    try:
        # JSON between systems is UTF-8 (RFC 8259 §8.1); a BOM is tolerated
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"body: invalid JSON: not UTF-8: {exc}") from None
    if too_deep(text):
        raise ApiError(400, f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    unusual = False

    def constant(name: str) -> float:  # NaN, Infinity, -Infinity: not JSON
        nonlocal unusual
        unusual = True
        return float(name)

    def number(digits: str) -> float:  # 1e400 overflows to infinity
        nonlocal unusual
        value = float(digits)
        unusual = unusual or math.isinf(value)
        return value

    try:
        data = json.loads(text, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: must be a JSON object")
    if unusual or _SURROGATE_ESCAPE.search(text):
        # rare, so only then the walk that names the field; handlers may then assume
        # every string encodes as UTF-8 and every number is finite
        try:
            check_json(data)
        except EventError as exc:
            raise ApiError(400, str(exc)) from None
    return data


# \ud800-\udfff: half of a surrogate pair, maybe alone (which UTF-8 cannot encode)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# A JSON string, escapes included. An unterminated one runs to the end of the text, so
# every match succeeds without backtracking: linear time whatever the body.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def too_deep(text: str) -> bool:
    """True when the JSON text nests arrays and objects deeper than MAX_JSON_DEPTH.

    Checked before parsing, so a hostile body cannot reach the parser's recursion limit.
    Brackets inside strings do not count.
    """
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


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
        limit = request.app[STATE].config.server.max_body
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
    verifier: Verifier = request.app[STATE].verifier
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
