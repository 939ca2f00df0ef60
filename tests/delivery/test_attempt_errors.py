"""Attempt error texts: ours, short and stable, whatever failed (issue 10, item 6).

The table in attempt_errors.py on built exceptions, as the sender's HTTP/1.1 client
(http1.py, pool.py) raises them; the same failures made for real on 127.0.0.1 are in
test_attempt_failures.py, test_hostile.py and test_http1.py.
"""

from __future__ import annotations

import errno
import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.test_attempt_failures import assert_ours
from wahookd.delivery.attempt_errors import MAX_CHARS, Attempt, describe, one_line
from wahookd.delivery.headers import HeaderInjection
from wahookd.delivery.http1 import BadResponse, ClosedDuringAnswer, ConnectionClosed, HeadTooLarge
from wahookd.delivery.netpolicy import RefusedAddress
from wahookd.delivery.pool import ConnectError, HandshakeError

ATTEMPT = Attempt("receiver.test", 5.0)


@given(st.text())
def test_one_line_is_short_printable_and_single(text: str) -> None:
    line = one_line(text)
    assert len(line) <= MAX_CHARS
    assert "\n" not in line and all(" " <= ch <= "~" for ch in line)


# ------------------------------------------------------------------- the table itself


def _wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def _connect_error(os_error: BaseException, cls: type[ConnectError] = ConnectError) -> ConnectError:
    # as pool.py raises it: the cause wrapped, and chained
    return _wrapped(cls("receiver.test", 443, os_error), os_error)  # type: ignore[return-value]


def _verify_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] (_ssl.c:1006)")
    exc.verify_code = 10
    exc.verify_message = "certificate has expired"
    return exc


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()} (_ssl.c:1006)")
    exc.reason = reason
    return exc


TABLE = [
    pytest.param(
        _connect_error(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")),
        ("network", "connection refused"),
        id="refused",
    ),
    pytest.param(
        ConnectionResetError(104, "Connection reset by peer"),
        ("network", "connection reset"),
        id="reset-after-connect",
    ),
    pytest.param(
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        ("network", "connection reset"),
        id="broken-pipe",
    ),
    pytest.param(
        _connect_error(OSError(errno.ENETUNREACH, "Network is unreachable")),
        ("network", "network unreachable"),
        id="network-unreachable",
    ),
    pytest.param(
        _connect_error(OSError(errno.EADDRNOTAVAIL, "Cannot assign")),
        ("network", "connection failed (EADDRNOTAVAIL)"),
        id="other-errno",
    ),
    pytest.param(
        _connect_error(OSError("Multiple exceptions: a, b")),
        ("network", "connection failed"),
        id="connect-without-errno",
    ),
    pytest.param(
        _connect_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
        ("network", "host not found (DNS: receiver.test)"),
        id="dns",
    ),
    pytest.param(
        RefusedAddress("receiver.test resolves only to addresses that are not public"),
        (
            "refused",
            "refused by network policy: receiver.test resolves only to addresses that are"
            " not public",
        ),
        id="policy",
    ),
    pytest.param(
        HeaderInjection("header 'X-Bad' contains CR, LF or NUL"),
        ("refused", "header 'X-Bad' contains CR, LF or NUL"),
        id="header-injection",
    ),
    pytest.param(
        ConnectionClosed("the server closed the connection without an answer"),
        ("network", "connection closed before the answer"),
        id="closed-before-answer",
    ),
    pytest.param(
        ClosedDuringAnswer("the server closed the connection mid-answer"),
        ("network", "connection closed during the answer"),
        id="closed-during-answer",
    ),
    pytest.param(
        BadResponse("Bad status line 'b\\x16\\x03'"),
        ("network", "invalid HTTP answer from receiver"),
        id="invalid-answer",
    ),
    pytest.param(
        HeadTooLarge("response head larger than 64 KiB"),
        ("network", "answer too large"),
        id="answer-too-large",
    ),
    pytest.param(
        _connect_error(_ssl_error("WRONG_VERSION_NUMBER"), HandshakeError),
        ("tls", "TLS: handshake failed (wrong version number)"),
        id="tls-handshake",
    ),
    pytest.param(
        _connect_error(_verify_error(), HandshakeError),
        ("tls", "TLS: certificate verify failed (certificate expired)"),
        id="tls-verify",
    ),
    pytest.param(
        _ssl_error("DECRYPTION_FAILED_OR_BAD_RECORD_MAC"),
        ("tls", "TLS: connection failed (decryption failed or bad record mac)"),
        id="tls-after-handshake",
    ),
    pytest.param(TimeoutError(), ("timeout", "timeout after 5s"), id="timeout"),
    pytest.param(
        ValueError("secret-token in https://user:pw@example.com/"),
        ("network", "unexpected error (ValueError)"),
        id="anything-else",
    ),
]


@pytest.mark.parametrize(("exc", "expected"), TABLE)
def test_each_failure_has_one_text_of_ours(exc: BaseException, expected: tuple[str, str]) -> None:
    assert describe(exc, ATTEMPT) == expected
    assert_ours(expected[1])


def test_the_timeout_reads_like_the_config() -> None:
    for timeout_s, text in [(0.25, "250ms"), (30.0, "30s"), (90.0, "90s"), (120.0, "2m")]:
        assert describe(TimeoutError(), Attempt("x", timeout_s))[1] == f"timeout after {text}"
