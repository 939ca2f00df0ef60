"""One readable line for an attempt that got no HTTP answer.

aiohttp's exception texts carry Python internals: the SSLContext's repr, the
ssl module's argument tuples, CPython source locations, and for a garbled
answer a repr of every byte received. The receiver controls some of that text,
and it goes to the attempt log, the API and the daemon's log, so it is rebuilt
here from the exceptions' fields and cut to one short line.
"""

from __future__ import annotations

import re
import ssl

import aiohttp

MAX_CHARS = 300
_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")
_SSL_TAG = re.compile(r"^\[SSL(?::\s*[A-Z0-9_]+)?\]\s*")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def one_line(text: str) -> str:
    """Printable ASCII on one line, at most MAX_CHARS."""
    text = _UNPRINTABLE.sub(" ", text).strip()
    text = re.sub(r"\s{2,}", " ", text)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."


def tls_error(exc: BaseException) -> str:
    """A TLS failure: the verification message, or the OpenSSL reason."""
    # aiohttp's wrapper subclasses ssl.CertificateError too: take what it wraps
    cert = getattr(exc, "certificate_error", exc)
    where = _where(exc)
    if isinstance(cert, ssl.SSLCertVerificationError) and hasattr(cert, "verify_message"):
        why = cert.verify_message or cert.reason or "certificate verify failed"
        return one_line(f"TLS error: certificate verify failed: {why}{where}")
    inner = getattr(exc, "os_error", exc)
    if isinstance(inner, ssl.SSLError) and hasattr(inner, "reason"):
        why = inner.reason or _SSL_TAG.sub("", _SSL_LOCATION.sub("", inner.strerror or ""))
        return one_line(f"TLS error: {why or type(inner).__name__}{where}")
    return one_line(f"TLS error: {_first_line(exc)}{where}")


def network_error(exc: BaseException) -> str:
    """A connection, protocol or payload failure."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return one_line(f"bad HTTP response: {_first_line(exc.message) or exc.status}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        why = os_error.strerror or _first_line(os_error) or type(os_error).__name__
        return one_line(f"connection failed: {exc.host}:{exc.port}: {why}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection failed: the server closed the connection without an answer"
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(f"connection failed: {exc.strerror}")
    return one_line(f"connection failed: {_first_line(exc) or type(exc).__name__}")


def _where(exc: BaseException) -> str:
    host, port = getattr(exc, "host", None), getattr(exc, "port", None)
    return f" ({host}:{port})" if host else ""


def _first_line(value: object) -> str:
    text = _SSL_LOCATION.sub("", str(value))
    return text.strip().splitlines()[0] if text.strip() else ""
