"""Event types, session ids and ingest validation (SPEC §4)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeGuard

import msgspec

from .jsontext import JsonError, check_json, encode_compact, whole_name

# The eight event types and the fields each must carry (besides `event` and `sessionId`).
EVENT_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "message.received": ("messageId", "from", "to", "type"),
    "message.sent": ("messageId", "from", "to", "type"),
    "message.delivered": ("messageId", "to"),
    "message.read": ("messageId", "to"),
    "session.connected": ("phoneNumber",),
    "session.disconnected": ("reason",),
    "session.qr_generated": ("qrCode", "expiresAt"),
    "contact.updated": ("phoneNumber", "contact"),
}

SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9._:@-]{1,128}")

# Printable ASCII without space: safe to echo in headers, logs and URLs.
EVENT_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,128}")

# RFC 3339 profile of ISO 8601: a full date-time with seconds and a zone, so it is unambiguous.
TIMESTAMP_RE: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)

# Fields whose value is a JSON object rather than a string.
OBJECT_FIELDS: Final[frozenset[str]] = frozenset({"contact"})

MAX_FIELD_CHARS: Final = 4096
# A QR code travels as a data: URL of a PNG, far larger than an id or a phone number.
MAX_FIELD_CHARS_BY_NAME: Final[dict[str, int]] = {"qrCode": 64 * 1024}
# Bounds the walk below and keeps receivers' JSON parsers away from their recursion limits.
MAX_DEPTH: Final = 64
MAX_BATCH: Final = 1000

# Each type's required fields with their length limits; 0 for an object field.
_STRING_LIMITS: Final[dict[str, tuple[tuple[str, int], ...]]] = {
    event_type: tuple(
        (name, 0 if name in OBJECT_FIELDS else MAX_FIELD_CHARS_BY_NAME.get(name, MAX_FIELD_CHARS))
        for name in fields
    )
    for event_type, fields in EVENT_TYPES.items()
}
_KNOWN: Final = ", ".join(sorted(EVENT_TYPES))
# the one wording of the session-id rule: config, API, CLI and ingest messages quote it
SESSION_ID_RULE: Final = "1-128 characters of A-Z a-z 0-9 . _ : @ -"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class EventError(ValueError):
    """An ingested event is invalid; the message starts with the offending field's path."""


# a Struct rather than a frozen dataclass: one per ingested event, six times cheaper to
# make; gc=False: it holds only strings and bytes
class Event(msgspec.Struct, frozen=True, gc=False):
    """One validated event, ready to store and deliver."""

    event_id: str | None
    session_id: str
    type: str
    body: bytes


def is_session_id(value: object) -> TypeGuard[str]:
    """True when value is a valid session id (SESSION_ID_RULE)."""
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None


def format_timestamp(ts: float) -> str:
    """Format unix seconds as UTC ISO 8601 with milliseconds: 2024-01-01T12:00:00.000Z."""
    # Whole milliseconds first, so a float just below .123 cannot print as .122.
    ms = round(ts * 1000)
    dt = _EPOCH + timedelta(milliseconds=ms)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{ms % 1000:03d}Z"
    )


def is_timestamp(value: object) -> bool:
    """True when value is an ISO 8601 date-time string with seconds and a zone."""
    if not isinstance(value, str) or TIMESTAMP_RE.fullmatch(value) is None:
        return False
    try:
        # The regex checks the shape; fromisoformat rejects impossible dates like Feb 30.
        datetime.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


def webhook_matches(events: Sequence[str], event_type: str) -> bool:
    """True when a webhook subscribed to `events` wants `event_type` ("*" matches all)."""
    return "*" in events or event_type in events


