"""The delivery log's part of the OpenAPI document: its schemas and operations.

`openapi/__init__.py` merges these into the document it builds from the route table.
"""

from __future__ import annotations

from typing import Final

from ...delivery.sender import RESPONSE_KEEP_BYTES
from ...events import EVENT_TYPES
from ...logquery import CURSOR_RE, DEFAULT_LIMIT, DELIVERY_ID_RE, MAX_LIMIT, MAX_SINCE_CHARS
from ...models import State
from ...units import DURATION_PATTERN
from .schema import (
    TIMESTAMP_PATTERN,
    Operation,
    Schema,
    _answer,
    _count,
    _error,
    _nullable,
    _object,
    ref,
)

_TIME: Final = {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}


def schemas() -> dict[str, Schema]:
    """The delivery log's component schemas."""
    return {
        "DeliveryId": {
            "type": "string",
            "pattern": f"^{DELIVERY_ID_RE.pattern}$",
            "description": "The delivery's id: its `X-Webhook-Id` on every attempt.",
        },
        "DeliveryStatus": {"type": "string", "enum": [s.value for s in State]},
        "Attempt": _object(
            {
                "attempt": {"type": "integer", "minimum": 1},
                "startedAt": _TIME,
                "responseTime": ref("Milliseconds"),
                "statusCode": _nullable({"type": "integer", "minimum": 100, "maximum": 999}),
                "outcome": {
                    "type": "string",
                    "enum": ["delivered", "retry", "failed", "gone"],
                    "description": "What the attempt decided for the delivery.",
                },
                "error": _nullable({"type": "string"}),
                "responseBody": {
                    "type": "string",
                    "maxLength": RESPONSE_KEEP_BYTES,
                    "description": f"The first {RESPONSE_KEEP_BYTES} bytes of the answer.",
                },
            }
        ),
        "Delivery": _object(
            {
                "id": ref("DeliveryId"),
                "eventId": ref("EventId"),
                "sessionId": ref("SessionId"),
                "webhookId": _nullable(
                    {
                        **ref("WebhookId"),
                        "description": "The webhook it goes to; null once that was deleted.",
                    }
                ),
                "event": ref("EventType"),
                "status": ref("DeliveryStatus"),
                "attemptCount": _count("Attempts made (X-Webhook-Attempt of the last one)."),
                "createdAt": _TIME,
                "updatedAt": _TIME,
                "nextAttemptAt": _nullable(_TIME),
                "finishedAt": _nullable(_TIME),
                "lastStatusCode": _nullable({"type": "integer", "minimum": 100, "maximum": 999}),
                "lastError": _nullable({"type": "string"}),
                "attempts": {"type": "array", "items": ref("Attempt")},
                "payload": {"type": "object", "description": "The event as delivered."},
                "sentHeaders": _nullable(ref("SentHeaders")),
            },
            "payload",
            "sentHeaders",
        ),
        "SentHeaders": _object(
            {
                "attempt": {"type": "integer", "minimum": 1},
                "headers": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": (
                        "Every header of that attempt's POST. A static webhook's own header "
                        "values read `****`."
                    ),
                },
                "signatures": {
                    "type": "array",
                    "items": {"enum": ["X-Webhook-Signature", "webhook-signature"]},
                    "description": (
                        "The headers that carry a signature. They are recomputed from the "
                        "stored body with the webhook's current secret: after a secret "
                        "change they differ from what was sent."
                    ),
                },
            },
            description=(
                "The headers of the latest attempt, rebuilt from the stored delivery (only "
                "on the one-delivery read; null before the first attempt or once the "
                "webhook is deleted)."
            ),
        ),
        "DeliveryListResponse": _object(
            {
                "success": {"const": True},
                "deliveries": {"type": "array", "maxItems": MAX_LIMIT, "items": ref("Delivery")},
                "nextCursor": _nullable(
                    {
                        "type": "string",
                        "pattern": f"^{CURSOR_RE.pattern}$",
                        "description": "Pass as `cursor` for the next (older) page.",
                    }
                ),
            }
        ),
        "DeliveryResponse": _object({"success": {"const": True}, "delivery": ref("Delivery")}),
        "RetryFailedResponse": _object(
            {
                "success": {"const": True},
                "retried": _count("Deliveries that left `failed`: queued again."),
                "parked": _count(
                    "Of those, how many wait behind an inactive webhook until it is enabled."
                ),
                "message": {"type": "string", "description": "Only when some are parked."},
            },
            "message",
        ),
    }


