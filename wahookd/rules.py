"""The rules of a webhook's fields, shared by the config file and the API (SPEC §3).

Pure checks: each returns the value it accepts or raises `RuleError(field, message)`.
The field is relative (`url`, `events[1]`, `headers.X-Key`); the config loader prefixes
it with the file and the table (`wahookd.toml: webhook[0].url: ...`), the API answers
400 `validation_error` with "field: message". Where the config file words a problem its
own way (its tests pin those texts), it maps the error's `rule` to its wording.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal
from urllib.parse import urlsplit

from .chats import CHAT_KINDS
from .delivery.netpolicy import Network, RefusedTarget
from .delivery.netpolicy import check_url as check_target
from .delivery.ordering import ORDERINGS
from .events import EVENT_TYPES, SESSION_ID_RULE, is_session_id

Rule = Literal[
    "url",
    "url_not_https",
    "events",
    "events_empty",
    "secret",
    "headers",
    "header_name",
    "header_reserved",
    "header_connection",
    "header_twice",
    "header_value",
    "session",
    "description",
    "filter",
    "ordering",
    "rate_limit",
]

MAX_URL_CHARS: Final = 2048
MAX_SECRET_CHARS: Final = 256
MAX_HEADERS: Final = 16
MAX_HEADER_NAME_CHARS: Final = 64
MAX_HEADER_VALUE_CHARS: Final = 1024
MAX_DESCRIPTION_CHARS: Final = 256
# a webhook's public id (store/sqlite/webhooks.new_public_id)
WEBHOOK_ID_RE: Final = re.compile(r"wh_[0-9a-f]{16}")
MAX_RATE_LIMIT: Final = 10_000
# an HTTP token (RFC 9110 5.6.2), at most 64 characters
HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# tab, printable ASCII and Latin-1 (what an HTTP/1.1 field value may carry); no CR, LF, NUL
HEADER_VALUE_RE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers wahookd sets itself: letting a webhook override them would break signing or framing.
SET_BY_WAHOOKD: Final = frozenset({"content-type", "user-agent", "host", "content-length"})
RESERVED_HEADER_PREFIXES: Final = ("x-webhook-", "webhook-")
# Headers that control the connection or the message framing (RFC 9110 7.6.1, RFC 9112):
# a webhook's `Transfer-Encoding: chunked` next to our Content-Length, say, makes every
# request one the receiver must refuse.
CONNECTION_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
RESERVED_HEADERS_TEXT: Final = (
    "Content-Type, User-Agent, Host, Content-Length, X-Webhook-*, webhook-*, and the"
    " connection headers Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, TE,"
    " Trailer, Upgrade, Expect"
)
HEADER_NAME_TEXT: Final = f"letters, digits and !#$%&'*+-.^_`|~, at most {MAX_HEADER_NAME_CHARS}"
_KNOWN_EVENTS: Final = ", ".join(EVENT_TYPES)


class RuleError(ValueError):
    """A webhook field breaks a rule: `field` names it, `message` says what is allowed."""

    def __init__(self, field: str, message: str, rule: Rule) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.rule = rule


def check_url(
    url: object,
    *,
    require_https: bool,
    allow_networks: Sequence[Network],
    field: str = "url",
) -> str:
    """A webhook URL: its form, its length, and a literal host against the network policy.

    Host names are checked when connecting (netpolicy.PolicyResolver), since DNS can change.
    """
    if not isinstance(url, str) or not url:
        raise RuleError(field, "must be a non-empty string", "url")
    if len(url) > MAX_URL_CHARS:
        raise RuleError(field, f"longer than {MAX_URL_CHARS} characters", "url")
    try:
        check_target(url, require_https=require_https, allow_networks=allow_networks)
    except RefusedTarget as exc:
        rule: Rule = "url_not_https" if require_https and _scheme(url) == "http" else "url"
        raise RuleError(field, str(exc), rule) from None
    return url


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


def check_events(value: object, field: str = "events") -> list[str]:
    """A non-empty list of known event types or "*"; repeats dropped, order kept."""
    if not isinstance(value, list) or not value:
        raise RuleError(field, "must be a non-empty list of event types or '*'", "events_empty")
    for i, item in enumerate(value):
        check_event(item, f"{field}[{i}]")
    return list(dict.fromkeys(value))


def check_event(item: object, field: str) -> str:
    """One entry of a webhook's events: a known event type or "*"."""
    if not isinstance(item, str) or (item != "*" and item not in EVENT_TYPES):
        message = f'unknown event type {item!r}; known: {_KNOWN_EVENTS}, or "*" for all'
        raise RuleError(field, message, "events")
    return item


