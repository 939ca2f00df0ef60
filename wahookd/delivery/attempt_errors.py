"""Why an attempt failed, in one short text of ours (SPEC §5).

The one place where an exception raised by an attempt becomes its error class and text.
The texts go to the attempt log, `POST /api/webhook/test`'s `error` and the daemon's log,
so they are fixed phrases ("connection refused", "timeout after 5s", "TLS: certificate
verify failed (hostname mismatch)"), never an exception's str() or repr(): those carry
Python internals (the SSLContext's repr, argument tuples, "[Errno 111] Connect call failed
('127.0.0.1', 1)"), and for a garbled answer the bytes the receiver sent.

`describe` walks the exception and what it wraps, and the first row of `RULES` that
matches any of them wins. The rows name the exceptions of the sender's own HTTP/1.1
client (http1.py, pool.py) and of the ssl and socket modules under it.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from ..models import ErrorClass
from ..units import format_duration
from .headers import HeaderInjection
from .http1 import BadResponse, ClosedDuringAnswer, ConnectionClosed, HeadTooLarge
from .netpolicy import RefusedTarget
from .pool import ConnectError, HandshakeError

MAX_CHARS = 300
CONNECTION_REFUSED: Final = "connection refused"
CONNECTION_RESET: Final = "connection reset"
CLOSED_BEFORE_ANSWER: Final = "connection closed before the answer"
CLOSED_DURING_ANSWER: Final = "connection closed during the answer"
NETWORK_UNREACHABLE: Final = "network unreachable"
HOST_UNREACHABLE: Final = "host unreachable"
CONNECTION_FAILED: Final = "connection failed"
INVALID_ANSWER: Final = "invalid HTTP answer from receiver"
ANSWER_TOO_LARGE: Final = "answer too large"
TLS_VERIFY_FAILED: Final = "TLS: certificate verify failed"
TLS_HANDSHAKE_FAILED: Final = "TLS: handshake failed"
TLS_FAILED: Final = "TLS: connection failed"
REFUSED_PREFIX: Final = "refused by network policy: "

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) as short reasons; others fall back to its message
VERIFY_REASONS: Final[dict[int, str]] = {
    2: "unknown issuer",  # unable to get issuer certificate
    9: "certificate not yet valid",
    10: "certificate expired",
    18: "self-signed certificate",
    19: "self-signed certificate in chain",
    20: "unknown issuer",  # unable to get local issuer certificate
    21: "unknown issuer",  # unable to verify the first certificate
    23: "certificate revoked",
    26: "certificate not for a server",  # unsupported certificate purpose
    62: "hostname mismatch",
    64: "IP address mismatch",
}

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
_OPENSSL_REASON = re.compile(r"[A-Z0-9_]{1,60}")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a text may name besides the exception: the attempt's host and timeout."""

    host: str
    timeout_s: float


Text = str | Callable[[BaseException, Attempt], str]
ANY_ERRNO: Final = -1  # a Rule's errno that matches every OSError with an errno


class Rule(NamedTuple):
    """One row of the table: an exception type (and errno), its class and text."""

    kind: type[BaseException]
    error_class: ErrorClass
    text: Text
    errno: int | None = None  # the OSError's errno, or ANY_ERRNO; None: any exception


def one_line(text: str) -> str:
    """Printable ASCII on one line, at most MAX_CHARS."""
    text = _UNPRINTABLE.sub(" ", text).strip()
    text = re.sub(r"\s{2,}", " ", text)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."


def timeout_text(timeout_s: float) -> str:
    """The attempt took longer than `delivery.timeout`: "timeout after 5s", "after 300ms"."""
    # whole milliseconds, as the config is written: 0.3 is "300ms", not "0.3s"
    ms = round(timeout_s * 1000)
    shown = f"{ms}ms" if ms < 1000 and ms % 1000 else format_duration(ms / 1000)
    return f"timeout after {shown}"


def status_text(status: int) -> str:
    """A non-2xx answer: "HTTP 503"."""
    return f"HTTP {status}"


def _refused(exc: BaseException, attempt: Attempt) -> str:
    # the policy's own texts (netpolicy.py): they name the host and the refused range
    return one_line(REFUSED_PREFIX + str(exc))


def _header_injection(exc: BaseException, attempt: Attempt) -> str:
    return one_line(str(exc))


def _verify_failed(exc: BaseException, attempt: Attempt) -> str:
    assert isinstance(exc, ssl.SSLCertVerificationError)
    code = getattr(exc, "verify_code", None)
    reason = VERIFY_REASONS.get(code) if isinstance(code, int) else None
    if reason is None:
        # OpenSSL's fixed message; cut where CPython appends the name ("..., certificate is
        # not valid for 'x'") and keep only plain words
        message = str(getattr(exc, "verify_message", "") or "").split(",")[0]
        reason = re.sub(r"[^a-z0-9 -]+", "", message.lower()).strip()[:60]
    return f"{TLS_VERIFY_FAILED} ({reason})" if reason else TLS_VERIFY_FAILED


