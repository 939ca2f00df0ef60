"""Durations ("500ms", "30s", "5m", "2h", "7d") and sizes ("64KiB", "1MiB") for config and CLI."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Final

DURATION_UNITS: Final[dict[str, Fraction]] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
SIZE_UNITS: Final[dict[str, int]] = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
DURATION_HELP: Final = 'use e.g. "500ms", "30s", "5m", "2h", "7d" or a number of seconds'
SIZE_HELP: Final = (
    'use e.g. "512B", "64KiB", "1MiB", "1GiB" (or KB, MB, GB for powers of 1000) '
    "or a whole number of bytes"
)

# ASCII digits only: `\d` would also accept other scripts' digits, which no operator means.
_NUMBER_TEXT: Final = r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+"
_NUMBER: Final = rf"(?P<number>{_NUMBER_TEXT})"
_DURATION_RE: Final = re.compile(_NUMBER + r"(?P<unit>ms|s|m|h|d)?")
# The duration strings parse_duration reads, as a JSON Schema (ECMA-262) pattern.
DURATION_PATTERN: Final = rf"^(?:{_NUMBER_TEXT})(?:ms|s|m|h|d)?$"
_SIZE_RE: Final = re.compile(_NUMBER + r"(?P<unit>B|KB|MB|GB|KiB|MiB|GiB)?")


def _invalid(kind: str, value: object, help_text: str, why: str = "") -> ValueError:
    try:
        shown = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits() has no decimal repr
        shown = "<a huge integer>"
    if len(shown) > 60:  # keep messages readable when someone pastes a whole file into a key
        shown = shown[:57] + "..."
    reason = f" ({why})" if why else ""
    return ValueError(f"invalid {kind} {shown}{reason}; {help_text}")


def parse_duration(value: object) -> float:
    """Return the number of seconds in a duration string ("1.5s", "5m") or number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid("duration", value, DURATION_HELP, f"got {type(value).__name__}")
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match is None:
            raise _invalid("duration", value, DURATION_HELP)
        # Fraction keeps "1.5m" and "100ms" exact until the single final rounding to float.
        exact = _exact(value, match["number"], "duration", DURATION_HELP)
        exact *= DURATION_UNITS[match["unit"] or "s"]
    elif isinstance(value, float) and not math.isfinite(value):
        raise _invalid("duration", value, DURATION_HELP, "not finite")
    else:
        exact = Fraction(value)
    if exact < 0:
        raise _invalid("duration", value, DURATION_HELP, "negative")
    try:
        return float(exact)
    except OverflowError:
        raise _invalid("duration", value, DURATION_HELP, "too large") from None


def _exact(value: str, number: str, kind: str, help_text: str) -> Fraction:
    try:
        return Fraction(number)
    except ValueError:  # more digits than int() accepts (sys.get_int_max_str_digits)
        raise _invalid(kind, value, help_text, "too many digits") from None


def format_duration(seconds: float) -> str:
    """Render seconds in the largest exact unit ("7d", "90s", "250ms"); parse_duration undoes it."""
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise _invalid("duration", seconds, DURATION_HELP, "not a finite number >= 0")
    if seconds == 0:
        return "0s"
    exact = Fraction(seconds)
    for unit in ("d", "h", "m", "s"):
        count = exact / DURATION_UNITS[unit]
        if count.denominator == 1:
            return f"{count.numerator}{unit}"
    millis = exact * 1000
    if seconds < 1 and millis.denominator == 1:
        return f"{millis.numerator}ms"
    # repr() is the shortest text that reads back as the same float; "f" avoids exponents.
    return format(Decimal(repr(float(seconds))), "f") + "s"


def parse_size(value: object) -> int:
    """Return the number of bytes in a size string ("64KiB", "1MB") or integer."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _invalid("size", value, SIZE_HELP, f"got {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise _invalid("size", value, SIZE_HELP, "negative")
        return value
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise _invalid("size", value, SIZE_HELP)
    # "1.5KiB" is a whole number of bytes and fine; "0.3B" is not.
    exact = _exact(value, match["number"], "size", SIZE_HELP) * SIZE_UNITS[match["unit"] or "B"]
    if exact.denominator != 1:
        raise _invalid("size", value, SIZE_HELP, "not a whole number of bytes")
    return exact.numerator


def format_size(size: int) -> str:
    """Render bytes in the largest exact binary unit ("64KiB", "1MiB", "100B")."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _invalid("size", size, SIZE_HELP, "not an integer >= 0")
    for unit in ("GiB", "MiB", "KiB"):
        if size and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return f"{size}B"
