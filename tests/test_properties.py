"""Hypothesis properties of the pure input rules, each against an independent model.

- durations and sizes (units.py): a hand-written model of the grammar decides what parses
  and to what; anything else raises ValueError("invalid ...") and nothing else;
- session ids: is_session_id and the document's SessionId pattern agree with a
  character-set model;
- events: validate_event raises only EventError on any Python value; valid generated
  events are accepted and delivered with their fields, order and values unchanged, and
  the document's schema accepts them too;
- the body's depth check counts the nesting of the parsed value, whatever the strings hold.

test_units.py and test_events.py hold the example-based tests and the first properties.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import string
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from wahookd.api import openapi
from wahookd.events import (
    EVENT_TYPES,
    MAX_FIELD_CHARS,
    MAX_FIELD_CHARS_BY_NAME,
    OBJECT_FIELDS,
    EventError,
    format_timestamp,
    is_session_id,
    is_timestamp,
    parse_ingest_body,
    validate_event,
)
from wahookd.jsontext import MAX_JSON_DEPTH, too_deep
from wahookd.units import (
    DURATION_UNITS,
    SIZE_UNITS,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

NOW = 1_704_110_400.0  # 2024-01-01T12:00:00Z
# a loaded CI machine must not fail these: no per-example deadline, slow generation is fine
LOADED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOC = openapi.document()
URI = "urn:wahookd:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(URI, DRAFT202012.create_resource(DOC))


def schema_errors(name: str, instance: Any) -> list[str]:
    """Messages of the document's schema `name` for instance (formats are annotations)."""
    ref = {"$ref": f"{URI}#/components/schemas/{name}"}
    return [e.message for e in Draft202012Validator(ref, registry=REGISTRY).iter_errors(instance)]