_SESSION: Final = {"$ref": "#/components/parameters/SessionIdPath"}
_DELIVERY: Final = {
    "name": "deliveryId",
    "in": "path",
    "required": True,
    "schema": ref("DeliveryId"),
}
_READ_ERRORS: Final = {
    "400": _error("BadRequest"),
    "403": _error("Forbidden"),
    "503": _error("Unavailable"),
}

OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("GET", "/api/webhook/deliveries/{sessionId}"): {
        "operationId": "listDeliveries",
        "tags": ["deliveries"],
        "summary": "The session's deliveries, newest first, each with its attempts",
        "parameters": [
            _SESSION,
            {"name": "status", "in": "query", "schema": ref("DeliveryStatus")},
            {"name": "event", "in": "query", "schema": {"enum": list(EVENT_TYPES)}},
            {
                "name": "limit",
                "in": "query",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_LIMIT,
                    "default": DEFAULT_LIMIT,
                },
            },
            {
                "name": "cursor",
                "in": "query",
                "schema": {"type": "string", "pattern": f"^{CURSOR_RE.pattern}$"},
            },
            {
                "name": "webhookId",
                "in": "query",
                "description": "Only the deliveries to this webhook (one serving the session).",
                "schema": ref("WebhookId"),
            },
        ],
        "responses": {
            "200": _answer("A page of deliveries.", ref("DeliveryListResponse")),
            "404": _error("NotFound"),
            **_READ_ERRORS,
        },
    },
    ("GET", "/api/webhook/deliveries/{sessionId}/{deliveryId}"): {
        "operationId": "getDelivery",
        "tags": ["deliveries"],
        "summary": "One delivery with its attempts and payload",
        "parameters": [_SESSION, _DELIVERY],
        "responses": {
            "200": _answer("The delivery.", ref("DeliveryResponse")),
            "404": _error("NotFound"),
            **_READ_ERRORS,
        },
    },
    ("POST", "/api/webhook/deliveries/{sessionId}/{deliveryId}/retry"): {
        "operationId": "retryDelivery",
        "tags": ["deliveries"],
        "summary": "Queue a failed delivery again now, for a new run of the retry ladder",
        "description": (
            "Only a `failed` delivery (409 otherwise, and when its webhook was deleted). It "
            "leaves the session's failed count in the stats until it ends again. Attempt "
            "numbers go on counting. Behind an inactive webhook it waits, `pending`."
        ),
        "parameters": [_SESSION, _DELIVERY],
        "responses": {
            "200": _answer("The delivery, now pending.", ref("DeliveryResponse")),
            "404": _error("NotFound"),
            "409": _error("Conflict"),
            **_READ_ERRORS,
        },
    },
    ("POST", "/api/webhook/queue/{sessionId}/retry-failed"): {
        "operationId": "retryFailed",
        "tags": ["deliveries"],
        "summary": "Queue every failed delivery of the session again",
        "parameters": [
            _SESSION,
            {
                "name": "since",
                "in": "query",
                "description": (
                    "Only those that failed since this ISO 8601 time (with a zone) or within "
                    "this duration back from now (`2h`)."
                ),
                "schema": {
                    "type": "string",
                    "maxLength": MAX_SINCE_CHARS,
                    "anyOf": [{"pattern": DURATION_PATTERN}, ref("EventTimestamp")],
                },
            },
            {
                "name": "webhookId",
                "in": "query",
                "description": "Only the failed deliveries to this webhook (serving the session).",
                "schema": ref("WebhookId"),
            },
        ],
        "responses": {
            "200": _answer("How many were queued.", ref("RetryFailedResponse")),
            "404": _error("NotFound"),
            **_READ_ERRORS,
        },
    },
}

__all__ = ["OPERATIONS", "schemas"]
