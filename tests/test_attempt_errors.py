"""Attempt error texts: one short printable line, whatever the receiver sent."""

from __future__ import annotations

import ssl

from hypothesis import given
from hypothesis import strategies as st

from wahookd.attempt_errors import MAX_CHARS, network_error, one_line, tls_error
from wahookd.http1 import BadResponse, ConnectionClosed
from wahookd.pool import ConnectError


@given(st.text())
def test_one_line_is_short_printable_and_single(text: str) -> None:
    line = one_line(text)
    assert len(line) <= MAX_CHARS
    assert "\n" not in line and all(" " <= ch <= "~" for ch in line)


def test_a_garbled_status_line_is_not_echoed() -> None:
    garbage = "Bad status line:\n  Expected HTTP/...:\n\n  b'" + "\\x16" * 50_000 + "'"
    assert network_error(BadResponse(garbage)) == "bad HTTP response: Bad status line:"


def test_a_reset_names_the_cause() -> None:
    assert network_error(ConnectionResetError(104, "Connection reset by peer")) == (
        "connection failed: Connection reset by peer"
    )
    assert "closed the connection" in network_error(ConnectionClosed("gone"))


def test_a_failed_connect_names_host_port_and_cause() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert network_error(ConnectError("127.0.0.3", 8443, refused)) == (
        "connection failed: 127.0.0.3:8443: Connection refused"
    )


def test_tls_errors_name_the_reason_and_the_target() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] (_ssl.c:1006)")
    verify.verify_message = "certificate has expired"
    assert tls_error(verify, "example.com", 443) == (
        "TLS error: certificate verify failed: certificate has expired (example.com:443)"
    )
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    assert tls_error(wrong, "127.0.0.1", 8443) == (
        "TLS error: wrong version number (127.0.0.1:8443)"
    )
