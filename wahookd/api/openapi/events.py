"""OpenAPI schemas of the ingested events (SPEC §4), built from the rules in events.py.

Everything here is derived from `wahookd.events` (the type table, the regular expressions
and the limits), so the document cannot drift from what `POST /api/events` accepts.
"""

from __future__ import annotations

from typing import Any, Final

from ...events import (
    EVENT_ID_RE,
    EVENT_TYPES,
    MAX_BATCH,
    MAX_DEPTH,
    MAX_FIELD_CHARS,
    MAX_FIELD_CHARS_BY_NAME,
    OBJECT_FIELDS,
    SESSION_ID_RE,
    TIMESTAMP_RE,
)
from .schema import Schema, ref

# The patterns of SPEC §3/§4 as JSON Schema (ECMA-262) regular expressions, anchored.
SESSION_ID_PATTERN: Final = f"^{SESSION_ID_RE.pattern}$"
EVENT_ID_PATTERN: Final = f"^{EVENT_ID_RE.pattern}$"
EVENT_TIMESTAMP_PATTERN: Final = f"^(?:{TIMESTAMP_RE.pattern})$"

# What one guide example per event type looks like (webhooks-guide.md, unchanged).
_GUIDE_SESSION: Final = "5bc99cea8975b95fe7077c64a3312145"
_EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "message.received": {
        "messageId": "msg_1234567890",
        "timestamp": "2024-01-01T12:00:00.000Z",
        "from": "1234567890",
        "to": "me",
        "type": "text",
        "text": "Hello! How can I help you?",
        "contact": {"name": "John Doe", "profilePicture": "https://example.com/avatar.jpg"},
    },
    "message.sent": {
        "messageId": "msg_0987654321",
        "timestamp": "2024-01-01T12:01:00.000Z",
        "from": "me",
        "to": "1234567890",
        "type": "text",
        "text": "Thanks for contacting us!",
    },
    "message.delivered": {
        "messageId": "msg_0987654321",
        "timestamp": "2024-01-01T12:01:05.000Z",
        "to": "1234567890",
    },
    "message.read": {
        "messageId": "msg_0987654321",
        "timestamp": "2024-01-01T12:01:30.000Z",
        "to": "1234567890",
    },
    "session.connected": {
        "timestamp": "2024-01-01T10:00:00.000Z",
        "phoneNumber": "+1234567890",
        "deviceInfo": {"model": "iPhone 15 Pro", "version": "2.2408.10"},
    },
    "session.disconnected": {
        "timestamp": "2024-01-01T15:00:00.000Z",
        "reason": "connection_lost",
    },
    "session.qr_generated": {
        "timestamp": "2024-01-01T09:30:00.000Z",
        "qrCode": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA...",
        "expiresAt": "2024-01-01T09:31:30.000Z",
    },
    "contact.updated": {
        "timestamp": "2024-01-01T12:00:00.000Z",
        "phoneNumber": "1234567890",
        "contact": {
            "name": "John Doe",
            "profilePicture": "https://example.com/avatar.jpg",
            "status": "Available",
        },
    },
}


def event_schema_name(event_type: str) -> str:
    """Schema name of a type: `session.qr_generated` -> `SessionQrGeneratedEvent`."""
    words = event_type.replace(".", "_").split("_")
    return "".join(w.capitalize() for w in words) + "Event"


def _field_schema(name: str) -> Schema:
    if name in OBJECT_FIELDS:
        return {"type": "object", "description": f"`{name}`: a JSON object."}
    limit = MAX_FIELD_CHARS_BY_NAME.get(name, MAX_FIELD_CHARS)
    return {"type": "string", "minLength": 1, "maxLength": limit}


def _event_type_schema(event_type: str) -> Schema:
    fields = EVENT_TYPES[event_type]
    example = {"event": event_type, "sessionId": _GUIDE_SESSION, **_EXAMPLES[event_type]}
    return {
        "title": event_type,
        "description": (
            f"A `{event_type}` event. Besides `event` and `sessionId` it needs "
            + ", ".join(f"`{f}`" for f in fields)
            + "; any other field is kept and delivered as sent."
        ),
        "allOf": [ref("EventCommon")],
        "type": "object",
        "required": ["event", "sessionId", *fields],
        "properties": {"event": {"const": event_type}, **{f: _field_schema(f) for f in fields}},
        "examples": [example],
    }


def event_schemas() -> dict[str, Schema]:
    """The components.schemas entries that describe POST /api/events bodies."""
    types = list(EVENT_TYPES)
    schemas: dict[str, Schema] = {
        "SessionId": {
            "type": "string",
            "pattern": SESSION_ID_PATTERN,
            "minLength": 1,
            "maxLength": 128,
            "description": "1-128 characters of `A-Z a-z 0-9 . _ : @ -`.",
            "examples": [_GUIDE_SESSION],
        },
        "EventType": {
            "type": "string",
            "enum": types,
            "description": "The eight event types of the guide.",
        },
        "EventId": {
            "type": "string",
            "pattern": EVENT_ID_PATTERN,
            "minLength": 1,
            "maxLength": 128,
            "description": (
                "1-128 printable ASCII characters without spaces. A second event with the "
                "same `sessionId` and `id` within 24 hours is acknowledged again and not queued."
            ),
        },
        "EventTimestamp": {
            "type": "string",
            "format": "date-time",
            "pattern": EVENT_TIMESTAMP_PATTERN,
            "description": (
                "ISO 8601 date-time with seconds and a zone (a real calendar date), e.g. "
                "`2024-01-01T12:00:00.000Z`; filled in with the ingest time when absent."
            ),
        },
        "EventCommon": {
            "type": "object",
            "description": (
                "What every event carries. Other fields (any JSON, nested at most "
                f"{MAX_DEPTH} levels, valid Unicode, finite numbers) are kept as sent."
            ),
            "required": ["event", "sessionId"],
            "properties": {
                "event": ref("EventType"),
                "sessionId": ref("SessionId"),
                "timestamp": ref("EventTimestamp"),
                "id": ref("EventId"),
            },
        },
        "Event": {
            "description": "One event: its required fields depend on `event`.",
            "oneOf": [ref(event_schema_name(t)) for t in types],
            "discriminator": {
                "propertyName": "event",
                "mapping": {t: f"#/components/schemas/{event_schema_name(t)}" for t in types},
            },
        },
        "EventBatch": {
            "type": "object",
            "description": (
                f"1 to {MAX_BATCH} events; one invalid event rejects the whole batch "
                "(400, the message names its index, e.g. `events[2].event: ...`)."
            ),
            "required": ["events"],
            "additionalProperties": False,
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                    "items": ref("Event"),
                }
            },
        },
        "IngestRequest": {
            "description": (
                'One event object, or `{"events": [...]}`: a body whose only key is `events` '
                "is a batch."
            ),
            "oneOf": [ref("Event"), ref("EventBatch")],
        },
    }
    for event_type in types:
        schemas[event_schema_name(event_type)] = _event_type_schema(event_type)
    return schemas
