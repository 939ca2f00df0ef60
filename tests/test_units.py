"""Duration and size parsing (wahookd.units)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wahookd.units import (
    DURATION_HELP,
    DURATION_UNITS,
    SIZE_HELP,
    SIZE_UNITS,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1.5s", 1.5),
        ("1.5m", 90.0),
        (".5s", 0.5),
        ("0s", 0.0),
        ("0", 0.0),
        ("30", 30.0),
        ("100ms", 0.1),
        ("0.25h", 900.0),
        (30, 30.0),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    result = parse_duration(text)
    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("abc", "'abc'"),
        ("", "''"),
        ("5 s", "'5 s'"),
        (" 5s", "' 5s'"),
        ("5M", "'5M'"),  # units are lower case: M could mean minutes or months
        ("5sec", "'5sec'"),
        ("5w", "'5w'"),
        ("-5s", "'-5s'"),
        ("1e3s", "'1e3s'"),
        ("1.s", "'1.s'"),
        ("٣s", "'٣s'"),  # Arabic-Indic digit: only ASCII digits count
        ("nan", "'nan'"),
        ("inf", "'inf'"),
        (-1, "-1 (negative)"),
        (-0.5, "-0.5 (negative)"),
        (math.nan, "nan (not finite)"),
        (math.inf, "inf (not finite)"),
        (True, "True (got bool)"),
        (False, "False (got bool)"),
        (None, "None (got NoneType)"),
        (["5s"], "['5s'] (got list)"),
        (10**400, "(too large)"),
        ("9" * 400 + "d", "(too large)"),
        ("9" * 5000 + "s", "(too many digits)"),
    ],
)
def test_parse_duration_rejects(value: object, detail: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    message = str(info.value)
    assert message.startswith("invalid duration ")
    assert detail in message
    assert message.endswith("; " + DURATION_HELP)
    assert '"500ms", "30s", "5m", "2h", "7d" or a number of seconds' in message


def test_duration_message_is_the_documented_one() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("abc")
    assert str(info.value) == (
        'invalid duration \'abc\'; use e.g. "500ms", "30s", "5m", "2h", "7d" or a number of seconds'
    )


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("x" * 1000)
    assert len(str(info.value)) < 200
    assert "..." in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.5, "500ms"),
        (0.001, "0.001s"),  # 0.001 is not exactly 1 ms in binary, so it stays in seconds
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (30.0, "30s"),
        (90.0, "90s"),
        (300.0, "5m"),
        (7200.0, "2h"),
        (604800.0, "7d"),
        (432000, "5d"),
        (1e-5, "0.00001s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_format_duration_rejects(bad: float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        format_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512B", 512),
        ("64KiB", 65536),
        ("1MiB", 1048576),
        ("1GiB", 1073741824),
        ("1KB", 1000),
        ("2MB", 2_000_000),
        ("1GB", 1_000_000_000),
        ("1.5KiB", 1536),
        ("0.5MB", 500_000),
        ("0B", 0),
        ("1024", 1024),
        (0, 0),
        (65536, 65536),
    ],
)
def test_parse_size_accepts(text: object, size: int) -> None:
    result = parse_size(text)
    assert result == size
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("1kb", "'1kb'"),
        ("1kib", "'1kib'"),
        ("1K", "'1K'"),
        ("1 MiB", "'1 MiB'"),
        ("MiB", "'MiB'"),
        ("", "''"),
        ("-1B", "'-1B'"),
        ("1TiB", "'1TiB'"),
        ("0.3B", "'0.3B' (not a whole number of bytes)"),
        ("1.0001KiB", "(not a whole number of bytes)"),
        (-1, "-1 (negative)"),
        (1.0, "1.0 (got float)"),
        (True, "True (got bool)"),
        (None, "None (got NoneType)"),
        ("9" * 5000, "(too many digits)"),
    ],
)
def test_parse_size_rejects(value: object, detail: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    message = str(info.value)
    assert message.startswith("invalid size ")
    assert detail in message
    assert message.endswith("; " + SIZE_HELP)
    assert '"64KiB", "1MiB"' in message


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (100, "100B"),
        (1000, "1000B"),
        (1024, "1KiB"),
        (65536, "64KiB"),
        (3 << 30, "3GiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", [-1, True])
def test_format_size_rejects(bad: int) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        format_size(bad)


# --- properties ------------------------------------------------------------------------------


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(sorted(DURATION_UNITS)))
def test_whole_units_parse_exactly(count: int, unit: str) -> None:
    assert parse_duration(f"{count}{unit}") == float(count * DURATION_UNITS[unit])


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=999))
def test_decimal_seconds_parse_like_float(whole: int, thousandths: int) -> None:
    text = f"{whole}.{thousandths:03d}"
    assert parse_duration(text + "s") == float(text)


@given(st.integers(min_value=0))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(sorted(SIZE_UNITS)))
def test_sizes_with_units(count: int, unit: str) -> None:
    assert parse_size(f"{count}{unit}") == count * SIZE_UNITS[unit]


@given(st.text())
def test_parse_duration_on_any_text_returns_seconds_or_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert str(exc).startswith("invalid duration ")
    else:
        assert math.isfinite(seconds)
        assert seconds >= 0


@given(st.text(alphabet="0123456789.msdhKMGiB -", max_size=12))
def test_parse_duration_on_near_miss_text(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert DURATION_HELP in str(exc)
    else:
        assert math.isfinite(seconds) and seconds >= 0


@given(st.text())
def test_parse_size_on_any_text_returns_bytes_or_raises_value_error(text: str) -> None:
    try:
        size = parse_size(text)
    except ValueError as exc:
        assert str(exc).startswith("invalid size ")
    else:
        assert isinstance(size, int) and size >= 0


@given(st.text(alphabet="0123456789.KMGiB -", max_size=12))
def test_parse_size_on_near_miss_text(text: str) -> None:
    try:
        size = parse_size(text)
    except ValueError as exc:
        assert SIZE_HELP in str(exc)
    else:
        assert isinstance(size, int) and size >= 0


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(_ANY_VALUE)
def test_parsers_raise_only_value_error_on_any_value(value: object) -> None:
    for parse in (parse_duration, parse_size):
        try:
            result = parse(value)
        except ValueError as exc:
            assert str(exc).startswith("invalid ")
        else:
            assert isinstance(value, int | float) and value >= 0
            # durations are float seconds: a huge integer keeps its nearest float
            assert result == (float(value) if parse is parse_duration else value)
