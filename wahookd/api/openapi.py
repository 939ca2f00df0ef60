"""GET /api/openapi.json: the OpenAPI 3.1 document describing every route.

The document is Python data. `paths` is built by walking the route table (`routes.ROUTES`):
every route must have an entry in `OPERATIONS`, keyed by (method, path), and every entry
must name a route, else building the document fails loudly. Security (the bearer JWT) and
the 401/500 answers are added from the route itself: a route that needs a role is
authenticated, the probes are not. Limits and patterns are taken from the handlers'
modules, so they cannot drift apart.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final

from aiohttp import web

from .. import __version__
from ..config import (
    CONNECTION_HEADERS,
    RESERVED_HEADER_PREFIXES,
    RESERVED_HEADERS_TEXT,
    SET_BY_WAHOOKD,
)
from ..delivery.sender import RESPONSE_KEEP_BYTES
from ..events import EVENT_TYPES, MAX_BATCH
from ..models import CLEARABLE_STATES
from .common import ERROR_CODES, dumps, requires
from .openapi_events import Schema, event_schemas, ref
from .webhooks import (
    _TOKEN_RE,
    _VALUE_RE,
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    MAX_SECRET_CHARS,
    MAX_URL_CHARS,
)

Operation = dict[str, Any]

# ------------------------------------------------------------------ helpers


def _ci(text: str) -> str:
    """A case-insensitive regular expression for a literal made of letters and `-`."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in text)


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _error(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _count(description: str) -> Schema:
    return {"type": "integer", "minimum": 0, "description": description}


def _object(properties: dict[str, Schema], *optional: str, **extra: Any) -> Schema:
    """A closed object whose properties are all required except `optional`."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }


# ------------------------------------------------------------------ patterns

# A URL the handler may accept: https, a host, no credentials, no whitespace or control
# characters (the handler also checks the host and the port, refuses other invisible
# characters, and with [delivery] require_https = false accepts http too). No `format: uri`:
# the handler takes IRIs too (a Unicode host name is sent IDNA-encoded).
_CONTROLS: Final = r"\x00-\x20\x7f-\x9f"
URL_PATTERN: Final = rf"^[Hh][Tt][Tt][Pp][Ss]://[^/?#@{_CONTROLS}]+(?:[/?#][^{_CONTROLS}]*)?$"
HEADER_NAME_PATTERN: Final = f"^{_TOKEN_RE.pattern}$"
HEADER_VALUE_PATTERN: Final = f"^{_VALUE_RE.pattern}$"
RESERVED_HEADER_PATTERN: Final = (
    "^(?:"
    + "|".join(f"{_ci(name)}$" for name in sorted(SET_BY_WAHOOKD | CONNECTION_HEADERS))
    + "|"
    + "|".join(_ci(prefix) for prefix in RESERVED_HEADER_PREFIXES)
    + ")"
)
# format_timestamp(): UTC with milliseconds, e.g. 2024-01-01T12:00:00.000Z
TIMESTAMP_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
MILLISECONDS_PATTERN: Final = r"^[0-9]+ms$"
MASKED_SECRET_PATTERN: Final = r"^[\s\S]{0,4}\*{4}$"
METRICS_MEDIA_TYPE: Final = "text/plain; version=0.0.4"

# ------------------------------------------------------------------ components

_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("BadRequest", "Invalid input: the message names the field, e.g. `url: required`."),
    401: ("Unauthorized", "Missing, malformed, expired or otherwise invalid bearer token."),
    403: (
        "Forbidden",
        "The token's role is too low, or the session is outside the token's `sessions`.",
    ),
    404: ("NotFound", "Nothing is configured or recorded for this session."),
    409: ("Conflict", "The resource's state forbids it, e.g. retrying a delivery not failed."),
    413: ("PayloadTooLarge", "The body is larger than `[server] max_body` (default 1 MiB)."),
    415: ("UnsupportedMediaType", "The body's Content-Type is not `application/json`."),
    500: ("Internal", "An unexpected error (never a stack trace)."),
    503: ("Unavailable", "Storage is unavailable (busy, I/O error, full disk): retry later."),
}


def _schemas() -> dict[str, Schema]:
    known = list(EVENT_TYPES)
    schemas: dict[str, Schema] = {
        "ErrorCode": {"type": "string", "enum": sorted(set(ERROR_CODES.values()))},
        "Error": {
            **_object(
                {
                    "success": {"const": False},
                    "error": _object(
                        {
                            "code": ref("ErrorCode"),
                            "message": {"type": "string", "minLength": 1},
                        }
                    ),
                }
            ),
            "description": "The error envelope of every answer other than 2xx.",
        },
        "Timestamp": {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "UTC, milliseconds: `2024-01-01T12:00:00.000Z`.",
        },
        "Milliseconds": {
            "type": "string",
            "pattern": MILLISECONDS_PATTERN,
            "examples": ["145ms"],
        },
        "WebhookUrl": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_URL_CHARS,
            "pattern": URL_PATTERN,
            "description": (
                "Absolute https URL (http too when `[delivery] require_https = false`), "
                "without credentials, whitespace or control characters. Its host must be a "
                "valid host name (Unicode ones are sent IDNA-encoded) or an IP literal that "
                "passes the network policy: a URL matching this schema may still be a 400."
            ),
        },
        "WebhookEvents": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "enum": [*known, "*"]},
            "description": "Event types to deliver, or `*` for all; duplicates are dropped.",
        },
        "WebhookSecret": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SECRET_CHARS,
            "description": (
                "HMAC key for `X-Webhook-Signature`; absent or null: nothing is signed. A value "
                "equal to the masked form of the current secret keeps the current secret."
            ),
        },
        "WebhookHeaders": {
            "type": "object",
            "maxProperties": MAX_HEADERS,
            "propertyNames": {
                "pattern": HEADER_NAME_PATTERN,
                "not": {"pattern": RESERVED_HEADER_PATTERN},
            },
            "additionalProperties": {
                "type": "string",
                "maxLength": MAX_HEADER_VALUE_CHARS,
                "pattern": HEADER_VALUE_PATTERN,
            },
            "description": (
                f"At most {MAX_HEADERS} extra request headers sent with every attempt. "
                "Names are HTTP tokens, each at most once (case-insensitively), and none that "
                f"wahookd sets or controls itself: {RESERVED_HEADERS_TEXT}."
            ),
        },
        "WebhookConfigRequest": _object(
            {
                "url": ref("WebhookUrl"),
                "events": ref("WebhookEvents"),
                "secret": _nullable(ref("WebhookSecret")),
                "isActive": {"type": "boolean", "default": True},
                "headers": _nullable(ref("WebhookHeaders")),
            },
            "secret",
            "isActive",
            "headers",
            examples=[
                {
                    "url": "https://your-server.com/webhook",
                    "events": ["message.received", "message.sent", "session.connected"],
                    "secret": "your_webhook_secret_key",
                }
            ],
        ),
        "WebhookConfigPatch": _object(
            {
                "url": ref("WebhookUrl"),
                "events": ref("WebhookEvents"),
                "secret": _nullable(ref("WebhookSecret")),
                "isActive": {"type": "boolean"},
                "headers": _nullable(ref("WebhookHeaders")),
            },
            "url",
            "events",
            "secret",
            "isActive",
            "headers",
            description=(
                "The fields to change; omitted ones keep their value. `secret: null` removes "
                "the secret, `headers: null` the extra headers. A secret equal to the masked "
                "form of the current one keeps the current one."
            ),
            examples=[{"isActive": False}],
        ),
        "WebhookConfig": _object(
            {
                "url": {"type": "string"},
                "events": ref("WebhookEvents"),
                "secret": _nullable({"type": "string"}),
                "isActive": {"type": "boolean"},
                "headers": ref("WebhookHeaders"),
            },
            "headers",
            description="The configuration as stored; `headers` only when some are set.",
        ),
        "StoredWebhookConfig": _object(
            {
                "url": {"type": "string"},
                "events": ref("WebhookEvents"),
                "secret": _nullable({"type": "string", "pattern": MASKED_SECRET_PATTERN}),
                "isActive": {"type": "boolean"},
                "headers": ref("WebhookHeaders"),
                "createdAt": ref("Timestamp"),
                "updatedAt": ref("Timestamp"),
            },
            "headers",
            description=(
                "The configuration with the secret masked: its first characters (at most 4, "
                "at most half of it) then `****`."
            ),
        ),
        "PutWebhookConfigResponse": _object(
            {
                "success": {"const": True},
                "message": {"const": "Webhook configured successfully"},
                "config": ref("WebhookConfig"),
            }
        ),
        "GetWebhookConfigResponse": _object(
            {"success": {"const": True}, "config": ref("StoredWebhookConfig")}
        ),
        "DeleteWebhookConfigResponse": _object(
            {"success": {"const": True}, "message": {"const": "Webhook deleted successfully"}}
        ),
        "TestWebhookRequest": _object(
            {
                "url": ref("WebhookUrl"),
                "payload": _nullable(
                    {
                        "type": "object",
                        "description": (
                            'Sent as compact JSON; default `{"event": "test", '
                            '"timestamp": ..., "message": "This is a test webhook"}`.'
                        ),
                    }
                ),
                "secret": _nullable(ref("WebhookSecret")),
            },
            "payload",
            "secret",
            examples=[
                {
                    "url": "https://your-server.com/webhook",
                    "payload": {
                        "event": "test",
                        "timestamp": "2024-01-01T00:00:00.000Z",
                        "message": "This is a test webhook",
                    },
                }
            ],
        ),
        "TestWebhookResponse": _object(
            {
                "success": {"type": "boolean", "description": "true when the receiver said 2xx."},
                "statusCode": _nullable(
                    {
                        "type": "integer",
                        "minimum": 100,
                        "maximum": 999,
                        "description": "null when no HTTP answer came (network, TLS, timeout).",
                    }
                ),
                "responseTime": ref("Milliseconds"),
                "responseBody": {
                    "type": "string",
                    "maxLength": RESPONSE_KEEP_BYTES,
                    "description": f"The first {RESPONSE_KEEP_BYTES} bytes of the answer.",
                },
                "error": {"type": "string", "minLength": 1},
            },
            "error",
        ),
        "QueueCounts": _object(
            {
                "pending": _count("Due now (or parked behind an inactive webhook), not in flight."),
                "processing": _count("An attempt is in flight."),
                "failed": _count("No attempts left, or 410 Gone."),
                "retrying": _count("Failed at least once, waiting for the next attempt."),
            }
        ),
        "QueueResponse": _object({"success": {"const": True}, "queue": ref("QueueCounts")}),
        "RemovedCounts": _object(
            {state.value: _count(f"{state.value} deliveries removed") for state in CLEARABLE_STATES}
        ),
        "ClearQueueResponse": _object(
            {"success": {"const": True}, "removed": ref("RemovedCounts")}
        ),
        "Stats": _object(
            {
                "totalSent": _count("successful + failed"),
                "successful": _count("Delivered deliveries."),
                "failed": _count("Deliveries that ended failed."),
                "averageResponseTime": ref("Milliseconds"),
                "lastDelivery": _nullable(ref("Timestamp")),
                "byEvent": {
                    "type": "object",
                    "propertyNames": ref("EventType"),
                    "additionalProperties": {"type": "integer", "minimum": 1},
                    "description": "Successful deliveries per event type.",
                },
            }
        ),
        "StatsResponse": _object({"success": {"const": True}, "stats": ref("Stats")}),
        "IngestResponse": _object(
            {
                "success": {"const": True},
                "accepted": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH},
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                    "items": ref("EventId"),
                    "description": "The event ids in order (sent `id`s, else assigned ones).",
                },
                "queued": _count("Deliveries created (0 for a repeated `id`)."),
            }
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "Ready": _object({"status": {"const": "ready"}}),
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {
                "openapi": {"const": "3.1.0"},
                "info": {"type": "object"},
                "paths": {"type": "object"},
            },
        },
    }
    for status, code in ERROR_CODES.items():
        schemas[f"Error{status}"] = {
            "allOf": [ref("Error")],
            "properties": {"error": {"properties": {"code": {"const": code}}}},
        }
    schemas.update(event_schemas())
    schemas.update(_deliveries().schemas())
    schemas.update(_sessions().schemas())
    return dict(sorted(schemas.items()))


def _deliveries() -> Any:
    from . import openapi_deliveries  # here: it imports this module's helpers

    return openapi_deliveries


def _sessions() -> Any:
    from . import openapi_sessions  # here: it imports this module's helpers

    return openapi_sessions


def _all_operations() -> dict[tuple[str, str], Operation]:
    return {**OPERATIONS, **_deliveries().OPERATIONS, **_sessions().OPERATIONS}


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, (name, description) in _ERRORS.items():
        answer = _answer(description, ref(f"Error{status}"))
        if status == 401:
            answer["headers"] = {"WWW-Authenticate": {"$ref": "#/components/headers/Bearer"}}
        if status == 503:
            answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        out[name] = answer
    return out


_COMPONENTS_EXTRA: Final[dict[str, Any]] = {
    "parameters": {
        "SessionIdPath": {
            "name": "sessionId",
            "in": "path",
            "required": True,
            "description": "The WhatsApp session; anything else than the pattern is 400.",
            "schema": ref("SessionId"),
        },
        "SessionIdQuery": {
            "name": "sessionId",
            "in": "query",
            "required": False,
            "description": "Count only this session's deliveries.",
            "schema": ref("SessionId"),
        },
        "QueueStatus": {
            "name": "status",
            "in": "query",
            "required": False,
            "description": "Remove only deliveries in this state (default: all three).",
            "schema": {"type": "string", "enum": [s.value for s in CLEARABLE_STATES]},
        },
    },
    "headers": {
        "Bearer": {
            "required": True,
            "description": "Always `Bearer`.",
            "schema": {"const": "Bearer"},
        },
        "RetryAfter": {
            "required": True,
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
    },
    "securitySchemes": {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "A JWT verified with the configured key and algorithms; `exp` required. "
                "Claims: `role` (admin | ingest | viewer, default admin) and `sessions` "
                '(list of session ids or "*", default all).'
            ),
        }
    },
}

# ------------------------------------------------------------------ operations

_SESSION_PATH: Final = [{"$ref": "#/components/parameters/SessionIdPath"}]
_BODY_ERRORS: Final = {"413": _error("PayloadTooLarge"), "415": _error("UnsupportedMediaType")}

# One entry per route of routes.ROUTES; `security`, `x-wahookd-role`, 401 and 500 are added
# from the route when the document is built.
OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("PUT", "/api/webhook/config/{sessionId}"): {
        "operationId": "putWebhookConfig",
        "tags": ["webhook"],
        "summary": "Create or replace the session's webhook",
        "parameters": _SESSION_PATH,
        "requestBody": {"required": True, "content": _json(ref("WebhookConfigRequest"))},
        "responses": {
            "200": _answer("The stored configuration.", ref("PutWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/webhook/config/{sessionId}"): {
        "operationId": "getWebhookConfig",
        "tags": ["webhook"],
        "summary": "The session's webhook, secret masked",
        "parameters": _SESSION_PATH,
        "responses": {
            "200": _answer("The configuration.", ref("GetWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
        },
    },
    ("PATCH", "/api/webhook/config/{sessionId}"): {
        "operationId": "patchWebhookConfig",
        "tags": ["webhook"],
        "summary": "Change some fields of the session's webhook, e.g. enable or disable it",
        "parameters": _SESSION_PATH,
        "requestBody": {"required": True, "content": _json(ref("WebhookConfigPatch"))},
        "responses": {
            "200": _answer("The configuration, secret masked.", ref("GetWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("DELETE", "/api/webhook/config/{sessionId}"): {
        "operationId": "deleteWebhookConfig",
        "tags": ["webhook"],
        "summary": "Remove the session's webhook and drop its queued deliveries",
        "parameters": _SESSION_PATH,
        "responses": {
            "200": _answer("Removed.", ref("DeleteWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            "503": _error("Unavailable"),
        },
    },
    ("POST", "/api/webhook/test"): {
        "operationId": "testWebhook",
        "tags": ["webhook"],
        "summary": "Send one signed POST now (no retry) and report what came back",
        "description": (
            "A URL refused by validation is 400; a network failure (including a host name "
            "that resolves into refused space) is 200 with `success: false` and `error`."
        ),
        "requestBody": {"required": True, "content": _json(ref("TestWebhookRequest"))},
        "responses": {
            "200": _answer("The attempt's outcome.", ref("TestWebhookResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            **_BODY_ERRORS,
        },
    },
    ("GET", "/api/webhook/queue"): {
        "operationId": "getQueue",
        "tags": ["queue"],
        "summary": "Queued deliveries by state",
        "description": "Over every session the token covers, or the one of `sessionId`.",
        "parameters": [{"$ref": "#/components/parameters/SessionIdQuery"}],
        "responses": {
            "200": _answer("Counts by state.", ref("QueueResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "503": _error("Unavailable"),
        },
    },
    ("DELETE", "/api/webhook/queue/{sessionId}"): {
        "operationId": "clearQueue",
        "tags": ["queue"],
        "summary": "Remove the session's queued deliveries (never those in flight)",
        "parameters": [*_SESSION_PATH, {"$ref": "#/components/parameters/QueueStatus"}],
        "responses": {
            "200": _answer(
                "How many were removed, by state (0 for states not asked for).",
                ref("ClearQueueResponse"),
            ),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/webhook/stats/{sessionId}"): {
        "operationId": "getStats",
        "tags": ["queue"],
        "summary": "All-time delivery statistics of the session",
        "parameters": _SESSION_PATH,
        "responses": {
            "200": _answer("The statistics.", ref("StatsResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            "503": _error("Unavailable"),
        },
    },
    ("POST", "/api/events"): {
        "operationId": "postEvents",
        "tags": ["events"],
        "summary": "Ingest one event or a batch; 202 once committed to disk",
        "description": (
            "Each event fans out to the matching webhooks (one delivery each). A batch with "
            "any invalid event is rejected whole."
        ),
        "requestBody": {"required": True, "content": _json(ref("IngestRequest"))},
        "responses": {
            "202": _answer("Committed.", ref("IngestResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/openapi.json"): {
        "operationId": "getOpenApi",
        "tags": ["meta"],
        "summary": "This document",
        "responses": {"200": _answer("The OpenAPI 3.1 document.", ref("OpenApiDocument"))},
    },
    ("GET", "/healthz"): {
        "operationId": "healthz",
        "tags": ["probes"],
        "summary": "Liveness: 200 while the process runs",
        "responses": {"200": _answer("Alive.", ref("Health"))},
    },
    ("GET", "/readyz"): {
        "operationId": "readyz",
        "tags": ["probes"],
        "summary": "Readiness: the database answers and the scheduler runs",
        "responses": {
            "200": _answer("Ready.", ref("Ready")),
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/metrics"): {
        "operationId": "metrics",
        "tags": ["probes"],
        "summary": "Prometheus metrics (text exposition format 0.0.4)",
        "description": (
            "Always 200 while the process runs. When the database does not answer, the queue "
            "gauges are left out and `wahookd_storage_up` is 0. The README lists the metrics."
        ),
        "responses": {
            "200": {
                "description": "The metrics; no series carries a session id.",
                "content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}},
            }
        },
    },
}


class UndocumentedRoute(RuntimeError):
    """The route table and OPERATIONS disagree."""


def _operation(method: str, path: str, role: str | None) -> Operation:
    try:
        op = copy.deepcopy(_all_operations()[(method, path)])
    except KeyError:
        raise UndocumentedRoute(
            f"route {method} {path} has no entry in wahookd.api.openapi.OPERATIONS"
        ) from None
    responses: dict[str, Any] = op["responses"]
    if role is None:
        op["security"] = []
    else:
        op["security"] = [{"bearerAuth": []}]
        op["x-wahookd-role"] = role
        op["description"] = (
            op.get("description", "") + f"\n\nNeeds role `{role}` or higher."
        ).strip()
        responses["401"] = _error("Unauthorized")
    responses["500"] = _error("Internal")
    op["responses"] = dict(sorted(responses.items()))
    return op


@functools.cache
def _built() -> dict[str, Any]:
    from .routes import ROUTES  # here: routes.py imports this module

    paths: dict[str, dict[str, Operation]] = {}
    for route in ROUTES:
        item = paths.setdefault(route.path, {})
        item[route.method.lower()] = _operation(route.method, route.path, route.role)
    described = {(r.method, r.path) for r in ROUTES}
    extra = sorted(set(_all_operations()) - described)
    if extra:
        raise UndocumentedRoute(f"OPERATIONS describes routes that do not exist: {extra}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wahookd",
            "version": __version__,
            "summary": "Durable, signed webhook delivery for a WhatsApp HTTP API gateway",
            "description": (
                "Every `/api` route needs `Authorization: Bearer <JWT>`; the probes need none. "
                'Errors are always `{"success": false, "error": {"code", "message"}}`. '
                "A method a path does not offer is 405 `method_not_allowed` (with `Allow`); "
                "an unknown path is 404 `not_found`."
            ),
        },
        "tags": [
            {"name": "webhook", "description": "A session's webhook."},
            {"name": "queue", "description": "Queued deliveries and statistics."},
            {"name": "deliveries", "description": "The delivery log; retrying failed ones."},
            {"name": "events", "description": "Event ingest."},
            {"name": "meta", "description": "This API's description."},
            {"name": "probes", "description": "Liveness, readiness and metrics (no token)."},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            **_COMPONENTS_EXTRA,
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_built())


@functools.cache
def _document_bytes() -> bytes:
    return dumps(_built()).encode()


@requires("viewer")
async def get_openapi(request: web.Request) -> web.Response:
    """Serve the OpenAPI document."""
    return web.Response(body=_document_bytes(), content_type="application/json", charset="utf-8")
