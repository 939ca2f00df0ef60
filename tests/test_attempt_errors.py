"""Attempt error texts: one short printable line, whatever the receiver sent."""

from __future__ import annotations

import aiohttp
from hypothesis import given
from hypothesis import strategies as st

from wahookd.attempt_errors import MAX_CHARS, network_error, one_line


@given(st.text())
def test_one_line_is_short_printable_and_single(text: str) -> None:
    line = one_line(text)
    assert len(line) <= MAX_CHARS
    assert "\n" not in line and all(" " <= ch <= "~" for ch in line)


def test_a_garbled_status_line_is_not_echoed() -> None:
    garbage = "Bad status line:\n  Expected HTTP/...:\n\n  b'" + "\\x16" * 50_000 + "'"
    exc = aiohttp.ClientResponseError(None, (), status=400, message=garbage)  # type: ignore[arg-type]
    assert network_error(exc) == "bad HTTP response: Bad status line:"


def test_a_reset_names_the_cause() -> None:
    assert network_error(ConnectionResetError(104, "Connection reset by peer")) == (
        "connection failed: Connection reset by peer"
    )
    assert "closed the connection" in network_error(aiohttp.ServerDisconnectedError())
