"""The document's components: shared schemas, error answers, parameters, headers and the
security scheme. The delivery log's and the sessions overview's schemas join them."""

from __future__ import annotations

from typing import Any, Final

from ...delivery.sender import RESPONSE_KEEP_BYTES
from ...events import EVENT_TYPES, MAX_BATCH
from ...models import CLEARABLE_STATES
from ...rules import (
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    MAX_SECRET_CHARS,
    MAX_URL_CHARS,
    RESERVED_HEADERS_TEXT,
)
from ..common import ERROR_CODES
from . import cluster, deliveries, sessions, webhooks
from .events import event_schemas
from .schema import (
    HEADER_NAME_PATTERN,
    HEADER_VALUE_PATTERN,
    MASKED_SECRET_PATTERN,
    MILLISECONDS_PATTERN,
    RESERVED_HEADER_PATTERN,
    TIMESTAMP_PATTERN,
    URL_PATTERN,
    Schema,
    _answer,
    _count,
    _nullable,
    _object,
    ref,
)

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
    schemas.update(deliveries.schemas())
    schemas.update(sessions.schemas())
    schemas.update(webhooks.schemas())
    schemas.update(cluster.schemas())
    return dict(sorted(schemas.items()))


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
        **webhooks.PARAMETERS,
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
