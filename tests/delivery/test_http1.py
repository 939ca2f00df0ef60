"""The sender's HTTP/1.1 client (http1.py) and keep-alive pool (pool.py) on real sockets.

The receivers are hand-written asyncio servers on 127.0.0.1 (::1 for the IPv6 case; TLS from
the test CA where it matters) that answer with exact bytes and record what arrives. Every
test here runs on both event loops (conftest.py): the daemon runs on uvloop, whose
transports behave differently from asyncio's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiohttp.resolver import DefaultResolver
from support import attempt_log, ca_file, capture_outcomes, eventually, make_config, running_daemon

from delivery.test_hostile import RawServer, Reader, Writer, rst, tls_context
from wahookd.config import DeliveryConfig
from wahookd.delivery import sender as sender_module
from wahookd.delivery.headers import USER_AGENT
from wahookd.delivery.http1 import MAX_HEAD_BYTES, Http1Connection
from wahookd.delivery.pool import ConnectionPool, Origin
from wahookd.delivery.sender import RESPONSE_KEEP_BYTES, Sender
from wahookd.models import AttemptResult, Claimed, Webhook

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BODY = b'{"event":"message.received"}'
EVENT = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}


# ------------------------------------------------------------------------ the receiver


@dataclass(frozen=True)
class Request:
    """One request as the server read it off the wire."""

    connection: int  # the server connection it came on, from 1
    head: bytes  # request line and headers, with the blank line
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header line in order, names lower-cased."""
        lines = self.head.split(b"\r\n")[1:-2]
        pairs = [line.decode("latin-1").partition(":") for line in lines]
        return [(name.lower(), value.strip()) for name, _, value in pairs]


@dataclass(frozen=True)
class Answer:
    """What the server writes for one request: `pieces` 10 ms apart, then `then`."""

    pieces: tuple[bytes, ...]
    then: Literal["wait", "close", "rst"] = "wait"  # after it: the next request, FIN or RST
    out_of_turn: bytes = b""  # written 50 ms after the answer, with no request pending


class Script:
    """A RawServer handler: request n gets answer n (the last repeats); records requests."""

    def __init__(self, *answers: Answer | bytes) -> None:
        self.answers = [a if isinstance(a, Answer) else Answer((a,)) for a in answers]
        self.requests: list[Request] = []

    async def __call__(self, server: RawServer, reader: Reader, writer: Writer) -> None:
        connection = server.connections
        for _ in range(50):  # no test sends more; the client's EOF ends it (IncompleteReadError)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(v) for n, v in Request(0, head, b"").headers if n == "content-length"), 0
            )
            self.requests.append(Request(connection, head, await reader.readexactly(length)))
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            for i, piece in enumerate(answer.pieces):
                if i:
                    await asyncio.sleep(0.01)
                writer.write(piece)
                await writer.drain()
                server.sent += len(piece)
            if answer.then == "close":
                writer.close()
                await writer.wait_closed()
                return
            if answer.then == "rst":
                rst(writer)
                return
            if answer.out_of_turn:
                await asyncio.sleep(0.05)
                writer.write(answer.out_of_turn)


def url_of(rx: RawServer, path: str = "/hook") -> str:
    scheme = "https" if rx.ssl_context is not None else "http"
    host = f"[{rx.host}]" if ":" in rx.host else rx.host
    return f"{scheme}://{host}:{rx.port}{path}"


# -------------------------------------------------------------------------- the sender


@asynccontextmanager
async def started_sender(tmp_path: Path, ca: trustme.CA, **delivery: Any) -> AsyncIterator[Sender]:
    """A Sender that may send to loopback over http, trusting the test CA."""
    settings: dict[str, Any] = {
        "timeout_s": 2.0,
        "require_https": False,
        "allow_networks": LOOPBACK,
        "ca_file": ca_file(ca, tmp_path),
    }
    settings.update(delivery)
    sender = Sender(DeliveryConfig(**settings))
    await sender.start()
    try:
        yield sender
    finally:
        await sender.close()