def ecma_search(pattern: str, text: str) -> bool:
    """Whether a document pattern matches text as JSON Schema reads it (ECMA-262).

    There `$` is the very end of the text; Python's `$` also matches before a final newline.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, text) is not None


# ----------------------------------------------------------------- durations and sizes

DIGITS = "0123456789"


def model_number(text: str) -> Fraction | None:
    """The value of `12`, `1.5` or `.5` (ASCII digits only), else None; no regex."""
    whole, dot, fraction = text.partition(".")
    if not (whole or fraction) or (dot and not fraction) or (not dot and not whole):
        return None
    if any(c not in DIGITS for c in whole + fraction):
        return None
    return Fraction(int(whole or "0")) + (
        Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0
    )


def model_split(text: str, units: list[str]) -> tuple[str, str]:
    """(number, unit): the longest unit that ends the text, or no unit."""
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return text[: -len(unit)], unit
    return text, ""


def model_duration(text: str) -> float | None:
    number, unit = model_split(text, list(DURATION_UNITS))
    value = model_number(number)
    if value is None:
        return None
    exact = value * DURATION_UNITS[unit or "s"]
    try:
        return float(exact)
    except OverflowError:
        return None


def model_size(text: str) -> int | None:
    number, unit = model_split(text, list(SIZE_UNITS))
    value = model_number(number)
    if value is None:
        return None
    exact = value * SIZE_UNITS[unit or "B"]
    return exact.numerator if exact.denominator == 1 else None


# numbers as people type them, with now and then a character that does not belong
NUMBER_TEXT = st.one_of(
    st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,6})?", fullmatch=True),
    st.from_regex(r"\.[0-9]{1,6}", fullmatch=True),
    st.text(alphabet="0123456789.-+e ٣８", max_size=8),
)
DURATION_TEXT = st.builds(
    str.__add__, NUMBER_TEXT, st.sampled_from(["", *DURATION_UNITS, "S", "sec", " s", "us"])
)
SIZE_TEXT = st.builds(
    str.__add__, NUMBER_TEXT, st.sampled_from(["", *SIZE_UNITS, "kib", "KIB", "b", "TiB", " B"])
)


@LOADED
@given(DURATION_TEXT)
def test_durations_parse_exactly_as_the_model_says(text: str) -> None:
    expected = model_duration(text)
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert str(exc).startswith("invalid duration "), exc
        assert expected is None, (text, expected)
    else:
        assert seconds == expected, text


@LOADED
@given(SIZE_TEXT)
def test_sizes_parse_exactly_as_the_model_says(text: str) -> None:
    expected = model_size(text)
    try:
        size = parse_size(text)
    except ValueError as exc:
        assert str(exc).startswith("invalid size "), exc
        assert expected is None, (text, expected)
    else:
        assert size == expected and type(size) is int, text


@LOADED
@given(st.integers(min_value=0, max_value=10**15), st.sampled_from(sorted(SIZE_UNITS)))
def test_a_formatted_size_is_in_its_largest_exact_unit(count: int, unit: str) -> None:
    size = count * SIZE_UNITS[unit]
    text = format_size(size)
    assert parse_size(text) == size
    number, used = model_split(text, list(SIZE_UNITS))
    assert used in ("B", "KiB", "MiB", "GiB") and number.isdigit()
    if used != "GiB" and size:
        assert int(number) % 1024 != 0  # else a larger unit would have been exact


@LOADED
@given(
    st.integers(min_value=0, max_value=10**7),
    st.sampled_from(["ms", "s", "m", "h", "d"]),
)
def test_a_formatted_duration_reads_back(count: int, unit: str) -> None:
    seconds = float(count * DURATION_UNITS[unit])
    assert parse_duration(format_duration(seconds)) == seconds


# 10**n for n past Python's int-to-text digit limit (4300); built, as it has no repr
HUGE_INTS = st.builds(
    lambda n, sign: sign * 10**n, st.integers(4300, 5000), st.sampled_from([1, -1])
)
HOSTILE_VALUES = st.one_of(
    st.integers(),
    HUGE_INTS,
    st.floats(),
    st.text(),
    st.text(alphabet=DIGITS + ".", min_size=300, max_size=5000),  # many digits
    st.builds(lambda n: "9" * n + "d", st.integers(min_value=300, max_value=5000)),
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.tuples(st.text(max_size=2)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(LOADED, max_examples=300)
@given(HOSTILE_VALUES)
def test_parsers_raise_nothing_but_their_value_error(value: object) -> None:
    for parse, kind in ((parse_duration, "duration"), (parse_size, "size")):
        try:
            result = parse(value)
        except ValueError as exc:
            assert str(exc).startswith(f"invalid {kind} "), exc
        else:
            assert isinstance(result, int | float) and result >= 0
            assert not isinstance(result, float) or math.isfinite(result)


# ----------------------------------------------------------------- session ids

SESSION_CHARS = frozenset(string.ascii_letters + string.digits + "._:@-")
# the allowed characters and their look-alikes: other scripts' digits and letters, the
# Kelvin sign (K), dotless i, full-width forms, spaces, line ends and other punctuation
NEAR_SESSION = st.text(
    alphabet=st.sampled_from(sorted(SESSION_CHARS))
    | st.sampled_from(list("٣８Ｋıé /\n\t#%+~,\x00")),
    max_size=140,
)


def model_session_id(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 128 and set(value) <= SESSION_CHARS


@LOADED
@given(NEAR_SESSION | st.text(alphabet=sorted(SESSION_CHARS), min_size=120, max_size=135))
def test_session_ids_follow_the_model_and_the_document(text: str) -> None:
    assert is_session_id(text) == model_session_id(text), repr(text)
    assert ecma_search(DOC["components"]["schemas"]["SessionId"]["pattern"], text) == (
        model_session_id(text)
    ), repr(text)
    event = {"event": "session.disconnected", "sessionId": text, "reason": "x"}
    try:
        accepted = validate_event(event, now=NOW).session_id == text
    except EventError as exc:
        assert str(exc).startswith("sessionId: ")
        accepted = False
    assert accepted == model_session_id(text)


@LOADED
@given(HOSTILE_VALUES)
def test_a_session_id_is_only_ever_a_string(value: object) -> None:
    assert is_session_id(value) == model_session_id(value)


# ----------------------------------------------------------------- events

JSON_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)  # no lone surrogates
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(JSON_TEXT, children, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """ISO 8601 date-times with seconds and a zone, as a sender may write them."""
    moment = draw(
        st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.none()
        )
    )
    text = moment.strftime("%Y-%m-%d") + draw(st.sampled_from("Tt")) + moment.strftime("%H:%M:%S")
    digits = draw(st.integers(min_value=0, max_value=9))
    if digits:
        text += "." + "".join(
            draw(st.lists(st.sampled_from(DIGITS), min_size=digits, max_size=digits))
        )
    zone = draw(st.sampled_from(["Z", "z", "offset"]))
    if zone == "offset":
        minutes = draw(st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))
        sign = "-" if minutes < 0 else "+"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return text + zone


def field_value(name: str) -> st.SearchStrategy[Any]:
    if name in OBJECT_FIELDS:
        return st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=3)
    limit = MAX_FIELD_CHARS_BY_NAME.get(name, MAX_FIELD_CHARS)
    return st.text(st.characters(codec="utf-8"), min_size=1, max_size=40) | st.just("q" * limit)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event that SPEC §4 accepts: its type's fields, maybe an id and a time, extras."""
    event_type = draw(st.sampled_from(sorted(EVENT_TYPES)))
    parts: list[tuple[str, Any]] = [
        ("event", event_type),
        ("sessionId", draw(st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True))),
    ]
    parts += [(name, draw(field_value(name))) for name in EVENT_TYPES[event_type]]
    if draw(st.booleans()):
        parts.append(("id", draw(st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True))))
    if draw(st.booleans()):
        parts.append(("timestamp", draw(timestamps())))
    taken = {"id", "timestamp"} | {name for name, _ in parts}  # extras are other keys
    extra = draw(
        st.dictionaries(JSON_TEXT.filter(lambda k: k not in taken), JSON_VALUES, max_size=4)
    )
    parts += list(extra.items())
    order = draw(st.permutations(range(len(parts))))
    return dict(parts[i] for i in order)


