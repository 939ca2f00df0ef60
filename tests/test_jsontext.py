"""jsontext (msgspec) against the standard library: same values in, same bytes out.

The fast paths may only ever agree with the stdlib paths they replace:

- parse_json_object (msgspec first) and parse_json_object_stdlib (the reference) return
  the same value, types, key order and float bits included, or raise the same 400;
- encode_compact writes the bytes of json.dumps(separators=(",", ":"), ensure_ascii=False);
- an event body is the same whether validate_event walked it (parsed=False) or trusted
  the parser (parsed=True);
- and the fast paths are really taken for ordinary input, so a msgspec upgrade that
  quietly sends everything down the slow path shows up here rather than in the bench.
"""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wahookd.events import validate_event
from wahookd.jsontext import (
    MAX_JSON_DEPTH,
    JsonError,
    decode_object,
    encode_compact,
    parse_json_object,
    parse_json_object_stdlib,
    within_depth,
)

LOADED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_704_110_400.0

# every code point, lone surrogates included: json.dumps escapes them as \ud800
ANY_TEXT = st.text(max_size=12)
# what a parsed body can hold: no lone surrogates
UTF8_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
INTEGERS = (
    st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
)
FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def values(text: st.SearchStrategy[str], floats: st.SearchStrategy[float]) -> Any:
    """JSON-shaped Python values from these leaves."""
    return st.recursive(
        st.none() | st.booleans() | INTEGERS | floats | text,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
        max_leaves=20,
    )


STRICT_OBJECTS = st.dictionaries(UTF8_TEXT, values(UTF8_TEXT, FINITE_FLOATS), max_size=6)
ANY_OBJECTS = st.dictionaries(ANY_TEXT, values(ANY_TEXT, st.floats()), max_size=6)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, dict keys in the same order, floats to the bit."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return a.hex() == b.hex() or (a != a and b != b)
    return bool(a == b)


def outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    """("ok", value) or ("error", (status, message)) of one parser on raw."""
    try:
        return "ok", parse(raw)
    except JsonError as exc:
        return "error", str(exc)


def assert_parsers_agree(raw: bytes) -> None:
    fast_kind, fast = outcome(parse_json_object, raw)
    ref_kind, ref = outcome(parse_json_object_stdlib, raw)
    assert fast_kind == ref_kind, (raw[:200], fast, ref)
    if fast_kind == "ok":
        assert same(fast, ref), raw[:200]
    else:
        assert fast == ref