@pytest.fixture
async def sender(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[Sender]:
    async with started_sender(tmp_path, ca) as s:
        yield s


WEBHOOK = Webhook(
    id=1,
    kind="session",
    session="s1",
    url="",
    events=("*",),
    secret="whsec_test",
    headers=(),
    is_active=True,
    created_at=0.0,
    updated_at=0.0,
)


async def attempt(
    sender: Sender, url: str, headers: tuple[tuple[str, str], ...] = (), n: int = 1
) -> AttemptResult:
    """One Sender.attempt of a small event to url."""
    hook = dataclasses.replace(WEBHOOK, url=url, headers=headers)
    claimed = Claimed(n, f"msg_{n}", 1, "s1", "message.received", 1, BODY)
    return await sender.attempt(hook, claimed, time.time())


def idle_connections(sender: Sender) -> list[Http1Connection]:
    assert sender._pool is not None
    return [conn for conns in sender._pool._idle.values() for conn, _ in conns]


async def test_runs_on_the_loop_its_id_names(request: pytest.FixtureRequest) -> None:
    # conftest.py's loop factories: "[uvloop]" must really be uvloop
    loop_module = type(asyncio.get_running_loop()).__module__.split(".")[0]
    assert loop_module == ("uvloop" if "[uvloop" in request.node.name else "asyncio")


# ---------------------------------------------------------------------------- keep-alive


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_sequential_attempts_share_one_connection(
    sender: Sender, ca: trustme.CA, tls: bool
) -> None:
    script = Script(OK)
    async with RawServer(script, tls_context(ca) if tls else None) as rx:
        results = [await attempt(sender, url_of(rx), n=n) for n in range(1, 6)]
        assert rx.finished == 0  # still open, idle in the pool
    assert [(r.status_code, r.error_class, r.response_body) for r in results] == [
        (200, "2xx", "ok")
    ] * 5
    assert rx.connections == 1
    assert [r.connection for r in script.requests] == [1] * 5
    assert [r.body for r in script.requests] == [BODY] * 5


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            id="connection-close",
        ),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="http-1.0"),
    ],
)
async def test_an_answer_that_ends_keep_alive_is_not_reused(sender: Sender, answer: bytes) -> None:
    # the server keeps its end open regardless: the client must not send on it again
    script = Script(answer)
    async with RawServer(script, None) as rx:
        results = [await attempt(sender, url_of(rx), n=n) for n in range(1, 4)]
        await eventually(lambda: rx.finished == 3, timeout_s=3)  # the client hung up on each
    assert [r.status_code for r in results] == [200] * 3
    assert [r.connection for r in script.requests] == [1, 2, 3]


