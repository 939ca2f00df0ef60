"""Building blocks of the OpenAPI document: schema helpers and the patterns it states.

Limits and patterns come from the modules that enforce them (rules.py, events.py), so the
document cannot drift from what the handlers accept.
"""

from __future__ import annotations

from typing import Any, Final

from ...rules import (
    CONNECTION_HEADERS,
    HEADER_NAME_RE,
    HEADER_VALUE_RE,
    RESERVED_HEADER_PREFIXES,
    SET_BY_WAHOOKD,
)

Schema = dict[str, Any]
Operation = dict[str, Any]

# ------------------------------------------------------------------ helpers


def _ci(text: str) -> str:
    """A case-insensitive regular expression for a literal made of letters and `-`."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in text)


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _error(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _count(description: str) -> Schema:
    return {"type": "integer", "minimum": 0, "description": description}


def _object(properties: dict[str, Schema], *optional: str, **extra: Any) -> Schema:
    """A closed object whose properties are all required except `optional`."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
        **extra,
    }


# ------------------------------------------------------------------ patterns

# A URL the handler may accept: https, a host, no credentials, no whitespace or control
# characters (the handler also checks the host and the port, refuses other invisible
# characters, and with [delivery] require_https = false accepts http too). No `format: uri`:
# the handler takes IRIs too (a Unicode host name is sent IDNA-encoded).
_CONTROLS: Final = r"\x00-\x20\x7f-\x9f"
URL_PATTERN: Final = rf"^[Hh][Tt][Tt][Pp][Ss]://[^/?#@{_CONTROLS}]+(?:[/?#][^{_CONTROLS}]*)?$"
HEADER_NAME_PATTERN: Final = f"^{HEADER_NAME_RE.pattern}$"
HEADER_VALUE_PATTERN: Final = f"^{HEADER_VALUE_RE.pattern}$"
RESERVED_HEADER_PATTERN: Final = (
    "^(?:"
    + "|".join(f"{_ci(name)}$" for name in sorted(SET_BY_WAHOOKD | CONNECTION_HEADERS))
    + "|"
    + "|".join(_ci(prefix) for prefix in RESERVED_HEADER_PREFIXES)
    + ")"
)
# format_timestamp(): UTC with milliseconds, e.g. 2024-01-01T12:00:00.000Z
TIMESTAMP_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
MILLISECONDS_PATTERN: Final = r"^[0-9]+ms$"
MASKED_SECRET_PATTERN: Final = r"^[\s\S]{0,4}\*{4}$"
METRICS_MEDIA_TYPE: Final = "text/plain; version=0.0.4"


def ref(name: str) -> Schema:
    """A reference to a schema of components.schemas."""
    return {"$ref": f"#/components/schemas/{name}"}
