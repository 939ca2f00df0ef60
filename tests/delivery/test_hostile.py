"""Hostile receivers: each one costs a failed (or cut-short) attempt, never the daemon's health.

The receivers are hand-written asyncio servers on 127.0.0.1 (TLS from the test CA where
the misbehaviour comes after the handshake), because aiohttp cannot misbehave enough.
Every test also checks that /readyz stays 200 and that a healthy webhook is still served.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import trustme
from support import (
    Daemon,
    Receiver,
    assert_readable_error,
    attempt_log,
    ca_file,
    capture_outcomes,
    eventually,
    make_config,
    running_daemon,
)

from wahookd.models import Outcome

MiB = 1024 * 1024
HUGE = 50 * MiB
BAD_EVENT = {"event": "session.disconnected", "sessionId": "bad", "reason": "x"}
GOOD_EVENT = {"event": "session.disconnected", "sessionId": "good", "reason": "x"}

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[["RawServer", Reader, Writer], Awaitable[None]]


class RawServer:
    """A hand-written server on `host` (loopback), TLS when given a context; `handler` misbehaves.

    Every connection's task is tracked and its transport aborted at the end, so a test
    leaves no socket behind whatever the handler was doing.
    """

    def __init__(
        self, handler: Handler, ssl_context: ssl.SSLContext | None, host: str = "127.0.0.1"
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.host = host
        self.connections = 0  # accepted (after the TLS handshake, with TLS)
        self.finished = 0  # connections whose handler has ended
        self.sent = 0  # body bytes the handlers managed to write
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        """The https URL the daemon is given, whatever the server actually speaks."""
        return f"https://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            0,
            ssl=self.ssl_context,
            ssl_handshake_timeout=5.0 if self.ssl_context is not None else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the daemon hung up on us, which is the point
        except asyncio.CancelledError:
            pass  # the test is over; asyncio 3.11 would log a cancelled handler as an error
        finally:
            writer.transport.abort()
            self.finished += 1
            self._tasks.discard(task)


async def read_request(reader: Reader) -> bytes:
    """Read one HTTP/1.1 request head and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return head


def rst(writer: Writer) -> None:
    """Close with SO_LINGER 0: the kernel sends a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def tls_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate the daemon trusts for 127.0.0.1."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


# 64 KiB of body per write; the first KiB is recognisable in the attempt log
HEAD_KIB = b"0123456789abcdef" * 64
CHUNK = HEAD_KIB + b"x" * (64 * 1024 - len(HEAD_KIB))


async def huge_200(server: RawServer, reader: Reader, writer: Writer) -> None:
    """200 with a 50 MiB body, streamed as fast as the client reads it."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
    writer.write(b"Content-Length: %d\r\n\r\n" % HUGE)
    for _ in range(HUGE // len(CHUNK)):
        writer.write(CHUNK)
        await writer.drain()
        server.sent += len(CHUNK)


async def endless_chunked_500(server: RawServer, reader: Reader, writer: Writer) -> None:
    """500 with a chunked body that never ends (bounded here at 100 MiB)."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
    frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
    for _ in range(100 * MiB // len(CHUNK)):
        writer.write(frame)
        await writer.drain()
        server.sent += len(CHUNK)


async def trickle_body(server: RawServer, reader: Reader, writer: Writer) -> None:
    """A 200 head at once, then the body one byte per 100 ms (bounded at 60 s)."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    for _ in range(600):
        writer.write(b"x")
        await writer.drain()
        server.sent += 1
        await asyncio.sleep(0.1)


async def trickle_status_line(server: RawServer, reader: Reader, writer: Writer) -> None:
    """The status line and a header, one byte per 100 ms (bounded at 60 s)."""
    await read_request(reader)
    text = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 600
    for byte in text[:600]:
        writer.write(bytes([byte]))
        await writer.drain()
        server.sent += 1
        await asyncio.sleep(0.1)


async def reset_at_accept(server: RawServer, reader: Reader, writer: Writer) -> None:
    """Plain TCP: accept, then RST before the client's TLS handshake gets an answer."""
    rst(writer)


async def reset_after_request(server: RawServer, reader: Reader, writer: Writer) -> None:
    """TLS handshake, read the whole request, then RST instead of answering."""
    await read_request(reader)
    rst(writer)


async def garbage(server: RawServer, reader: Reader, writer: Writer) -> None:
    """Write 256 KiB of random bytes at whoever connects (then wait to be hung up on)."""
    if server.ssl_context is not None:
        await read_request(reader)
    noise = random.Random(4).randbytes(256 * 1024)
    writer.write(noise)
    await writer.drain()
    server.sent += len(noise)
    await asyncio.sleep(30)


async def silent(server: RawServer, reader: Reader, writer: Writer) -> None:
    """Read whatever arrives, never write a byte (bounded at 30 s)."""
    for _ in range(300):
        try:
            async with asyncio.timeout(0.1):
                if not await reader.read(65536):
                    return
        except TimeoutError:
            pass


# ------------------------------------------------------------------- the daemon side


@asynccontextmanager
async def daemon_with(
    tmp_path: Path, ca: trustme.CA, good: Receiver, bad_url: str, **delivery: Any
) -> AsyncIterator[tuple[Daemon, list[Outcome]]]:
    """A daemon with session "bad" -> the hostile URL and session "good" -> a healthy receiver."""
    settings: dict[str, Any] = {
        "timeout": "1s",
        "max_response": "64KiB",
        "retry_schedule": ["1h"],
    }
    settings.update(delivery)
    cfg = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), **settings)
    async with running_daemon(cfg) as d:
        outcomes = capture_outcomes(d)
        for session, url in (("bad", bad_url), ("good", good.url)):
            body = {"url": url, "events": ["*"]}
            status, answer = await d.call("PUT", f"/api/webhook/config/{session}", body)
            assert status == 200, answer
        yield d, outcomes