@LOADED
@given(valid_events())
def test_a_valid_event_is_accepted_and_keeps_its_fields(obj: dict[str, Any]) -> None:
    sent = json.loads(json.dumps(obj))  # what the API hands over after parsing
    event = validate_event(sent, now=NOW)
    assert sent == obj  # the caller's object is not touched
    assert event.type == obj["event"] and event.session_id == obj["sessionId"]
    assert event.event_id == obj.get("id")
    delivered = json.loads(event.body.decode("utf-8"))
    expected = dict(obj)
    if "timestamp" not in obj:
        expected["timestamp"] = format_timestamp(NOW)  # filled in, and last
    assert list(delivered) == list(expected)  # same keys in the same order
    assert delivered == expected
    assert is_timestamp(delivered["timestamp"])
    assert not schema_errors("IngestRequest", obj), obj


@LOADED
@given(st.lists(valid_events(), min_size=1, max_size=5))
def test_a_valid_batch_keeps_every_event(objs: list[dict[str, Any]]) -> None:
    events = parse_ingest_body({"events": objs}, now=NOW)
    assert [e.type for e in events] == [o["event"] for o in objs]
    for obj, event in zip(objs, events, strict=True):
        delivered = json.loads(event.body)
        assert {k: v for k, v in delivered.items() if k in obj} == obj
    assert not schema_errors("IngestRequest", {"events": objs})


class Odd:
    """No JSON value."""


PYTHON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS  # no JSON text
    | st.floats()  # NaN and infinities
    | st.text()  # lone surrogates
    | st.binary(max_size=4)
    | st.builds(Odd)
    | st.sampled_from([*EVENT_TYPES, "s1", "2024-01-01T12:00:00Z", "2024-02-30T12:00:00Z"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children)
        | st.frozensets(st.integers(), max_size=2)
        | st.dictionaries(
            st.sampled_from(["event", "sessionId", "id", "timestamp", "to", "messageId", "contact"])
            | st.text(max_size=4)
            | st.integers()
            | st.none(),
            children,
            max_size=5,
        )
    ),
    max_leaves=16,
)
# near-valid: a valid event with one field replaced or added, its value anything
MUTATED = st.builds(
    lambda obj, key, value: {**obj, key: value},
    valid_events(),
    st.sampled_from(["event", "sessionId", "id", "timestamp", "messageId", "to", "contact"])
    | st.text(max_size=3),
    PYTHON_VALUES,
)


