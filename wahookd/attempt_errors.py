"""One readable line for an attempt that got no HTTP answer.

Exception texts carry Python internals: the ssl module's argument tuples,
CPython source locations, and for a garbled answer the parser's view of the
bytes received. The receiver controls some of that text,
and it goes to the attempt log, the API and the daemon's log, so it is rebuilt
here from the exceptions' fields and cut to one short line.
"""

from __future__ import annotations

import re
import ssl

from .http1 import BadResponse, ConnectionClosed
from .pool import ConnectError

MAX_CHARS = 300
_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")
_SSL_TAG = re.compile(r"^\[SSL(?::\s*[A-Z0-9_]+)?\]\s*")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def one_line(text: str) -> str:
    """Printable ASCII on one line, at most MAX_CHARS."""
    text = _UNPRINTABLE.sub(" ", text).strip()
    text = re.sub(r"\s{2,}", " ", text)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."


def tls_error(exc: ssl.SSLError, host: str, port: int) -> str:
    """A TLS failure: the verification message, or the OpenSSL reason."""
    where = f" ({host}:{port})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
        why = why or "certificate verify failed"
        return one_line(f"TLS error: certificate verify failed: {why}{where}")
    # a real SSLError has the OpenSSL reason; one built by hand only its text
    why = getattr(exc, "reason", None)
    why = why or _SSL_TAG.sub("", _SSL_LOCATION.sub("", exc.strerror or ""))
    return one_line(f"TLS error: {why or type(exc).__name__}{where}")


def network_error(exc: BaseException) -> str:
    """A connection, protocol or payload failure."""
    if isinstance(exc, BadResponse):
        return one_line(f"bad HTTP response: {_first_line(exc) or 'malformed'}")
    if isinstance(exc, ConnectError):
        os_error = exc.os_error
        strerror = getattr(os_error, "strerror", None)
        why = strerror or _first_line(os_error) or type(os_error).__name__
        return one_line(f"connection failed: {exc.host}:{exc.port}: {why}")
    if isinstance(exc, ConnectionClosed):
        return "connection failed: the server closed the connection without an answer"
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(f"connection failed: {exc.strerror}")
    return one_line(f"connection failed: {_first_line(exc) or type(exc).__name__}")


def _first_line(value: object) -> str:
    text = _SSL_LOCATION.sub("", str(value))
    return text.strip().splitlines()[0] if text.strip() else ""
