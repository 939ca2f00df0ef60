"""Malformed HTTP is the client's mistake: one info line, no traceback, the error envelope.

Raw bytes over a real socket to the real daemon (a subprocess: its AppRunner, its logging
setup, uvloop), whose stderr is the log under test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from daemon_proc import DaemonProcess, free_port
from support import eventually

SECRET = "k" * 64
KiB = 1024


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    """The real daemon on a free loopback port."""
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp_path / "data" / "wahookd.db"}"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
    )
    proc = DaemonProcess(config, port, tmp_path)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


async def exchange(daemon: DaemonProcess, data: bytes) -> tuple[int, dict[str, object]]:
    """Send raw bytes, read the answer to EOF; returns (status, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *headers = head.decode("latin-1").split("\r\n")
    assert "content-type: application/json; charset=utf-8" in [h.lower() for h in headers]
    return int(status_line.split()[1]), json.loads(body)


async def stopped_log(daemon: DaemonProcess) -> list[str]:
    """Stop the daemon (it must still be healthy first); its log lines after startup."""
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.base}/healthz") as resp:
        assert resp.status == 200
    assert await daemon.stop() == 0
    lines = daemon.log().splitlines()
    assert not any("Traceback" in line for line in lines), daemon.log()
    assert not any(" ERROR " in line or " CRITICAL " in line for line in lines), daemon.log()
    return [
        line
        for line in lines
        if not any(
            startup in line for startup in ("listening on", "mint a token", "threads on CPU")
        )
        and "stop" not in line
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "Invalid header value char"),
        (
            b"POST /api/events HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            "Duplicate Content-Length",
        ),
        (
            b"GET /" + b"a" * (100 * KiB) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "request line or header field too long",
        ),
    ],
    ids=["nul-in-header", "duplicate-content-length", "100KiB-request-line"],
)
async def test_unparseable_requests_get_the_envelope_and_one_info_line(
    daemon: DaemonProcess, request_bytes: bytes, reason: str
) -> None:
    status, body = await exchange(daemon, request_bytes)
    assert status == 400
    assert body == {
        "success": False,
        "error": {"code": "validation_error", "message": f"malformed HTTP request: {reason}"},
    }
    lines = await stopped_log(daemon)
    assert len(lines) == 1, lines
    assert f" INFO wahookd.http: refused malformed HTTP from 127.0.0.1: {reason} (400)" in lines[0]
    assert "aaaa" not in daemon.log()  # what the client sent is not echoed


@pytest.mark.slow
@pytest.mark.parametrize("hang_up", ["fin", "rst"])
async def test_a_client_gone_mid_body_costs_one_info_line(
    daemon: DaemonProcess, hang_up: str
) -> None:
    token = jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b'Content-Length: 1000\r\n\r\n{"event": "session.disconnected", '
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body
    if hang_up == "fin":
        writer.close()
    else:
        writer.transport.abort()
    await eventually(lambda: "closed the connection" in daemon.log())
    lines = await stopped_log(daemon)
    assert len(lines) == 1, lines
    assert (
        " INFO wahookd.api: client 127.0.0.1 closed the connection during POST /api/events"
        in lines[0]
    )
    assert token not in daemon.log()