# a valid event with one number JSON cannot carry (NaN, infinity, a huge integer)
ODD_NUMBER = st.builds(
    lambda obj, number: {**obj, "n": number},
    valid_events(),
    HUGE_INTS | st.floats(allow_nan=True, allow_infinity=True),
)


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


@settings(LOADED, max_examples=300)
@given(
    PYTHON_VALUES | MUTATED | ODD_NUMBER | st.builds(lambda n: {"x": deep(n)}, st.integers(60, 70))
)
def test_validate_event_raises_only_event_error(obj: object) -> None:
    for candidate in (obj, {**obj, "x": deep(70)} if isinstance(obj, dict) else obj):
        try:
            event = validate_event(candidate, now=NOW)
        except EventError as exc:
            assert str(exc), "an EventError names the field"
            continue
        # what is accepted is strict JSON in UTF-8, with the fields it was judged by
        decoded = json.loads(event.body.decode("utf-8"), parse_constant=_no_constant)
        assert decoded["event"] == event.type and decoded["sessionId"] == event.session_id


@settings(LOADED, max_examples=200)
@given(st.lists(PYTHON_VALUES | MUTATED | ODD_NUMBER, max_size=4) | PYTHON_VALUES)
def test_parse_ingest_body_raises_only_event_error(items: object) -> None:
    for body in (items, {"events": items}):
        with contextlib.suppress(EventError):
            parse_ingest_body(body, now=NOW)


def _no_constant(token: str) -> None:
    raise AssertionError(f"non-standard JSON token {token}")


@LOADED
@given(timestamps())
def test_generated_timestamps_are_accepted_and_keep_their_instant(text: str) -> None:
    assert is_timestamp(text)
    assert not schema_errors("EventTimestamp", text)
    parsed = datetime.fromisoformat(text.upper())
    assert parsed.tzinfo is not None and parsed.utcoffset() is not None


@LOADED
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_format_timestamp_is_what_the_document_promises(moment: datetime) -> None:
    seconds = (moment.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=1)
    text = format_timestamp(seconds)
    assert not schema_errors("Timestamp", text) and is_timestamp(text)
    back = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert abs(back - moment.replace(tzinfo=UTC)) <= timedelta(milliseconds=1)


# ----------------------------------------------------------------- the body's depth


def depth(value: Any) -> int:
    """Levels of arrays and objects: 0 for a scalar."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


# strings full of what a naive scanner would take for structure
TRICKY_TEXT = st.text(alphabet='[]{}"\\,:ab', max_size=12) | JSON_TEXT


@st.composite
def nested_values(draw: st.DrawFn) -> Any:
    """A JSON value wrapped in up to 80 arrays or objects, strings full of brackets."""
    value = draw(
        st.recursive(
            TRICKY_TEXT | st.integers() | st.none(),
            lambda c: st.lists(c, max_size=2) | st.dictionaries(TRICKY_TEXT, c, max_size=2),
            max_leaves=6,
        )
    )
    for _ in range(draw(st.integers(min_value=0, max_value=80))):
        value = [value] if draw(st.booleans()) else {draw(TRICKY_TEXT): value}
    return value


@LOADED
@given(nested_values(), st.booleans())
def test_the_depth_check_counts_structure_not_strings(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert too_deep(text) == (depth(value) > MAX_JSON_DEPTH)


@LOADED
@given(st.text(alphabet='[]{}"\\ a', max_size=200))
def test_the_depth_check_takes_any_text(text: str) -> None:
    # invalid JSON too: no exception, and a text with few brackets is never too deep
    result = too_deep(text)
    assume(text.count("[") + text.count("{") <= MAX_JSON_DEPTH)
    assert result is False