def _handshake_failed(exc: BaseException, attempt: Attempt) -> str:
    return _with_openssl_reason(TLS_HANDSHAKE_FAILED, getattr(exc, "os_error", exc))


def _tls_failed(exc: BaseException, attempt: Attempt) -> str:
    return _with_openssl_reason(TLS_FAILED, exc)


def _with_openssl_reason(text: str, exc: BaseException) -> str:
    # OpenSSL's reason is a mnemonic from a fixed set ("WRONG_VERSION_NUMBER")
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and _OPENSSL_REASON.fullmatch(reason):
        return f"{text} ({reason.lower().replace('_', ' ')})"
    return text


def _host_not_found(exc: BaseException, attempt: Attempt) -> str:
    host = re.sub(r"[^A-Za-z0-9.:_-]+", "", attempt.host)[:100]
    return f"host not found (DNS: {host})" if host else "host not found"


def _other_errno(exc: BaseException, attempt: Attempt) -> str:
    assert isinstance(exc, OSError) and exc.errno is not None
    return f"{CONNECTION_FAILED} ({errno.errorcode.get(exc.errno, str(exc.errno))})"


def _timeout(exc: BaseException, attempt: Attempt) -> str:
    return timeout_text(attempt.timeout_s)


def _errno(code: int, text: str) -> Rule:
    return Rule(OSError, "network", text, code)


# First match wins: for each row, the exception and everything it wraps are tried in turn,
# innermost first (pool.py's ConnectError wraps what failed while connecting).
# SSLError is an OSError whose errno is OpenSSL's, so TLS rows come before the errno rows;
# http1.py's ConnectionClosed is an OSError without errno, named before the catch-alls.
RULES: Final[tuple[Rule, ...]] = (
    Rule(RefusedTarget, "refused", _refused),
    # a webhook header with CR, LF or NUL (rules.py refuses them; this is the last guard)
    Rule(HeaderInjection, "refused", _header_injection),
    Rule(ssl.SSLCertVerificationError, "tls", _verify_failed),
    # the pool wraps what failed during the handshake
    Rule(HandshakeError, "tls", _handshake_failed),
    Rule(ssl.SSLError, "tls", _tls_failed),
    _errno(errno.ECONNREFUSED, CONNECTION_REFUSED),
    _errno(errno.ECONNRESET, CONNECTION_RESET),
    _errno(errno.ECONNABORTED, CONNECTION_RESET),
    _errno(errno.EPIPE, CONNECTION_RESET),
    _errno(errno.ENETUNREACH, NETWORK_UNREACHABLE),
    _errno(errno.ENETDOWN, NETWORK_UNREACHABLE),
    _errno(errno.EHOSTUNREACH, HOST_UNREACHABLE),
    _errno(errno.EHOSTDOWN, HOST_UNREACHABLE),
    Rule(socket.gaierror, "network", _host_not_found),
    Rule(HeadTooLarge, "network", ANSWER_TOO_LARGE),
    Rule(ConnectionClosed, "network", CLOSED_BEFORE_ANSWER),
    Rule(ClosedDuringAnswer, "network", CLOSED_DURING_ANSWER),
    Rule(BadResponse, "network", INVALID_ANSWER),
    Rule(TimeoutError, "timeout", _timeout),
    # another errno names itself: "connection failed (EADDRNOTAVAIL)"
    Rule(OSError, "network", _other_errno, ANY_ERRNO),
    Rule(ConnectError, "network", CONNECTION_FAILED),
)


def describe(exc: BaseException, attempt: Attempt) -> tuple[ErrorClass, str]:
    """The error class and our text for an exception that ended an attempt."""
    chain = list(_chain(exc))[::-1]
    for rule in RULES:
        for found in chain:
            if isinstance(found, rule.kind) and _errno_matches(rule.errno, found):
                text = rule.text if isinstance(rule.text, str) else rule.text(found, attempt)
                return rule.error_class, text
    return "network", f"unexpected error ({type(exc).__name__})"


def _errno_matches(wanted: int | None, exc: BaseException) -> bool:
    if wanted is None:
        return True
    code = getattr(exc, "errno", None)
    return isinstance(code, int) and (code == wanted or (wanted == ANY_ERRNO and code > 0))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what it wraps: ConnectError's os_error, causes."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 10:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for name in ("certificate_error", "os_error"):
            inner = getattr(current, name, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        if current.__cause__ is not None:
            todo.append(current.__cause__)