async def assert_healthy(d: Daemon, good: Receiver, within_s: float = 3.0) -> None:
    """/readyz answers 200 and a new event to the healthy webhook arrives promptly."""
    resp = await d.client.get("/readyz")
    assert resp.status == 200, await resp.text()
    before = len(good.requests)
    status, answer = await d.call("POST", "/api/events", GOOD_EVENT)
    assert status == 202 and answer["queued"] == 1, answer
    await good.wait_for(before + 1, timeout_s=within_s)


def bad_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.claimed.session_id == "bad"]


async def one_bad_attempt(d: Daemon, outcomes: list[Outcome], timeout_s: float = 8.0) -> Outcome:
    """Queue one event for the hostile webhook and return its first attempt's outcome."""
    status, _ = await d.call("POST", "/api/events", BAD_EVENT)
    assert status == 202
    await eventually(lambda: len(bad_outcomes(outcomes)) >= 1, timeout_s=timeout_s)
    return bad_outcomes(outcomes)[0]


# ----------------------------------------------------------------------- (1) huge bodies


async def test_huge_200_is_delivered_after_reading_max_response(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    # SPEC §5: a 2xx is delivered; the body is only read up to delivery.max_response
    async with (
        RawServer(huge_200, tls_context(ca)) as rx,
        daemon_with(tmp_path, ca, receiver, rx.url) as (d, outcomes),
    ):
        started = time.monotonic()
        outcome = await one_bad_attempt(d, outcomes)
        elapsed_s = time.monotonic() - started
        # the daemon hung up: the server's writes fail long before 50 MiB
        await eventually(lambda: rx.finished == 1, timeout_s=5)
        (row,) = await attempt_log(d, "bad")
        await assert_healthy(d, receiver)
    assert outcome.kind == "delivered" and outcome.result.error_class == "2xx"
    assert row["status_code"] == 200 and row["error"] is None and row["outcome"] == "delivered"
    assert row["response_body"] == HEAD_KIB.decode()  # the first KiB is kept
    assert elapsed_s < 3.0, elapsed_s
    assert rx.sent < HUGE / 2, rx.sent


async def test_endless_chunked_500_is_cut_and_retried(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    async with (
        RawServer(endless_chunked_500, tls_context(ca)) as rx,
        daemon_with(tmp_path, ca, receiver, rx.url, retry_schedule=["0.2s"]) as (d, outcomes),
    ):
        await d.call("POST", "/api/events", BAD_EVENT)
        await eventually(lambda: len(bad_outcomes(outcomes)) == 2, timeout_s=8)
        await eventually(lambda: rx.finished == 2, timeout_s=5)
        log = await attempt_log(d, "bad")
        await assert_healthy(d, receiver)
    assert [o.kind for o in bad_outcomes(outcomes)] == ["retry", "failed"]
    assert {o.result.error_class for o in bad_outcomes(outcomes)} == {"5xx"}
    for row in log:
        assert row["status_code"] == 500 and row["error"] == "HTTP 500"
        assert row["response_body"] == HEAD_KIB.decode()
        assert row["duration_ms"] < 3000, row
    assert rx.sent < 50 * MiB, rx.sent


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@asynccontextmanager
async def peak_rss() -> AsyncIterator[list[int]]:
    """Sample the RSS every 10 ms while the block runs; yields [baseline, peak] (filled in)."""
    samples = [rss_bytes()]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(rss_bytes())
            try:
                async with asyncio.timeout(0.01):
                    await stop.wait()
            except TimeoutError:
                pass

    result: list[int] = []
    task = asyncio.create_task(sample())
    try:
        yield result
    finally:
        stop.set()
        await task
        samples.append(rss_bytes())
        result.extend([samples[0], max(samples)])


# The 50 MiB server for the memory test runs in its own process: in this one, asyncio's
# server-side TLS write buffers would add their own megabytes to the RSS being measured.
HUGE_SERVER = """
import asyncio, ssl, sys
CHUNK = b"0123456789abcdef" * 4096
async def serve(reader, writer):
    try:
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\\r\\n")
                  if line.lower().startswith(b"content-length:")]
        await reader.readexactly(length[0] if length else 0)
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % (800 * len(CHUNK)))
        for _ in range(800):
            writer.write(CHUNK)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()
async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[1])
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


@asynccontextmanager
async def huge_server_process(ca: trustme.CA, directory: Path) -> AsyncIterator[str]:
    """Run HUGE_SERVER (200 with a 50 MiB body) in a child process; yields its URL."""
    pem = directory / "huge-server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HUGE_SERVER, str(pem), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            port = int(await proc.stdout.readline())
        yield f"https://127.0.0.1:{port}/hook"
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
async def test_memory_stays_flat_under_huge_responses(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    # 20 attempts that are each offered 50 MiB: reading whole bodies would add >= 50 MiB
    # (4 at a time: 200 MiB; measured 300 MiB); capped reads add next to nothing
    four_at_a_time = {"timeout": "5s", "per_webhook_concurrency": 4}
    async with (
        huge_server_process(ca, tmp_path) as url,
        daemon_with(tmp_path, ca, receiver, url, **four_at_a_time) as (d, outcomes),
    ):
        # warm up at full concurrency: pools, TLS, buffers, the database
        warm_up = [{**BAD_EVENT, "reason": f"w{i}"} for i in range(4)]
        await d.call("POST", "/api/events", {"events": warm_up})
        await eventually(lambda: len(bad_outcomes(outcomes)) == 4, timeout_s=8)
        started = time.monotonic()
        async with peak_rss() as rss:
            events = [{**BAD_EVENT, "reason": f"r{i}"} for i in range(20)]
            status, _ = await d.call("POST", "/api/events", {"events": events})
            assert status == 202
            await eventually(lambda: len(bad_outcomes(outcomes)) == 24, timeout_s=8)
        elapsed_s = time.monotonic() - started
        await assert_healthy(d, receiver)
    baseline, peak = rss
    assert peak - baseline < 30 * MiB, f"RSS grew by {(peak - baseline) / MiB:.1f} MiB"
    assert {o.kind for o in bad_outcomes(outcomes)} == {"delivered"}
    assert {o.result.response_body for o in bad_outcomes(outcomes)} == {HEAD_KIB.decode()}
    assert elapsed_s < 6.0, elapsed_s


# ---------------------------------------------------------- (2) trickle, (5) never answers


@pytest.mark.parametrize(
    ("handler", "tls"),
    [
        pytest.param(trickle_body, True, id="trickle-body"),
        pytest.param(trickle_status_line, True, id="trickle-status-line"),
        pytest.param(silent, True, id="never-answers"),
        pytest.param(silent, False, id="never-answers-tls-handshake"),
    ],
)
async def test_whole_attempt_timeout_ends_it(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, handler: Handler, tls: bool
) -> None:
    async with (
        RawServer(handler, tls_context(ca) if tls else None) as rx,
        daemon_with(tmp_path, ca, receiver, rx.url) as (d, outcomes),
    ):
        await d.call("POST", "/api/events", BAD_EVENT)
        await eventually(lambda: rx.connections == 1, timeout_s=3)
        # while the hostile attempt hangs, the daemon serves everyone else
        await assert_healthy(d, receiver)
        assert not bad_outcomes(outcomes), "the healthy delivery waited for the hostile one"
        await eventually(lambda: len(bad_outcomes(outcomes)) == 1, timeout_s=5)
        # the daemon closed its end: the server notices (a failed write or EOF)
        await eventually(lambda: rx.finished == 1, timeout_s=3)
        (row,) = await attempt_log(d, "bad")
        await assert_healthy(d, receiver)
    (outcome,) = bad_outcomes(outcomes)
    assert outcome.result.error_class == "timeout" and outcome.kind == "retry"
    assert row["error"] == "timeout after 1s" and row["status_code"] is None
    assert 900 <= row["duration_ms"] < 2500, row


# ------------------------------------------------------------------------ (3) resets


@pytest.mark.parametrize(
    ("handler", "tls"),
    [
        pytest.param(reset_at_accept, False, id="reset-during-handshake"),
        pytest.param(reset_after_request, True, id="reset-instead-of-answer"),
    ],
)
async def test_connection_reset_is_a_network_failure(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, handler: Handler, tls: bool
) -> None:
    async with (
        RawServer(handler, tls_context(ca) if tls else None) as rx,
        daemon_with(tmp_path, ca, receiver, rx.url) as (d, outcomes),
    ):
        outcome = await one_bad_attempt(d, outcomes)
        (row,) = await attempt_log(d, "bad")
        await assert_healthy(d, receiver)
    assert outcome.result.error_class == "network" and outcome.kind == "retry"
    assert row["error"] == "connection reset", row
    assert row["status_code"] is None and row["duration_ms"] < 1000


# ------------------------------------------------------------------------ (4) garbage


@pytest.mark.parametrize(
    ("tls", "error_class", "says"),
    [
        pytest.param(False, "tls", "TLS: handshake failed", id="garbage-instead-of-tls"),
        pytest.param(
            True, "network", "invalid HTTP answer from receiver", id="garbage-instead-of-http"
        ),
    ],
)
async def test_garbage_is_a_failed_attempt(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, tls: bool, error_class: str, says: str
) -> None:
    async with (
        RawServer(garbage, tls_context(ca) if tls else None) as rx,
        daemon_with(tmp_path, ca, receiver, rx.url) as (d, outcomes),
    ):
        outcome = await one_bad_attempt(d, outcomes)
        (row,) = await attempt_log(d, "bad")
        await assert_healthy(d, receiver)
    assert outcome.result.error_class == error_class and outcome.kind == "retry"
    assert row["error"].startswith(says), row["error"][:300]
    assert row["status_code"] is None and row["duration_ms"] < 1000


# -------------------------------------------------------- what the attempt log says

CONTEXT_REPR = (
    "sender.post() logs str(aiohttp.ClientConnectorError), which embeds the repr of the "
    "ssl= argument: 'Cannot connect to host 127.0.0.1:PORT ssl:<ssl.SSLContext object at 0x...>'"
)


@pytest.mark.parametrize(
    ("handler", "tls"),
    [
        pytest.param(reset_after_request, True, id="reset-instead-of-answer"),
        pytest.param(
            reset_at_accept,
            False,
            id="reset-during-handshake",
        ),
        pytest.param(
            garbage,
            False,
            id="garbage-instead-of-tls",
        ),
        pytest.param(
            garbage,
            True,
            id="garbage-instead-of-http",
        ),
    ],
)
async def test_the_attempt_error_is_one_clear_line(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, handler: Handler, tls: bool
) -> None:
    # (the timeouts' "timeout after 1s" is checked exactly above)
    async with (
        RawServer(handler, tls_context(ca) if tls else None) as rx,
        daemon_with(tmp_path, ca, receiver, rx.url) as (d, outcomes),
    ):
        await one_bad_attempt(d, outcomes)
        (row,) = await attempt_log(d, "bad")
    assert_readable_error(row["error"])
