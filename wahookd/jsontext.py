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
import math
import re
from typing import Any, Final

import msgspec

# the JSON nesting a request body may have; deeper bodies are refused
MAX_JSON_DEPTH: Final = 64

_BOM: Final = b"\xef\xbb\xbf"
_DECODER: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()
# values msgspec writes exactly as json.dumps does (not float; not subclasses either)
_PLAIN_LEAVES: Final[frozenset[type]] = frozenset({str, int, bool, type(None)})
_SIMPLE_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class JsonError(ValueError):
    """Not strict JSON (or not an object where one is needed); the message names the field."""


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


def dumps_compact(data: Any) -> str:
    """Compact JSON text, unicode kept as is: the package's one way to write JSON compactly."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """raw as a JSON object of strict JSON values, or a JsonError that names the problem."""
    data = decode_object(raw)
    if data is not None:
        return data
    # msgspec refused it or was unsure: the standard library decides, and explains
    return parse_json_object_stdlib(raw)


def parse_json_object_stdlib(raw: bytes) -> dict[str, Any]:
    """parse_json_object with the standard library alone: the reference, and every 400."""
    try:
        # JSON between systems is UTF-8 (RFC 8259 §8.1); a BOM is tolerated
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JsonError(f"body: invalid JSON: not UTF-8: {exc}") from None
    if too_deep(text):
        raise JsonError(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    unusual = False

    def constant(name: str) -> float:  # NaN, Infinity, -Infinity: not JSON
        nonlocal unusual
        unusual = True
        return float(name)

    def number(digits: str) -> float:  # 1e400 overflows to infinity
        nonlocal unusual
        value = float(digits)
        unusual = unusual or math.isinf(value)
        return value

    try:
        data = json.loads(text, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError) as exc:
        raise JsonError(f"body: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JsonError("body: must be a JSON object")
    if unusual or _SURROGATE_ESCAPE.search(text):
        # rare, so only then the walk that names the field; handlers may then assume
        # every string encodes as UTF-8 and every number is finite
        check_json(data)
    return data


# \ud800-\udfff: half of a surrogate pair, maybe alone (which UTF-8 cannot encode)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# A JSON string, escapes included. An unterminated one runs to the end of the text, so
# every match succeeds without backtracking: linear time whatever the body.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def too_deep(text: str) -> bool:
    """True when the JSON text nests arrays and objects deeper than MAX_JSON_DEPTH.

    Checked before parsing, so a hostile body cannot reach the parser's recursion limit.
    Brackets inside strings do not count.
    """
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def check_json(root: dict[object, object], prefix: str = "") -> None:
    """Raise JsonError unless root is strict JSON in valid UTF-8, at most MAX_JSON_DEPTH deep.

    No NaN or infinity and no lone surrogate; the message names the offending field.
    """
    # Iterative, so a deep structure meets MAX_JSON_DEPTH instead of Python's recursion limit.
    stack: list[tuple[object, str, int]] = [(root, whole_name(prefix), 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_JSON_DEPTH:
                raise JsonError(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise JsonError(f"{path}: object keys must be strings")
                child = _child_path(path, key, at_root=depth == 0 and not prefix)
                if not _is_unicode(key):
                    raise JsonError(f"{child}: key is not valid Unicode (lone surrogate)")
                stack.append((item, child, depth + 1))
        elif isinstance(value, list):
            if depth >= MAX_JSON_DEPTH:
                raise JsonError(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            if not _is_unicode(value):
                raise JsonError(f"{path}: string is not valid Unicode (lone surrogate)")
        elif isinstance(value, float):
            # json.loads turns NaN, Infinity and 1e400 into floats that JSON cannot carry.
            if not math.isfinite(value):
                raise JsonError(f"{path}: must be a finite number")
        elif value is not None and not isinstance(value, int):
            raise JsonError(f"{path}: not a JSON value ({type(value).__name__})")


def _child_path(path: str, key: str, *, at_root: bool) -> str:
    """Path of `key` inside `path`, written so the message stays unambiguous."""
    if _SIMPLE_KEY_RE.fullmatch(key):
        return key if at_root else f"{path}.{key}"
    quoted = json.dumps(key)
    return quoted if at_root else f"{path}[{quoted}]"


def whole_name(prefix: str) -> str:
    """Name for the event object itself: "events[2]" in a batch, "body" alone."""
    return prefix.removesuffix(".") or "body"


def _is_unicode(text: str) -> bool:
    """False when text holds a lone surrogate, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
