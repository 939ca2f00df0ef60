"""Every attempt failure made for real on 127.0.0.1, and the text it must carry (issue 10).

A closed port, a silent listener, receivers that hang up, reset, answer 503, garbage or a
head too large, a lookup that finds nothing: each attempt's error is checked, exactly, in
the three places an operator reads it: the attempt log, `POST /api/webhook/test`'s
`error`, and the daemon's log line (text and JSON). The table behind the texts is
tested on built exceptions in test_attempt_errors.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp.abc import AbstractResolver, ResolveResult
from support import (
    attempt_log,
    ca_file,
    capture_outcomes,
    eventually,
    make_config,
    running_daemon,
)

from wahookd.delivery.sender import Sender
from wahookd.logs import JsonFormatter, TextFormatter

EVENT = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}
# what must never reach an error text: Python's exception texts and reprs
INTERNALS = ("Errno", "Connect call failed", "('127.0.0.1'", "('::1'", "object at 0x", "b'")


def assert_ours(text: str) -> None:
    """Not a Python exception text: no errno prefix, no address tuple, no repr; one line."""
    for internal in INTERNALS:
        assert internal not in text, f"{internal!r} in {text!r}"
    assert "\n" not in text and len(text) <= 300, text


Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]


async def read_request(reader: Reader) -> None:
    """Read one HTTP/1.1 request head and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


def answering(raw: bytes, *, then: str = "close", read: bool = True) -> Handler:
    """A handler that reads the request, writes `raw`, then closes, resets or waits."""

    async def handler(reader: Reader, writer: Writer) -> None:
        if read:
            await read_request(reader)
        writer.write(raw)
        await writer.drain()
        if then == "wait":
            await asyncio.sleep(3600)
        elif then == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.transport.abort()

    return handler


async def silent(reader: Reader, writer: Writer) -> None:
    """Accept and read, never answer."""
    await reader.read(65536)
    await asyncio.sleep(3600)


@asynccontextmanager
async def raw_server(handler: Handler, ctx: ssl.SSLContext | None) -> AsyncIterator[int]:
    """A hand-written receiver on 127.0.0.1; yields its port."""
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the daemon hung up, or the test is over
        finally:
            writer.transport.abort()
            tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


@dataclass(frozen=True)
class Case:
    """A misbehaving receiver and the exact text its attempts must carry."""

    handler: Handler | None  # None: nobody listens
    tls: bool
    error_class: str
    error: str
    status: int | None = None


CASES = {
    "closed-port": Case(None, False, "network", "connection refused"),
    "never-answers": Case(silent, False, "timeout", "timeout after 300ms"),
    "never-answers-tls-handshake": Case(silent, False, "timeout", "timeout after 300ms"),
    "answers-503": Case(
        answering(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"),
        True,
        "5xx",
        "HTTP 503",
        503,
    ),
    "closes-before-the-answer": Case(
        answering(b""), True, "network", "connection closed before the answer"
    ),
    "closes-mid-answer": Case(
        answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
        True,
        "network",
        "connection closed during the answer",
    ),
    "resets-instead-of-answering": Case(
        answering(b"", then="reset"), True, "network", "connection reset"
    ),
    "garbage-instead-of-http": Case(
        answering(b"\x16\x03\x01garbage\x00\xff('127.0.0.1', 1)\r\n\r\n", then="wait"),
        False,
        "network",
        "invalid HTTP answer from receiver",
    ),
    "huge-header": Case(
        answering(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", then="wait"),
        False,
        "network",
        "answer too large",
    ),
    "garbage-instead-of-tls": Case(
        answering(b"HTTP/1.1 200 OK\r\n\r\n", read=False),
        False,
        "tls",
        "TLS: handshake failed (wrong version number)",
    ),
}


async def _url(case: Case, name: str, port: int) -> str:
    # the TLS-handshake and garbage-instead-of-tls cases speak plain TCP to an https URL
    https = case.tls or name in ("never-answers-tls-handshake", "garbage-instead-of-tls")
    return f"{'https' if https else 'http'}://127.0.0.1:{port}/hook"


@asynccontextmanager
async def receiver_for(case: Case, ca: trustme.CA) -> AsyncIterator[int]:
    if case.handler is None:
        yield closed_port()
        return
    async with raw_server(case.handler, server_tls(ca) if case.tls else None) as port:
        yield port


@pytest.mark.parametrize("name", list(CASES))
async def test_the_attempt_names_why_it_failed(
    tmp_path: Path, ca: trustme.CA, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    case = CASES[name]
    caplog.set_level(logging.INFO, logger="wahookd.scheduler")
    config = make_config(
        tmp_path,
        timeout="300ms",
        retry_schedule=["1h"],
        require_https=False,
        ca_file=str(ca_file(ca, tmp_path)),
    )
    async with receiver_for(case, ca) as port, running_daemon(config) as d:
        url = await _url(case, name, port)
        outcomes = capture_outcomes(d)
        status, answer = await d.call(
            "PUT", "/api/webhook/config/s1", {"url": url, "events": ["*"]}
        )
        assert status == 200, answer
        status, answer = await d.call("POST", "/api/events", EVENT)
        assert status == 202 and answer["queued"] == 1, answer
        await eventually(lambda: len(outcomes) == 1)
        (row,) = await attempt_log(d)
        _, tested = await d.call("POST", "/api/webhook/test", {"url": url})
    (outcome,) = outcomes
    assert outcome.result.error_class == case.error_class
    assert (row["error"], row["status_code"]) == (case.error, case.status)
    assert (tested.get("error"), tested["statusCode"]) == (case.error, case.status)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("attempt ")]
    text = TextFormatter().format(record)
    assert f" s1 session.disconnected: {case.error} in " in text, text
    data = json.loads(JsonFormatter().format(record))
    assert data["error"] == case.error and data["error_class"] == case.error_class, data
    assert f": {case.error} in " in data["message"], data
    for error in (row["error"], tested["error"], text):
        assert_ours(error)


# ---------------------------------------------------------------- DNS, through aiohttp


class NoSuchHost(AbstractResolver):
    """A resolver that finds nothing, as getaddrinfo does for an unknown name."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def test_an_unknown_host_names_the_host(tmp_path: Path) -> None:
    config = make_config(tmp_path, allow_networks=[])
    sender = Sender(config.delivery, resolver=NoSuchHost())
    await sender.start()
    try:
        result = await sender.post("https://nowhere.example/hook", b"{}", {}, 0.0)
    finally:
        await sender.close()
    assert (result.error_class, result.error) == (
        "network",
        "host not found (DNS: nowhere.example)",
    )
