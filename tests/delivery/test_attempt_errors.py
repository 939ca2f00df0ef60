"""Attempt error texts: ours, short and stable, whatever failed (issue 10, item 6).

The table in attempt_errors.py on built exceptions, as aiohttp raises them; the same
failures made for real on 127.0.0.1 are in test_attempt_failures.py.
"""

from __future__ import annotations

import errno
import socket
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from hypothesis import given
from hypothesis import strategies as st

from delivery.test_attempt_failures import assert_ours
from wahookd.delivery.attempt_errors import MAX_CHARS, Attempt, describe, one_line
from wahookd.delivery.netpolicy import RefusedAddress

ATTEMPT = Attempt("receiver.test", 5.0)
KEY = ConnectionKey("receiver.test", 443, True, True, None, None, None)


@given(st.text())
def test_one_line_is_short_printable_and_single(text: str) -> None:
    line = one_line(text)
    assert len(line) <= MAX_CHARS
    assert "\n" not in line and all(" " <= ch <= "~" for ch in line)


# ------------------------------------------------------------------- the table itself


def _wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def _bad_answer(cause: HttpProcessingError) -> aiohttp.ClientResponseError:
    # aiohttp re-raises a parser error as ClientResponseError, the receiver's bytes in it
    exc = aiohttp.ClientResponseError(None, (), status=400, message=cause.message)  # type: ignore[arg-type]
    return _wrapped(exc, _wrapped(HttpProcessingError(code=400, message=cause.message), cause))  # type: ignore[return-value]


TABLE = [
    pytest.param(
        aiohttp.ClientConnectorError(
            KEY, ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
        ),
        ("network", "connection refused"),
        id="refused",
    ),
    pytest.param(
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        ("network", "connection reset"),
        id="reset-after-connect",
    ),
    pytest.param(
        aiohttp.ClientConnectorError(KEY, OSError(errno.ENETUNREACH, "Network is unreachable")),
        ("network", "network unreachable"),
        id="network-unreachable",
    ),
    pytest.param(
        aiohttp.ClientConnectorError(KEY, OSError(errno.EADDRNOTAVAIL, "Cannot assign")),
        ("network", "connection failed (EADDRNOTAVAIL)"),
        id="other-errno",
    ),
    pytest.param(
        aiohttp.ClientConnectorDNSError(
            KEY, socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        ),
        ("network", "host not found (DNS: receiver.test)"),
        id="dns",
    ),
    pytest.param(
        aiohttp.ClientConnectorDNSError(
            KEY, RefusedAddress("receiver.test resolves only to addresses that are not public")
        ),
        (
            "refused",
            "refused by network policy: receiver.test resolves only to addresses that are"
            " not public",
        ),
        id="policy",
    ),
    pytest.param(
        aiohttp.ServerDisconnectedError(),
        ("network", "connection closed before the answer"),
        id="closed-before-answer",
    ),
    pytest.param(
        aiohttp.ClientPayloadError("Response payload is not completed: <ContentLengthError>"),
        ("network", "connection closed during the answer"),
        id="closed-during-answer",
    ),
    pytest.param(
        _bad_answer(HttpProcessingError(code=400, message="Bad status line 'b\\x16\\x03'")),
        ("network", "invalid HTTP answer from receiver"),
        id="invalid-answer",
    ),
    pytest.param(
        _bad_answer(LineTooLong(b"X-Big: aaaa", 8190)),
        ("network", "answer too large"),
        id="answer-too-large",
    ),
    pytest.param(
        aiohttp.ClientConnectorSSLError(KEY, _wrapped(ssl.SSLError(1, "x"), ValueError())),
        ("tls", "TLS: handshake failed"),
        id="tls-handshake",
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