def stdlib_compact(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


# ------------------------------------------------------------------ decoding


@LOADED
@given(
    ANY_OBJECTS | values(ANY_TEXT, st.floats()),
    st.booleans(),
    st.sampled_from([None, 1, "\t"]),
    st.sampled_from(["", "\ufeff", " \r\n\t"]),
)
def test_the_parsers_agree_on_any_json_text(
    value: Any, ascii_only: bool, indent: int | str | None, lead: str
) -> None:
    # NaN, Infinity and lone surrogates included: json.dumps writes them, JSON has none
    text = lead + json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert_parsers_agree(text.encode("utf-8", "surrogatepass"))


@LOADED
@given(STRICT_OBJECTS, st.booleans())
def test_a_strict_object_takes_the_fast_path(value: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    decoded = decode_object(raw)
    assert decoded is not None
    assert same(decoded, parse_json_object_stdlib(raw))


JSON_NUMBER = st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?", fullmatch=True
)
LONG_NUMBER = st.builds(
    lambda sign, digits, fraction, exponent: f"{sign}{digits}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.sampled_from(["0", "1" * 4300, "1" * 4301, "9" * 400, "12345678901234567890"]),
    st.sampled_from(["", ".5", "." + "3" * 800]),
    st.sampled_from(["", "e308", "e309", "E-400", "e+20", "e-5000"]),
)


@LOADED
@given(JSON_NUMBER | LONG_NUMBER)
def test_the_parsers_agree_on_numbers(number: str) -> None:
    # rounding, -0, 1e400 (infinity: refused), ints past 64 bits and past 4,300 digits
    assert_parsers_agree(b'{"n":' + number.encode() + b"}")
    assert_parsers_agree(b'{"n":[' + number.encode() + b",1]}")


@LOADED
@given(st.text(alphabet='{}[]":,\\ ub0123456789.eE+-ntrufalsNIy\t\n\ufeff\ud800é', max_size=40))
def test_the_parsers_agree_on_junk(text: str) -> None:
    assert_parsers_agree(text.encode("utf-8", "surrogatepass"))


@LOADED
@given(st.binary(max_size=40))
def test_the_parsers_agree_on_bytes(raw: bytes) -> None:
    assert_parsers_agree(raw)
    assert_parsers_agree(b'{"a":"' + raw + b'"}')


def nest(levels: int) -> Any:
    """A number inside `levels` arrays and objects."""
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("levels", [1, 2, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
def test_depth_limit_is_the_same(levels: int) -> None:
    body = {"deep": nest(levels - 1)} if levels > 1 else {}
    raw = json.dumps(body).encode()
    assert_parsers_agree(raw)
    assert within_depth(body) == (levels <= MAX_JSON_DEPTH)
    assert (decode_object(raw) is not None) == (levels <= MAX_JSON_DEPTH)


@pytest.mark.parametrize("levels", [500, 5000, 100_000])
def test_bodies_past_the_recursion_limit_get_the_depth_message(levels: int) -> None:
    raw = b'{"a":' + b"[" * levels + b"]" * levels + b"}"
    assert decode_object(raw) is None
    assert_parsers_agree(raw)
    with pytest.raises(JsonError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        parse_json_object(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a":NaN}', "a: must be a finite number"),
        (b'{"a":[-Infinity]}', "a[0]: must be a finite number"),
        (b'{"a":{"b":1e400}}', "a.b: must be a finite number"),
        (b'{"a":"\\ud800"}', "a: string is not valid Unicode (lone surrogate)"),
        (b'{"\\udfff":1}', "key is not valid Unicode (lone surrogate)"),
        (b"[1]", "body: must be a JSON object"),
        (b'"x"', "body: must be a JSON object"),
        (b'{"a":1', "body: invalid JSON"),
        (b'{"a":"\xff"}', "body: invalid JSON: not UTF-8"),
        (b'{"a":' + b"1" * 4301 + b"}", "body: invalid JSON: Exceeds the limit"),
    ],
)
def test_refusals_keep_their_messages(raw: bytes, message: str) -> None:
    with pytest.raises(JsonError) as caught:
        parse_json_object(raw)
    assert message in str(caught.value)
    assert_parsers_agree(raw)


def test_a_bom_is_tolerated_once() -> None:
    assert parse_json_object(b'\xef\xbb\xbf{"a":1}') == {"a": 1}
    assert_parsers_agree(b'\xef\xbb\xbf\xef\xbb\xbf{"a":1}')


# ------------------------------------------------------------------ encoding


@LOADED
@given(STRICT_OBJECTS)
def test_encode_compact_writes_what_json_dumps_writes(value: dict[str, Any]) -> None:
    assert encode_compact(value) == stdlib_compact(value)


@LOADED
@given(st.dictionaries(st.text(st.characters(codec="utf-8", max_codepoint=0x3000)), UTF8_TEXT))
def test_encode_compact_escapes_like_json_dumps(value: dict[str, str]) -> None:
    # control characters, quotes, backslashes, U+2028, DEL: escaped or kept alike
    assert encode_compact(value) == stdlib_compact(value)


class Level(enum.IntEnum):
    HIGH = 2


@pytest.mark.parametrize(
    "value",
    [
        {"f": 1e16, "g": 1e-07, "h": -0.0, "i": 1.5, "j": 5e-324},  # msgspec would write 1e16
        {"nested": [{"f": 0.1}]},
        {"level": Level.HIGH},  # a subclass: the stdlib decides how it looks
        {"tuple": (1, "a")},
        OrderedDict(f=1e16),  # not a plain dict: the stdlib writes it
        {"big": 10**4299, "neg": -(2**64)},
        {"text": '\x00\x1f\x7f\u2028"\\/é😀'},
    ],
)
def test_encode_compact_examples(value: dict[str, Any]) -> None:
    assert encode_compact(value) == stdlib_compact(value)


def test_encode_compact_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(ValueError, match="4300"):
        encode_compact({"n": 10**4300})
    with pytest.raises(ValueError, match="4300"):
        stdlib_compact({"n": 10**4300})


# ---------------------------------------------------------------- the events


EXTRA_KEYS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).filter(
    lambda key: key not in {"event", "sessionId", "id", "timestamp", "messageId", "to"}
)


@LOADED
@given(
    st.dictionaries(EXTRA_KEYS, values(UTF8_TEXT, FINITE_FLOATS), max_size=5),
    st.booleans(),
)
def test_an_event_body_is_what_json_dumps_wrote(extra: dict[str, Any], stamped: bool) -> None:
    sent = {"event": "message.read", "sessionId": "s1", "messageId": "m", "to": "1", **extra}
    if stamped:
        sent["timestamp"] = "2024-01-01T12:00:00.000Z"
    raw = json.dumps(sent, ensure_ascii=False).encode()
    parsed = parse_json_object(raw)
    fast = validate_event(parsed, now=NOW, parsed=True)
    careful = validate_event(parse_json_object_stdlib(raw), now=NOW)
    assert fast == careful
    expected = sent if stamped else {**sent, "timestamp": "2024-01-01T12:00:00.000Z"}
    assert fast.body == stdlib_compact(expected)