def check_secret(value: object, field: str = "secret") -> str | None:
    """A secret is optional (None: nothing is signed), else 1-256 characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SECRET_CHARS:
        message = f"must be a string of 1-{MAX_SECRET_CHARS} characters"
        if isinstance(value, str):
            message += f", got {len(value)}"
        raise RuleError(field, message, "secret")
    return value


def reserved_header(name: str) -> bool:
    """True when a webhook may not set this header (any case): see RESERVED_HEADERS_TEXT."""
    lower = name.lower()
    return (
        lower in SET_BY_WAHOOKD
        or lower in CONNECTION_HEADERS
        or lower.startswith(RESERVED_HEADER_PREFIXES)
    )


def check_header_count(count: int, field: str = "headers") -> None:
    """At most MAX_HEADERS extra headers."""
    if count > MAX_HEADERS:
        raise RuleError(field, f"at most {MAX_HEADERS} headers, got {count}", "headers")


def check_header(name: str, value: object, seen: set[str], field: str = "headers") -> None:
    """One extra header: an HTTP token name wahookd does not own, given once, a short value.

    `seen` holds the lower-case names checked before; the caller adds this one.
    """
    lower = name.lower()
    if not HEADER_NAME_RE.fullmatch(name):
        message = f"{name!r} is not a valid header name: use {HEADER_NAME_TEXT}"
        raise RuleError(field, message, "header_name")
    entry = f"{field}.{name}"
    if lower in CONNECTION_HEADERS:
        raise RuleError(entry, "a connection header, which wahookd controls", "header_connection")
    if reserved_header(name):
        raise RuleError(entry, "wahookd sets this header itself", "header_reserved")
    if lower in seen:
        raise RuleError(entry, "given twice (header names ignore case)", "header_twice")
    if isinstance(value, str) and _CONTROL_RE.search(value):
        message = "value contains CR, LF or another control character"
        raise RuleError(entry, message, "header_value")
    if (
        not isinstance(value, str)
        or len(value) > MAX_HEADER_VALUE_CHARS
        or not HEADER_VALUE_RE.fullmatch(value)
    ):
        message = f"must be a string of at most {MAX_HEADER_VALUE_CHARS} printable characters"
        raise RuleError(entry, message, "header_value")


def check_headers(value: dict[str, object], field: str = "headers") -> list[tuple[str, str]]:
    """Every extra header, in order; the first problem raises."""
    check_header_count(len(value), field)
    seen: set[str] = set()
    for name, header_value in value.items():
        check_header(name, header_value, seen, field)
        seen.add(name.lower())
    return [(name, str(header_value)) for name, header_value in value.items()]


def check_session_id(value: object, field: str = "sessionId") -> str:
    """A session id: 1-128 characters of A-Z a-z 0-9 . _ : @ -."""
    if not is_session_id(value):
        raise RuleError(field, f"must be {SESSION_ID_RULE}", "session")
    return value


def check_description(value: object, field: str = "description") -> str | None:
    """An optional note for people: at most 256 characters, no control characters but tab."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or len(value) > MAX_DESCRIPTION_CHARS
        or _CONTROL_RE.search(value)
    ):
        message = f"must be a string of at most {MAX_DESCRIPTION_CHARS} characters, no CR/LF"
        if isinstance(value, str) and len(value) > MAX_DESCRIPTION_CHARS:
            message += f", got {len(value)}"
        raise RuleError(field, message, "description")
    return value


def check_filter(value: object, field: str = "filter") -> tuple[str, ...] | None:
    """A chat filter `{"chats": [kind, ...]}`: the chat kinds wanted; None: every chat."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"chats"}:
        raise RuleError(field, 'must be an object {"chats": [chat kinds]} or null', "filter")
    chats = value["chats"]
    known = ", ".join(CHAT_KINDS)
    if not isinstance(chats, list) or not chats:
        raise RuleError(f"{field}.chats", f"must be a non-empty list of: {known}", "filter")
    for i, kind in enumerate(chats):
        if kind not in CHAT_KINDS:
            shown = repr(kind) if isinstance(kind, str) else type(kind).__name__
            message = f"unknown chat kind {shown}; known: {known}"
            raise RuleError(f"{field}.chats[{i}]", message, "filter")
    return tuple(dict.fromkeys(chats))


def check_ordering(value: object, field: str = "ordering") -> str:
    """How a webhook's deliveries are ordered: none, chat or session."""
    if value not in ORDERINGS:
        shown = repr(value) if isinstance(value, str) else "a " + type(value).__name__
        raise RuleError(field, f"must be one of {', '.join(ORDERINGS)}, got {shown}", "ordering")
    assert isinstance(value, str)
    return value


def check_rate_limit(value: object, field: str = "rateLimit") -> int | None:
    """Attempts per second to the webhook: an integer 1-10000, or null for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE_LIMIT:
        message = f"must be null or an integer from 1 to {MAX_RATE_LIMIT}"
        raise RuleError(field, message, "rate_limit")
    return value


def mask(secret: str | None) -> str | None:
    """First 4 characters then ****; short secrets show less so most stays hidden."""
    if secret is None:
        return None
    return secret[: min(4, len(secret) // 2)] + "****"


def keep_masked(secret: str | None, current: str | None) -> str | None:
    """A secret written back in its masked form (as a read showed it) keeps the current one.

    So a config read, edited and written back never signs with `your****` (SPEC §8).
    """
    if secret is not None and current is not None and secret == mask(current):
        return current
    return secret