async def test_keep_alive_1_0_answer_is_reused(sender: Sender) -> None:
    script = Script(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
    async with RawServer(script, None) as rx:
        results = [await attempt(sender, url_of(rx), n=n) for n in range(1, 3)]
    assert [r.status_code for r in results] == [200, 200]
    assert [r.connection for r in script.requests] == [1, 1]


# -------------------------------------------------------------------------- body framing


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_body_without_length_is_read_until_eof(
    sender: Sender, ca: trustme.CA, tls: bool
) -> None:
    until_eof = Answer((b"HTTP/1.1 202 Accepted\r\n\r\nfirst,", b"second,", b"third"), "close")
    script = Script(until_eof, OK)
    async with RawServer(script, tls_context(ca) if tls else None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        second = await attempt(sender, url_of(rx), n=2)
    assert (first.status_code, first.error_class) == (202, "2xx")
    assert first.response_body == "first,second,third"
    assert second.status_code == 200
    assert [r.connection for r in script.requests] == [1, 2]


async def test_chunked_body_is_read_and_the_connection_reused(sender: Sender) -> None:
    chunked = Answer(
        (
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"7\r\n, world\r\n",
            b"0\r\n\r\n",
        )
    )
    script = Script(chunked, OK)
    async with RawServer(script, None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        second = await attempt(sender, url_of(rx), n=2)
    assert (first.status_code, first.error, first.response_body) == (
        500,
        "HTTP 500",
        "hello, world",
    )
    assert second.status_code == 200
    assert [r.connection for r in script.requests] == [1, 1]


@pytest.mark.parametrize(
    "interim",
    [
        pytest.param((b"HTTP/1.1 100 Continue\r\n\r\n",), id="100"),
        pytest.param(
            (b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\nRetry-After: 999\r\n\r\n",),
            id="103",
        ),
        pytest.param(
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 103 Early Hints\r\nRetry-After: 9\r\n\r\n",
            ),
            id="100-then-103",
        ),
    ],
)
async def test_interim_answers_are_skipped(sender: Sender, interim: tuple[bytes, ...]) -> None:
    final = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy"
    script = Script(Answer((*interim, final)), OK)
    async with RawServer(script, None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        second = await attempt(sender, url_of(rx), n=2)
    # the final answer's status, body and Retry-After; none of the interim answer's headers
    assert (first.status_code, first.response_body, first.retry_after_s) == (503, "busy", 7.0)
    assert second.status_code == 200
    assert [r.connection for r in script.requests] == [1, 1]


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_s"),
    [
        pytest.param(429, "120", 120.0, id="429"),
        pytest.param(503, "30", 30.0, id="503"),
        pytest.param(429, "Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="429-date-in-the-past"),
        pytest.param(500, "120", None, id="500-ignores-it"),
        pytest.param(429, "soon", None, id="429-unparsable"),
    ],
)
async def test_retry_after_is_captured(
    sender: Sender, status: int, retry_after: str, expected_s: float | None
) -> None:
    answer = b"HTTP/1.1 %d Nope\r\nretry-after: %s\r\nContent-Length: 0\r\n\r\n" % (
        status,
        retry_after.encode(),
    )
    async with RawServer(Script(answer), None) as rx:
        result = await attempt(sender, url_of(rx))
    assert (result.status_code, result.retry_after_s) == (status, expected_s)


# ------------------------------------------------------------------------ limits, abuse


def head_of(total: int) -> bytes:
    """A 200 head of about `total` bytes, in 1 KiB headers."""
    lines = [b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(total // 1024)]
    return b"HTTP/1.1 200 OK\r\n" + b"".join(lines) + b"Content-Length: 2\r\n\r\nok"


async def test_head_just_under_the_limit_is_accepted(sender: Sender) -> None:
    async with RawServer(Script(head_of(MAX_HEAD_BYTES - 4096)), None) as rx:
        result = await attempt(sender, url_of(rx))
    assert (result.status_code, result.response_body) == (200, "ok")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Answer((head_of(2 * MAX_HEAD_BYTES),)), id="many-headers"),
        pytest.param(
            Answer((b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 2 * MAX_HEAD_BYTES + b"\r\n\r\n",)),
            id="one-long-header",
        ),
    ],
)
async def test_head_over_the_limit_fails_and_drops_the_connection(
    sender: Sender, answer: Answer
) -> None:
    script = Script(answer, OK)
    async with RawServer(script, None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        await eventually(lambda: rx.finished == 1, timeout_s=3)
        second = await attempt(sender, url_of(rx), n=2)
    assert first.error_class == "network" and first.status_code is None
    assert first.error == "answer too large"
    assert second.status_code == 200
    assert [r.connection for r in script.requests] == [1, 2]


async def endless_header(server: RawServer, reader: Reader, writer: Writer) -> None:
    """A status line, then one header value that never ends (bounded at 64 MiB)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
    piece = b"e" * 65536
    for _ in range(1024):
        writer.write(piece)
        await writer.drain()
        server.sent += len(piece)


async def test_a_header_that_never_ends_is_cut_at_the_limit(sender: Sender) -> None:
    # the parser holds an unfinished header whole: it must not grow until the timeout
    async with RawServer(endless_header, None) as rx:
        started = time.monotonic()
        result = await attempt(sender, url_of(rx))
        elapsed_s = time.monotonic() - started
        await eventually(lambda: rx.finished == 1, timeout_s=3)
    assert result.error_class == "network", result
    assert result.error == "answer too large"
    assert elapsed_s < 1.0, elapsed_s
    assert rx.sent < 16 * 1024 * 1024, rx.sent


async def test_a_server_talking_out_of_turn_loses_its_idle_connection(sender: Sender) -> None:
    chatty = Answer((OK,), out_of_turn=b"HTTP/1.1 500 Unasked\r\nContent-Length: 0\r\n\r\n")
    script = Script(chatty, OK)
    async with RawServer(script, None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        await eventually(lambda: rx.finished == 1, timeout_s=3)  # the client hung up
        assert idle_connections(sender)[0].closed
        second = await attempt(sender, url_of(rx), n=2)
    assert (first.status_code, second.status_code) == (200, 200)
    assert [r.connection for r in script.requests] == [1, 2]


async def test_an_answer_sent_with_the_previous_one_is_not_kept(sender: Sender) -> None:
    # an extra answer in the same read as the real one: the next request must not get it
    extra = b"HTTP/1.1 500 Early\r\nContent-Length: 0\r\n\r\n"
    script = Script(OK + extra, OK)
    async with RawServer(script, None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        second = await attempt(sender, url_of(rx), n=2)
    assert (first.status_code, second.status_code) == (200, 200)
    assert [r.connection for r in script.requests] == [1, 2]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_body_cut_at_max_response_ends_the_connection(
    tmp_path: Path, ca: trustme.CA, tls: bool
) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"0123456789" * 10_000
    script = Script(big, OK)
    async with (
        started_sender(tmp_path, ca, max_response=4096) as sender,
        RawServer(script, tls_context(ca) if tls else None) as rx,
    ):
        first = await attempt(sender, url_of(rx), n=1)
        await eventually(lambda: rx.finished == 1, timeout_s=3)
        second = await attempt(sender, url_of(rx), n=2)
    assert first.status_code == 200
    assert first.response_body == ("0123456789" * 200)[:RESPONSE_KEEP_BYTES]
    assert second.status_code == 200
    assert [r.connection for r in script.requests] == [1, 2]


async def test_a_body_of_exactly_max_response_keeps_the_connection(
    tmp_path: Path, ca: trustme.CA
) -> None:
    exact = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + b"x" * 4096
    script = Script(exact)
    async with (
        started_sender(tmp_path, ca, max_response=4096) as sender,
        RawServer(script, None) as rx,
    ):
        results = [await attempt(sender, url_of(rx), n=n) for n in range(1, 3)]
    assert [r.status_code for r in results] == [200, 200]
    assert [r.connection for r in script.requests] == [1, 1]


# --------------------------------------------------------------------- pooled lifetimes


@pytest.mark.parametrize("how", ["close", "rst"])
async def test_an_idle_connection_the_server_closed_is_replaced(
    sender: Sender, how: Literal["close", "rst"]
) -> None:
    script = Script(Answer((OK,), then=how), OK)
    async with RawServer(script, None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        await eventually(lambda: rx.finished == 1, timeout_s=3)
        # wait for the client to see the FIN (RST) too: a request racing it is another story
        await eventually(lambda: all(conn.closed for conn in idle_connections(sender)), 3)
        second = await attempt(sender, url_of(rx), n=2)
    assert (first.status_code, second.status_code) == (200, 200), second
    assert [r.connection for r in script.requests] == [1, 2]


async def test_idle_connections_expire(tmp_path: Path, ca: trustme.CA) -> None:
    script = Script(OK)
    async with (
        started_sender(tmp_path, ca, idle_timeout_s=0.2) as sender,
        RawServer(script, None) as rx,
    ):
        first = await attempt(sender, url_of(rx), n=1)
        assert rx.finished == 0 and len(idle_connections(sender)) == 1
        await eventually(lambda: rx.finished == 1, timeout_s=3)  # the client closed it
        assert idle_connections(sender) == []
        second = await attempt(sender, url_of(rx), n=2)
    assert (first.status_code, second.status_code) == (200, 200)
    assert [r.connection for r in script.requests] == [1, 2]


def plain_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    return socket.socket(family, type_, proto)


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    """A pool without the network policy (the tests connect to IP literals only)."""
    resolver = DefaultResolver()
    p = ConnectionPool(resolver, plain_socket, ssl.create_default_context(), 4.0)
    yield p
    p.close()
    await resolver.close()


REQUEST = b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"


async def acquire(pool: ConnectionPool, origin: Origin) -> tuple[Http1Connection, bool]:
    conn = pool.take_idle(origin)
    if conn is not None:
        return conn, True
    return await pool.connect(origin), False


async def test_reset_closes_idle_connections_and_retires_busy_ones(pool: ConnectionPool) -> None:
    script = Script(OK)
    async with RawServer(script, None) as rx:
        origin: Origin = (False, "127.0.0.1", rx.port)
        idle, _ = await acquire(pool, origin)
        busy, reused = await acquire(pool, origin)
        assert not reused
        assert (await idle.request(REQUEST, 1024)).status == 200
        pool.release(origin, idle)
        answer = busy.request(REQUEST, 1024)
        pool.reset()
        assert idle.closed and not busy.closed
        await eventually(lambda: rx.finished == 1, timeout_s=3)
        assert (await answer).status == 200  # the busy one finishes its attempt...
        pool.release(origin, busy)
        assert busy.closed  # ...and is not pooled
        await eventually(lambda: rx.finished == 2, timeout_s=3)
        fresh, reused = await acquire(pool, origin)
        assert not reused and fresh not in (idle, busy)
        assert (await fresh.request(REQUEST, 1024)).status == 200
        pool.release(origin, fresh)
        again, reused = await acquire(pool, origin)  # after the reset, pooling goes on
        assert reused and again is fresh
        pool.release(origin, again)
    assert rx.connections == 3


async def test_close_aborts_idle_and_busy_connections(pool: ConnectionPool) -> None:
    script = Script(OK, Answer((b"HTTP/1.1 200 OK\r\n",)))  # the second answer never ends
    async with RawServer(script, None) as rx:
        origin: Origin = (False, "127.0.0.1", rx.port)
        idle, _ = await acquire(pool, origin)
        busy, _ = await acquire(pool, origin)
        assert (await idle.request(REQUEST, 1024)).status == 200
        pool.release(origin, idle)
        answer = busy.request(REQUEST, 1024)
        await eventually(lambda: len(script.requests) == 2, timeout_s=3)
        pool.close()
        assert idle.closed and busy.closed
        assert answer.done() and (answer.cancelled() or answer.exception() is not None)
        await eventually(lambda: rx.finished == 2, timeout_s=3)  # both seen closed by the server
        pool.release(origin, busy)  # the attempt's own release afterwards is harmless
        assert pool._idle == {}


# ----------------------------------------------------------------------- on the wire


@pytest.mark.parametrize(
    ("path", "request_line"),
    [
        pytest.param("/hook", b"POST /hook HTTP/1.1", id="path"),
        pytest.param("", b"POST / HTTP/1.1", id="no-path"),
        pytest.param("?a=1", b"POST /?a=1 HTTP/1.1", id="query-only"),
        pytest.param(
            "/a%20b/c%2Fd?x=1&y=%26z#fragment",
            b"POST /a%20b/c%2Fd?x=1&y=%26z HTTP/1.1",
            id="encoded",
        ),
    ],
)
async def test_the_request_line_carries_path_and_query(
    sender: Sender, path: str, request_line: bytes
) -> None:
    script = Script(OK)
    async with RawServer(script, None) as rx:
        result = await attempt(sender, url_of(rx, path))
    assert result.status_code == 200
    (request,) = script.requests
    assert request.line == request_line


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
async def test_attempt_request_headers(sender: Sender, host: str) -> None:
    script = Script(OK)
    custom = (("X-Api-Key", "k-123"), ("Authorization", "Bearer t"))
    async with RawServer(script, None, host=host) as rx:
        result = await attempt(sender, url_of(rx), headers=custom)
    assert result.status_code == 200
    (request,) = script.requests
    headers = request.headers
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), names  # nothing twice
    got = dict(headers)
    bracketed = f"[{host}]" if ":" in host else host
    assert got["host"] == f"{bracketed}:{rx.port}"
    assert got["content-length"] == str(len(BODY)) and request.body == BODY
    assert got["content-type"] == "application/json"
    assert got["user-agent"] == USER_AGENT
    assert got["x-api-key"] == "k-123" and got["authorization"] == "Bearer t"
    assert got["x-webhook-id"] == "msg_1" and got["x-webhook-event"] == "message.received"
    assert got["x-webhook-attempt"] == "1"
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(names)


async def test_post_sends_exactly_the_given_headers(sender: Sender) -> None:
    script = Script(OK)
    given = {"Content-Type": "application/json", "User-Agent": "probe/1", "X-Test": "yes"}
    async with RawServer(script, None) as rx:
        result = await sender.post(url_of(rx), b"{}", given, time.time())
    assert result.status_code == 200
    (request,) = script.requests
    assert request.headers == [
        ("host", f"127.0.0.1:{rx.port}"),
        ("content-type", "application/json"),
        ("user-agent", "probe/1"),
        ("x-test", "yes"),
        ("content-length", "2"),
    ]
    assert request.body == b"{}"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(("X-Bad", "a\r\nX-Injected: 1"), id="crlf-in-value"),
        pytest.param(("X-Bad", "a\nb"), id="lf-in-value"),
        pytest.param(("X-Bad", "a\0b"), id="nul-in-value"),
        pytest.param(("X-Bad\r\nX-Injected", "1"), id="crlf-in-name"),
    ],
)
async def test_a_header_that_would_split_the_request_is_refused(
    sender: Sender, header: tuple[str, str]
) -> None:
    script = Script(OK)
    async with RawServer(script, None) as rx:
        posted = await sender.post(url_of(rx), b"{}", dict([header]), time.time())
        attempted = await attempt(sender, url_of(rx), headers=(header,))
    for result in (posted, attempted):
        assert result.error_class == "refused" and result.status_code is None, result
        assert result.error == f"header {header[0]!r} contains CR, LF or NUL"
    assert rx.connections == 0 and script.requests == []


# ------------------------------------------------------------- reuse races (issue 12)


@pytest.mark.parametrize("how", ["close", "rst"])
@pytest.mark.parametrize("path", ["task", "callbacks"])
async def test_a_reused_connection_closed_at_reuse_is_retried_at_once_on_a_new_one(
    sender: Sender, how: Literal["close", "rst"], path: str
) -> None:
    # the receiver closes its idle connection as the next request arrives (Node's
    # keep-alive timeout racing our reuse): sent once more on a new connection, same attempt
    script = Script(OK, Answer((), then=how), OK)
    async with RawServer(script, None) as rx:
        first = await attempt(sender, url_of(rx), n=1)
        assert len(idle_connections(sender)) == 1
        if path == "task":
            second = await attempt(sender, url_of(rx), n=2)
        else:
            hook = dataclasses.replace(WEBHOOK, url=url_of(rx))
            claimed = Claimed(2, "msg_2", 1, "s1", "message.received", 1, BODY)
            answer = sender.begin(hook, claimed, time.time())
            assert answer is not None  # on the idle connection, no task
            second = await answer
    assert (first.status_code, second.status_code) == (200, 200), second
    assert second.error is None
    # the same request twice: on the reused connection, then on a new one
    assert [r.connection for r in script.requests] == [1, 1, 2]
    assert script.requests[1].head == script.requests[2].head


@pytest.mark.parametrize("path", ["task", "callbacks"])
async def test_a_reused_connection_that_began_answering_is_not_retried(
    sender: Sender, path: str
) -> None:
    # a byte of the answer arrived: the receiver saw the request, so no second send
    script = Script(OK, Answer((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart",), "close"))
    async with RawServer(script, None) as rx:
        await attempt(sender, url_of(rx), n=1)
        if path == "task":
            second = await attempt(sender, url_of(rx), n=2)
        else:
            hook = dataclasses.replace(WEBHOOK, url=url_of(rx))
            claimed = Claimed(2, "msg_2", 1, "s1", "message.received", 1, BODY)
            answer = sender.begin(hook, claimed, time.time())
            assert answer is not None
            second = await answer
    assert (second.error_class, second.error) == ("network", "connection closed during the answer")
    assert [r.connection for r in script.requests] == [1, 1]


async def test_a_fresh_connection_closed_before_the_answer_is_not_retried(sender: Sender) -> None:
    script = Script(Answer((), then="close"))
    async with RawServer(script, None) as rx:
        result = await attempt(sender, url_of(rx))
    assert result.error == "connection closed before the answer"
    assert len(script.requests) == 1


async def test_begin_without_an_idle_connection_starts_nothing(sender: Sender) -> None:
    script = Script(OK)
    async with RawServer(script, None) as rx:
        hook = dataclasses.replace(WEBHOOK, url=url_of(rx))
        claimed = Claimed(1, "msg_1", 1, "s1", "message.received", 1, BODY)
        assert sender.begin(hook, claimed, time.time()) is None
    assert rx.connections == 0


async def test_idle_timeout_closes_before_a_node_style_receiver_does(
    tmp_path: Path, ca: trustme.CA
) -> None:
    # a receiver that would close idle connections after 0.5 s; ours close at 0.3 s
    script = Script(OK)
    async with (
        started_sender(tmp_path, ca, idle_timeout_s=0.3) as sender,
        RawServer(script, None) as rx,
    ):
        await attempt(sender, url_of(rx), n=1)
        started = time.monotonic()
        await eventually(lambda: rx.finished == 1, timeout_s=3)
        closed_after_s = time.monotonic() - started
        assert sender.pool.idle_count == 0
    assert 0.2 <= closed_after_s < 0.5, closed_after_s


# ------------------------------------------------ a connection opening during a reload


async def test_a_connection_opened_during_a_reset_does_not_outlive_it(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    opened: list[Http1Connection] = []
    real_connect = ConnectionPool._connect

    async def slow_connect(self: ConnectionPool, origin: Origin) -> Http1Connection:
        conn = await real_connect(self, origin)
        opened.append(conn)
        if len(opened) == 1:
            await gate.wait()  # still opening when the reload comes
        return conn

    monkeypatch.setattr(ConnectionPool, "_connect", slow_connect)
    async with RawServer(Script(OK), None) as rx:
        origin: Origin = (False, "127.0.0.1", rx.port)
        connecting = asyncio.create_task(pool.connect(origin))
        await eventually(lambda: len(opened) == 1)
        pool.reset()
        gate.set()
        conn = await connecting
        assert opened[0].closed  # opened under the old policy: dropped
        assert conn is opened[1] and not conn.closed  # opened again under the new one
        assert (await conn.request(REQUEST, 1024)).status == 200
        pool.release(origin, conn)
        assert pool.take_idle(origin) is conn  # and pooled: it belongs to the new generation
        pool.release(origin, conn)
        await eventually(lambda: rx.finished == 1, timeout_s=3)


async def test_a_connection_opened_during_close_is_dropped(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    opened: list[Http1Connection] = []
    real_connect = ConnectionPool._connect

    async def slow_connect(self: ConnectionPool, origin: Origin) -> Http1Connection:
        conn = await real_connect(self, origin)
        opened.append(conn)
        await gate.wait()
        return conn

    monkeypatch.setattr(ConnectionPool, "_connect", slow_connect)
    async with RawServer(Script(OK), None) as rx:
        connecting = asyncio.create_task(pool.connect((False, "127.0.0.1", rx.port)))
        await eventually(lambda: len(opened) == 1)
        pool.close()
        gate.set()
        with pytest.raises(ConnectionError):
            await connecting
        assert opened[0].closed
        await eventually(lambda: rx.finished == 1, timeout_s=3)


async def test_a_policy_narrowed_while_connecting_refuses_the_attempt(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    calls: list[Origin] = []
    real_connect = ConnectionPool._connect

    async def slow_connect(self: ConnectionPool, origin: Origin) -> Http1Connection:
        calls.append(origin)
        conn = await real_connect(self, origin)
        if len(calls) == 1:
            await gate.wait()
        return conn

    monkeypatch.setattr(ConnectionPool, "_connect", slow_connect)
    script = Script(OK)
    async with started_sender(tmp_path, ca) as sender, RawServer(script, None) as rx:
        pending = asyncio.create_task(attempt(sender, url_of(rx)))
        await eventually(lambda: rx.connections == 1)
        # SIGHUP: loopback is no longer allowed; the connection being opened was vetted
        # under the old policy and must not carry the attempt
        sender.reconfigure(dataclasses.replace(sender.config, allow_networks=()))
        gate.set()
        result = await pending
    assert result.error_class == "refused", result
    assert result.error is not None and "127.0.0.1 is not a public address" in result.error
    assert script.requests == []


# --------------------------------------------- an error while building the request


@pytest.mark.parametrize("pooled", [False, True], ids=["new-connection", "pooled"])
async def test_an_error_building_the_request_is_a_failed_attempt(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, pooled: bool
) -> None:
    script = Script(OK)
    async with RawServer(script, None) as rx:
        cfg = make_config(
            tmp_path, require_https=False, retry_schedule=["1h"], ca_file=str(ca_file(ca, tmp_path))
        )
        async with running_daemon(cfg) as d:
            outcomes = capture_outcomes(d)
            body = {"url": url_of(rx), "events": ["*"]}
            status, answer = await d.call("PUT", "/api/webhook/config/s1", body)
            assert status == 200, answer
            if pooled:  # one delivery first, so the next finds an idle connection
                status, _ = await d.call("POST", "/api/events", EVENT)
                assert status == 202
                await eventually(lambda: len(outcomes) == 1)
                assert d.state.sender.pool.idle_count == 1

            def broken(**kwargs: Any) -> str:
                raise RuntimeError("a bug while building the request")

            monkeypatch.setattr(sender_module, "attempt_lines", broken)
            before = len(outcomes)
            status, _ = await d.call("POST", "/api/events", EVENT)
            assert status == 202
            await eventually(lambda: len(outcomes) == before + 1)
            rows = await attempt_log(d)
            scheduler = d.state.scheduler
            await eventually(lambda: scheduler.inflight == 0)
    assert (outcomes[-1].result.error_class, outcomes[-1].result.error) == (
        "network",
        "internal error in wahookd",
    )
    assert rows[-1]["outcome"] != "processing" and rows[-1]["error"] == "internal error in wahookd"
    assert len(script.requests) == (1 if pooled else 0)


async def test_callback_attempts_time_out_at_their_own_deadlines(
    tmp_path: Path, ca: trustme.CA
) -> None:
    # one timer watches every callback attempt: one started later with a shorter
    # timeout (a reload meanwhile) still ends at its own deadline, not the other's
    script = Script(OK, OK, Answer(()))  # the third request on is never answered
    async with started_sender(tmp_path, ca, timeout_s=5.0) as sender, RawServer(script, None) as rx:
        await asyncio.gather(attempt(sender, url_of(rx), n=1), attempt(sender, url_of(rx), n=2))
        assert len(idle_connections(sender)) == 2
        hook = dataclasses.replace(WEBHOOK, url=url_of(rx))
        slow = sender.begin(hook, Claimed(3, "msg_3", 1, "s1", "message.received", 1, BODY), 0)
        sender.reconfigure(dataclasses.replace(sender.config, timeout_s=0.2))
        started = time.monotonic()
        quick = sender.begin(hook, Claimed(4, "msg_4", 1, "s1", "message.received", 1, BODY), 0)
        assert slow is not None and quick is not None
        result = await quick
        assert (result.error_class, result.error) == ("timeout", "timeout after 200ms")
        assert 0.15 < time.monotonic() - started < 2.0
        assert not slow.done()  # its deadline is 5 s away
        slow.cancel()
        await asyncio.sleep(0)
    assert sender._watched == {}