def validate_event(
    obj: object, *, prefix: str = "", now: float | None = None, parsed: bool = False
) -> Event:
    """Validate one ingested event object and build its delivery body.

    `parsed`: obj comes from a request body that read_json_object accepted, so it is
    strict JSON within the depth limit already and check_json's walk is skipped.
    """
    if not isinstance(obj, dict):
        raise EventError(f"{whole_name(prefix)}: must be a JSON object, got {_json_type(obj)}")

    event_type = obj.get("event")
    if "event" not in obj:
        raise EventError(f"{prefix}event: required; known: {_KNOWN}")
    if not isinstance(event_type, str):
        raise EventError(f"{prefix}event: must be a string; known: {_KNOWN}")
    if event_type not in EVENT_TYPES:
        raise EventError(f"{prefix}event: unknown event type {_show(event_type)}; known: {_KNOWN}")

    session_id = obj.get("sessionId")
    if "sessionId" not in obj:
        raise EventError(f"{prefix}sessionId: required")
    if not is_session_id(session_id):
        raise EventError(f"{prefix}sessionId: must be {SESSION_ID_RULE}, got {_show(session_id)}")

    for name, limit in _STRING_LIMITS[event_type]:
        value = obj.get(name)
        # the common case inline; anything else (an object field too) gets the full check
        if type(value) is not str or not 0 < len(value) <= limit:
            _check_required(obj, name, event_type, prefix)

    if "timestamp" in obj and not is_timestamp(obj["timestamp"]):
        raise EventError(
            f"{prefix}timestamp: must be an ISO 8601 date-time with a zone, "
            f"e.g. 2024-01-01T12:00:00.000Z; got {_show(obj['timestamp'])}"
        )

    event_id: str | None = None
    if "id" in obj:
        sent_id = obj["id"]
        if not isinstance(sent_id, str) or EVENT_ID_RE.fullmatch(sent_id) is None:
            raise EventError(
                f"{prefix}id: must be 1-128 printable ASCII characters without spaces, "
                f"got {_show(sent_id)}"
            )
        event_id = sent_id

    if not parsed:
        try:
            check_json(obj, prefix)
        except JsonError as exc:
            raise EventError(str(exc)) from None

    if "timestamp" not in obj:
        # Copy so the caller's object is untouched; the new key lands last, after the sent ones.
        obj = {**obj, "timestamp": format_timestamp(time.time() if now is None else now)}
    try:
        body = encode_compact(obj)
    except ValueError as exc:  # an int past sys.get_int_max_str_digits(): no JSON text
        raise EventError(f"{whole_name(prefix)}: cannot be written as JSON: {exc}") from None
    return Event(event_id=event_id, session_id=session_id, type=event_type, body=body)


def parse_ingest_body(
    obj: object, *, now: float | None = None, max_batch: int = MAX_BATCH, parsed: bool = False
) -> list[Event]:
    """Validate a POST /api/events body: one event object or {"events": [...]}.

    `parsed` as for validate_event: the body is what read_json_object returned.
    """
    if not (isinstance(obj, dict) and obj.keys() == {"events"}):
        return [validate_event(obj, now=now, parsed=parsed)]
    items = obj["events"]
    if not isinstance(items, list):
        raise EventError(f"events: must be a list of event objects, got {_json_type(items)}")
    if not 1 <= len(items) <= max_batch:
        raise EventError(f"events: must hold 1 to {max_batch} events, got {len(items)}")
    # One clock reading for the whole batch, so events sent together share a filled-in timestamp.
    now = time.time() if now is None else now
    try:
        return [validate_event(item, now=now, parsed=parsed) for item in items]
    except EventError:
        pass
    # one is invalid: validate again with each event's path, which names it in the error
    # (worked out only now: the path of every valid event was a tenth of its check)
    for i, item in enumerate(items):
        validate_event(item, prefix=f"events[{i}].", now=now, parsed=parsed)
    raise AssertionError("an event failed validation once but not twice")  # pragma: no cover


def _check_required(obj: dict[object, object], name: str, event_type: str, prefix: str) -> None:
    """Raise EventError unless obj[name] is present and well-formed for its field."""
    if name not in obj:
        raise EventError(f"{prefix}{name}: required for {event_type}")
    value = obj[name]
    if name in OBJECT_FIELDS:
        if not isinstance(value, dict):
            raise EventError(f"{prefix}{name}: must be a JSON object, got {_json_type(value)}")
        return
    if not isinstance(value, str) or not value:
        raise EventError(f"{prefix}{name}: must be a non-empty string, got {_show(value)}")
    limit = MAX_FIELD_CHARS_BY_NAME.get(name, MAX_FIELD_CHARS)
    if len(value) > limit:
        raise EventError(f"{prefix}{name}: at most {limit} characters, got {len(value)}")


def _show(value: object) -> str:
    """Short repr of a client value for an error message (never echo megabytes back)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 64 else repr(value[:64]) + "..."
    return _json_type(value)


def _json_type(value: object) -> str:
    """JSON name of value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
