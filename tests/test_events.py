"""Event validation and delivery bodies (SPEC §3 errors and session ids, §4 events)."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wahookd.events import (
    EVENT_TYPES,
    SESSION_ID_RE,
    Event,
    EventError,
    format_timestamp,
    is_session_id,
    parse_ingest_body,
    validate_event,
    webhook_matches,
)

# The guide's example payloads, copied from seed/webhooks-guide.md ("Event Types").
GUIDE_EXAMPLES: dict[str, str] = {
    "message.received": """{
  "event": "message.received",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "messageId": "msg_1234567890",
  "timestamp": "2024-01-01T12:00:00.000Z",
  "from": "1234567890",
  "to": "me",
  "type": "text",
  "text": "Hello! How can I help you?",
  "contact": {
    "name": "John Doe",
    "profilePicture": "https://example.com/avatar.jpg"
  }
}""",
    "message.sent": """{
  "event": "message.sent",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "messageId": "msg_0987654321",
  "timestamp": "2024-01-01T12:01:00.000Z",
  "from": "me",
  "to": "1234567890",
  "type": "text",
  "text": "Thanks for contacting us!"
}""",
    "message.delivered": """{
  "event": "message.delivered",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "messageId": "msg_0987654321",
  "timestamp": "2024-01-01T12:01:05.000Z",
  "to": "1234567890"
}""",
    "message.read": """{
  "event": "message.read",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "messageId": "msg_0987654321",
  "timestamp": "2024-01-01T12:01:30.000Z",
  "to": "1234567890"
}""",
    "session.connected": """{
  "event": "session.connected",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "timestamp": "2024-01-01T10:00:00.000Z",
  "phoneNumber": "+1234567890",
  "deviceInfo": {
    "model": "iPhone 15 Pro",
    "version": "2.2408.10"
  }
}""",
    "session.disconnected": """{
  "event": "session.disconnected",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "timestamp": "2024-01-01T15:00:00.000Z",
  "reason": "connection_lost"
}""",
    "session.qr_generated": """{
  "event": "session.qr_generated",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "timestamp": "2024-01-01T09:30:00.000Z",
  "qrCode": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA...",
  "expiresAt": "2024-01-01T09:31:30.000Z"
}""",
    "contact.updated": """{
  "event": "contact.updated",
  "sessionId": "5bc99cea8975b95fe7077c64a3312145",
  "timestamp": "2024-01-01T12:00:00.000Z",
  "phoneNumber": "1234567890",
  "contact": {
    "name": "John Doe",
    "profilePicture": "https://example.com/avatar.jpg",
    "status": "Available"
  }
}""",
}

NOW = 1704110400.0  # 2024-01-01T12:00:00Z
KNOWN = (
    "contact.updated, message.delivered, message.read, message.received, message.sent, "
    "session.connected, session.disconnected, session.qr_generated"
)
SESSION_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-"


def example(event_type: str) -> dict[str, Any]:
    """A fresh copy of the guide's example for event_type."""
    obj: dict[str, Any] = json.loads(GUIDE_EXAMPLES[event_type])
    return obj


def error_of(obj: object, **kwargs: Any) -> str:
    """The EventError message validate_event raises for obj."""
    with pytest.raises(EventError) as info:
        validate_event(obj, **kwargs)
    return str(info.value)


