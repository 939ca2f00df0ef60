"""Fast strict JSON in and compact JSON out, with the standard library as the reference.

Ingest parses every request body and writes every event back as compact JSON, so both
run in C (msgspec) whenever that gives exactly what the standard library would:

- `decode_object` returns the body only when msgspec parsed it as a JSON object within
  MAX_JSON_DEPTH; anything it refuses (NaN, 1e400, a lone surrogate, a 5,000-digit
  integer, bad syntax, too deep, not an object) returns None, and the caller takes its
  careful stdlib path, which names the problem in the 400's message;
- `encode_compact` gives the bytes of `json.dumps(value, separators=(",", ":"),
  ensure_ascii=False)` in UTF-8; msgspec writes floats differently (1e16, not 1e+16),
  so a value holding a float, or anything but plain JSON types, goes through json.dumps.

tests/test_jsontext.py checks both against the standard library on generated inputs.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

# the JSON nesting a request body may have; deeper bodies are refused
MAX_JSON_DEPTH: Final = 64

_BOM: Final = b"\xef\xbb\xbf"
_DECODER: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()
# values msgspec writes exactly as json.dumps does (not float; not subclasses either)
_PLAIN_LEAVES: Final[frozenset[type]] = frozenset({str, int, bool, type(None)})


def decode_object(raw: bytes) -> dict[str, Any] | None:
    """raw as a JSON object when it is strict JSON at most MAX_JSON_DEPTH deep, else None.

    Strict: no NaN or infinity (1e400 included), no lone surrogate, valid UTF-8 (a
    leading BOM is tolerated). None means "not sure": parse it the careful way.
    """
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        data = _DECODER.decode(raw)
    except (msgspec.DecodeError, ValueError, RecursionError):
        # DecodeError: syntax, NaN, 1e400, lone surrogates, huge integers;
        # ValueError: not UTF-8; RecursionError: nested past Python's limit
        return None
    if type(data) is not dict or not within_depth(data):
        return None
    return data


def within_depth(root: dict[str, Any] | list[Any]) -> bool:
    """True when root nests arrays and objects at most MAX_JSON_DEPTH deep (root is 1)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        container, depth = stack.pop()
        for value in container.values() if isinstance(container, dict) else container:
            if type(value) is dict or type(value) is list:
                if depth >= MAX_JSON_DEPTH:
                    return False
                stack.append((value, depth + 1))
    return True


def encode_compact(value: dict[str, Any]) -> bytes:
    """Compact JSON in UTF-8, byte for byte what json.dumps(separators=(",", ":")) writes.

    The value must be JSON already (string keys, no NaN, no lone surrogate: check_json's
    rules). Raises ValueError for an integer past sys.get_int_max_str_digits().
    """
    if _plain(value):
        return _ENCODER.encode(value)
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def _plain(root: dict[str, Any]) -> bool:
    """True when root and every value inside it is a dict, list, str, int, bool or None."""
    if type(root) is not dict:  # a subclass may write itself differently
        return False
    stack: list[Any] = [root]
    while stack:
        container = stack.pop()
        for value in container.values() if type(container) is dict else container:
            kind = type(value)
            if kind in _PLAIN_LEAVES:
                continue
            if kind is dict or kind is list:
                stack.append(value)
                continue
            return False
    return True