def compact(obj: object) -> bytes:
    """The compact JSON encoding the daemon promises for delivery bodies."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --- accepted events ---------------------------------------------------------------------


def test_guide_examples_cover_every_type() -> None:
    assert set(GUIDE_EXAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(GUIDE_EXAMPLES))
def test_guide_example_is_accepted_and_delivered_as_sent(event_type: str) -> None:
    obj = example(event_type)
    event = validate_event(obj, now=NOW)
    assert event == Event(
        event_id=None,
        session_id="5bc99cea8975b95fe7077c64a3312145",
        type=event_type,
        body=compact(obj),
    )
    # The example already has a timestamp, so nothing is added: the body is the input itself.
    assert json.loads(event.body) == obj


def test_body_is_compact_keeps_key_order_and_unescaped_unicode() -> None:
    obj = {
        "sessionId": "s1",
        "to": "me",
        "event": "message.read",
        "zeta": [1, 2.5, None, True],
        "messageId": "m1",
        "text": 'héllo 👋 "quoted" <b>',
        "timestamp": "2024-01-01T12:00:00Z",
    }
    body = validate_event(obj, now=NOW).body
    assert (
        body
        == (
            '{"sessionId":"s1","to":"me","event":"message.read","zeta":[1,2.5,null,true],'
            '"messageId":"m1","text":"héllo 👋 \\"quoted\\" <b>",'
            '"timestamp":"2024-01-01T12:00:00Z"}'
        ).encode()
    )


def test_timestamp_is_filled_in_last_in_exact_format() -> None:
    obj = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}
    event = validate_event(obj, now=NOW + 0.123)
    assert event.body == (
        b'{"event":"session.disconnected","sessionId":"s1","reason":"x",'
        b'"timestamp":"2024-01-01T12:00:00.123Z"}'
    )
    assert "timestamp" not in obj  # the caller's object is left alone


def test_timestamp_defaults_to_the_current_time() -> None:
    before = time.time()
    event = validate_event({"event": "session.disconnected", "sessionId": "s1", "reason": "x"})
    after = time.time()
    filled = datetime.fromisoformat(json.loads(event.body)["timestamp"]).timestamp()
    assert before - 0.001 <= filled <= after + 0.001


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (NOW, "2024-01-01T12:00:00.000Z"),
        (NOW + 0.5, "2024-01-01T12:00:00.500Z"),
        (NOW + 0.123, "2024-01-01T12:00:00.123Z"),
        (NOW + 59.9996, "2024-01-01T12:01:00.000Z"),  # rounds to the nearest millisecond
        (1709208000.0, "2024-02-29T12:00:00.000Z"),
        (253402300799.999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_timestamp(ts: float, expected: str) -> None:
    assert format_timestamp(ts) == expected


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-01T12:00:00.000Z",
        "2024-01-01T12:00:00Z",
        "2024-01-01T12:00:00+00:00",
        "2024-01-01T12:00:00.123456+00:00",
        "2024-01-01T14:00:00.5+02:00",
        "2024-01-01T07:00:00-05:00",
        "2024-01-01t12:00:00.000z",
        "2024-02-29T00:00:00.123456789Z",
    ],
)
def test_timestamp_forms_accepted_and_kept_as_sent(timestamp: str) -> None:
    obj = {
        "event": "session.disconnected",
        "sessionId": "s1",
        "reason": "x",
        "timestamp": timestamp,
    }
    assert json.loads(validate_event(obj, now=NOW).body)["timestamp"] == timestamp


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-01",
        "2024-01-01T12:00:00",  # no zone: ambiguous
        "2024-01-01 12:00:00Z",
        "2024-01-01T12:00Z",
        "2024-02-30T12:00:00Z",
        "2023-02-29T12:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T12:00:00.Z",
        "\uff12\uff10\uff12\uff14-01-01T12:00:00Z",  # fullwidth digits
        "yesterday",
        "",
        1704110400,
        None,
    ],
)
def test_bad_timestamp_rejected(timestamp: object) -> None:
    obj = {
        "event": "session.disconnected",
        "sessionId": "s1",
        "reason": "x",
        "timestamp": timestamp,
    }
    message = error_of(obj, now=NOW)
    assert message.startswith("timestamp: must be an ISO 8601 date-time")
    assert "2024-01-01T12:00:00.000Z" in message


def test_other_fields_are_kept_as_sent() -> None:
    obj = example("message.received")
    obj["custom"] = {"nested": [{"deep": "value"}], "n": -1.5e-7, "big": 12345678901234567890}
    assert json.loads(validate_event(obj, now=NOW).body)["custom"] == obj["custom"]


# --- rejected events ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t, fields in sorted(EVENT_TYPES.items()) for f in fields],
)
def test_missing_required_field_is_named(event_type: str, field: str) -> None:
    obj = example(event_type)
    del obj[field]
    assert error_of(obj, now=NOW) == f"{field}: required for {event_type}"


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t, fields in sorted(EVENT_TYPES.items()) for f in fields if f != "contact"],
)
@pytest.mark.parametrize("bad", ["", None, 42, ["x"], {"a": "b"}])
def test_required_string_field_must_be_non_empty_string(
    event_type: str, field: str, bad: object
) -> None:
    obj = example(event_type)
    obj[field] = bad
    assert error_of(obj, now=NOW).startswith(f"{field}: must be a non-empty string, got ")


@pytest.mark.parametrize("bad", ["John", None, [], 1])
def test_contact_must_be_an_object(bad: object) -> None:
    obj = example("contact.updated")
    obj["contact"] = bad
    assert error_of(obj, now=NOW).startswith("contact: must be a JSON object, got ")


def test_contact_in_message_received_is_not_required() -> None:
    obj = example("message.received")
    del obj["contact"]
    assert validate_event(obj, now=NOW).type == "message.received"


def test_string_field_length_limits() -> None:
    obj = example("message.delivered")
    obj["messageId"] = "m" * 4096
    validate_event(obj, now=NOW)
    obj["messageId"] = "m" * 4097
    assert error_of(obj, now=NOW) == "messageId: at most 4096 characters, got 4097"


def test_qr_code_may_be_larger() -> None:
    obj = example("session.qr_generated")
    obj["qrCode"] = "data:image/png;base64," + "A" * (65536 - 22)
    validate_event(obj, now=NOW)
    obj["qrCode"] += "A"
    assert error_of(obj, now=NOW) == "qrCode: at most 65536 characters, got 65537"


def test_unknown_type_lists_known_types() -> None:
    obj = example("message.read")
    obj["event"] = "foo"
    assert error_of(obj, now=NOW) == f"event: unknown event type 'foo'; known: {KNOWN}"


def test_long_unknown_type_is_not_echoed_whole() -> None:
    obj = example("message.read")
    obj["event"] = "x" * 10_000
    message = error_of(obj, now=NOW)
    assert len(message) < 400
    assert message.startswith("event: unknown event type 'xxxx")


@pytest.mark.parametrize("bad", [None, 1, ["message.read"]])
def test_event_must_be_a_string(bad: object) -> None:
    obj = example("message.read")
    obj["event"] = bad
    assert error_of(obj, now=NOW) == f"event: must be a string; known: {KNOWN}"


def test_missing_event_and_session_id() -> None:
    assert error_of({"sessionId": "s1"}) == f"event: required; known: {KNOWN}"
    assert error_of({"event": "message.read"}) == "sessionId: required"


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "é", "x" * 129, 12, None, "a\n"])
def test_bad_session_id(bad: object) -> None:
    obj = example("message.read")
    obj["sessionId"] = bad
    assert error_of(obj, now=NOW).startswith(
        "sessionId: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, got "
    )


@pytest.mark.parametrize("bad", [[], "x", None, 1, True])
def test_event_must_be_an_object(bad: object) -> None:
    assert error_of(bad).startswith("body: must be a JSON object, got ")


@pytest.mark.parametrize("event_id", ["a", "evt_123", "x" * 128, "!~{}\"'", "2024-01-01T00:00:00Z"])
def test_event_id_is_kept(event_id: str) -> None:
    obj = example("message.read")
    obj["id"] = event_id
    event = validate_event(obj, now=NOW)
    assert event.event_id == event_id
    assert json.loads(event.body)["id"] == event_id  # ids are part of the event as sent


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "é", "a\tb", "\x7f", 123, None, ["a"]])
def test_bad_event_id(bad: object) -> None:
    obj = example("message.read")
    obj["id"] = bad
    assert error_of(obj, now=NOW).startswith(
        "id: must be 1-128 printable ASCII characters without spaces, got "
    )


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("score",), math.nan, "must be a finite number"),
        (("contact", "rank"), math.inf, "must be a finite number"),
        (("contact", "name"), "\ud800", "string is not valid Unicode (lone surrogate)"),
        (("list",), [1, [2, -math.inf]], "must be a finite number"),
        (("contact", "odd key"), b"bytes", "not a JSON value (bytes)"),
    ],
)
def test_values_json_cannot_carry_are_rejected_with_their_path(
    path: tuple[str, ...], value: object, problem: str
) -> None:
    obj = example("message.received")
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    expected_path = {
        ("score",): "score",
        ("contact", "rank"): "contact.rank",
        ("contact", "name"): "contact.name",
        ("list",): "list[1][1]",
        ("contact", "odd key"): 'contact["odd key"]',
    }[path]
    assert error_of(obj, now=NOW) == f"{expected_path}: {problem}"


def test_lone_surrogate_in_key_is_rejected() -> None:
    obj = example("message.read")
    obj["\udc80"] = 1
    assert error_of(obj, now=NOW).endswith(": key is not valid Unicode (lone surrogate)")


def test_nesting_is_bounded() -> None:
    obj = example("message.read")
    deep: list[Any] = []
    obj["deep"] = deep
    for _ in range(100):
        deep.append([])
        deep = deep[0]
    assert error_of(obj, now=NOW).endswith(": nested deeper than 64 levels")


def test_paths_carry_the_batch_prefix() -> None:
    obj = example("message.read")
    obj["extra"] = {"x": math.nan}
    message = error_of(obj, prefix="events[7].", now=NOW)
    assert message == "events[7].extra.x: must be a finite number"
    assert error_of(3, prefix="events[7].") == "events[7]: must be a JSON object, got number"


# --- batches -----------------------------------------------------------------------------


def test_single_event_body() -> None:
    events = parse_ingest_body(example("message.read"), now=NOW)
    assert [e.type for e in events] == ["message.read"]


def test_batch_keeps_order_and_shares_the_filled_timestamp() -> None:
    no_ts = {"event": "session.disconnected", "sessionId": "s2", "reason": "x"}
    events = parse_ingest_body(
        {"events": [example("message.read"), no_ts, dict(no_ts, id="e3")]}, now=NOW
    )
    assert [(e.type, e.session_id, e.event_id) for e in events] == [
        ("message.read", "5bc99cea8975b95fe7077c64a3312145", None),
        ("session.disconnected", "s2", None),
        ("session.disconnected", "s2", "e3"),
    ]
    assert json.loads(events[1].body)["timestamp"] == "2024-01-01T12:00:00.000Z"
    assert json.loads(events[2].body)["timestamp"] == "2024-01-01T12:00:00.000Z"


def test_first_invalid_event_rejects_batch_with_its_index() -> None:
    bad = example("message.read")
    bad["event"] = "foo"
    later_bad = example("message.read")
    del later_bad["to"]
    body = {"events": [example("message.read"), example("message.sent"), bad, later_bad]}
    with pytest.raises(EventError) as info:
        parse_ingest_body(body, now=NOW)
    assert str(info.value) == f"events[2].event: unknown event type 'foo'; known: {KNOWN}"


def test_batch_missing_field_names_index_and_field() -> None:
    bad = example("contact.updated")
    del bad["phoneNumber"]
    with pytest.raises(
        EventError, match=r"^events\[1\]\.phoneNumber: required for contact\.updated$"
    ):
        parse_ingest_body({"events": [example("message.read"), bad]}, now=NOW)


def test_batch_size_limits() -> None:
    one = example("message.read")
    assert len(parse_ingest_body({"events": [one] * 3}, now=NOW, max_batch=3)) == 3
    with pytest.raises(EventError) as info:
        parse_ingest_body({"events": [one] * 4}, now=NOW, max_batch=3)
    assert str(info.value) == "events: must hold 1 to 3 events, got 4"
    with pytest.raises(EventError) as info:
        parse_ingest_body({"events": []}, now=NOW)
    assert str(info.value) == "events: must hold 1 to 1000 events, got 0"
    assert len(parse_ingest_body({"events": [one] * 1000}, now=NOW)) == 1000
    with pytest.raises(EventError, match=r"^events: must hold 1 to 1000 events, got 1001$"):
        parse_ingest_body({"events": [one] * 1001}, now=NOW)


@pytest.mark.parametrize("bad", [None, {"event": "message.read"}, "x", 1])
def test_events_must_be_a_list(bad: object) -> None:
    with pytest.raises(EventError) as info:
        parse_ingest_body({"events": bad}, now=NOW)
    assert str(info.value).startswith("events: must be a list of event objects, got ")


def test_object_with_events_and_other_keys_is_a_single_event() -> None:
    obj = example("message.read")
    obj["events"] = ["kept", "as", "sent"]
    [event] = parse_ingest_body(obj, now=NOW)
    assert json.loads(event.body)["events"] == ["kept", "as", "sent"]
    with pytest.raises(EventError, match=r"^event: required"):
        parse_ingest_body({"events": [obj], "extra": 1}, now=NOW)


@pytest.mark.parametrize("bad", [[], [example("message.read")], "x", None])
def test_ingest_body_must_be_an_object(bad: object) -> None:
    with pytest.raises(EventError, match=r"^body: must be a JSON object"):
        parse_ingest_body(bad, now=NOW)


# --- matching and session ids ------------------------------------------------------------


def test_webhook_matches() -> None:
    assert webhook_matches(["*"], "message.read")
    assert webhook_matches(["message.sent", "message.read"], "message.read")
    assert not webhook_matches(["message.sent"], "message.read")
    assert not webhook_matches([], "message.read")
    assert not webhook_matches(["message.*"], "message.read")


@given(st.from_regex(SESSION_ID_RE, fullmatch=True))
def test_valid_session_ids_always_pass(session_id: str) -> None:
    assert is_session_id(session_id)
    obj = {"event": "session.disconnected", "sessionId": session_id, "reason": "x"}
    assert validate_event(obj, now=NOW).session_id == session_id


@given(
    st.text(alphabet=SESSION_CHARS, max_size=60),
    st.characters().filter(lambda c: c not in SESSION_CHARS),
    st.text(alphabet=SESSION_CHARS, max_size=60),
)
def test_session_ids_with_a_foreign_char_always_fail(head: str, bad: str, tail: str) -> None:
    session_id = head + bad + tail
    assert not is_session_id(session_id)
    obj = {"event": "session.disconnected", "sessionId": session_id, "reason": "x"}
    assert error_of(obj, now=NOW).startswith("sessionId: must be 1-128 characters")


@given(st.integers(min_value=129, max_value=1000))
def test_session_ids_over_128_chars_fail(length: int) -> None:
    assert not is_session_id("a" * length)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # includes NaN and infinities, which JSON cannot carry
    | st.text()  # includes lone surrogates
    | st.sampled_from([*EVENT_TYPES, "5bc99cea", "2024-01-01T12:00:00.000Z"])
)
JSONISH = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["event", "sessionId", "id", "timestamp", "contact", "to"]) | st.text(),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)
# Objects that often get far into validation: a known type and valid session id, plus noise.
NEAR_VALID = st.builds(
    lambda event_type, extra: {
        "event": event_type,
        "sessionId": "s1",
        **{f: {} if f == "contact" else "v" for f in EVENT_TYPES[event_type]},
        **extra,
    },
    st.sampled_from(sorted(EVENT_TYPES)),
    st.dictionaries(st.text(), JSONISH, max_size=4),
)


def reject_constant(token: str) -> None:
    """parse_constant hook: the body must not contain NaN/Infinity."""
    raise AssertionError(f"non-standard JSON token {token}")


@given(JSONISH | NEAR_VALID | st.fixed_dictionaries({"events": st.lists(JSONISH | NEAR_VALID)}))
def test_arbitrary_input_raises_only_event_error(obj: object) -> None:
    try:
        events = parse_ingest_body(obj, now=NOW)
    except EventError:
        return
    for event in events:
        # Valid UTF-8 and strict JSON: no NaN or Infinity tokens.
        decoded = json.loads(event.body.decode("utf-8"), parse_constant=reject_constant)
        assert decoded["event"] == event.type
        assert decoded["sessionId"] == event.session_id
