"""One HTTP/1.1 client connection: write a request, parse the response with llhttp.

The sender makes one kind of request, a POST of a small body, and needs three things
back: the status, the Retry-After header and the first bytes of the body. aiohttp's
client does much more and cost more than half of the daemon's CPU per delivery, so the
sender speaks HTTP/1.1 itself over this protocol (SPEC §5 "Sender"): the request goes
out in one write, and httptools (llhttp, the parser uvicorn and Node.js use) parses the
answer in C, calling back only for the parts kept.

A connection carries one request at a time and is reused (keep-alive) only when the
response was read to its end and both sides allow it. Every limit a hostile receiver
could stretch is bounded: head bytes here, body bytes by the caller's `max_body`,
time by the caller's deadline (which aborts the connection).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final, cast

import httptools

MAX_HEAD_BYTES: Final = 64 * 1024  # status line and headers of one response


class BadResponse(Exception):
    """The receiver's answer is not HTTP/1.x the parser accepts."""


class HeadTooLarge(BadResponse):
    """The answer's status line and headers pass MAX_HEAD_BYTES."""


class ConnectionClosed(ConnectionError):
    """The receiver hung up before any answer."""


class ClosedDuringAnswer(ConnectionError):
    """The receiver hung up in the middle of a framed answer (Content-Length, chunked)."""


@dataclass(frozen=True, slots=True)
class Response:
    """What the sender keeps of one answer."""

    status: int
    retry_after: str | None
    body: bytes  # at most the caller's max_body bytes
    complete: bool  # the whole body was read (else it was cut at max_body)


class Http1Connection(asyncio.Protocol):
    """A client connection; `request()` one at a time, `reusable` after a clean answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.answer_started = False  # a byte of the current answer has arrived
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._max_body = 0
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._retry_after: str | None = None
        self._head_bytes = 0
        self._head_received = 0  # bytes read while the head is unfinished
        self._body = bytearray()
        self._head_done = False
        self._framed = False  # Content-Length or Transfer-Encoding: its end is known
        self._keep_alive = False

    # ------------------------------------------------------------- the caller's side

    @property
    def reusable(self) -> bool:
        """True when the last answer ended cleanly and the connection may carry another."""
        return not self.closed and self._waiter is None and self._keep_alive

    def request(self, data: bytes, max_body: int) -> asyncio.Future[Response]:
        """Write one whole request; the future gets the answer or the failure."""
        assert self.transport is not None and self._waiter is None, "connection busy"
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self._max_body = max_body
        self._keep_alive = False
        self.answer_started = False
        if self.closed:
            # closed while idle, unnoticed by the pool: fails like a close before the answer
            self._fail(ConnectionClosed("the connection was closed before the request"))
            return waiter
        self.transport.write(data)
        return waiter

    def abort(self) -> None:
        """Drop the connection now (a deadline passed, or the answer was cut)."""
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.cancel()  # its caller has gone (deadline, shutdown) or already failed
        if self.transport is not None:
            self.transport.abort()

    # ---------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # nothing was asked: a server that talks out of turn cannot be trusted with more
            self.abort()
            return
        self.answer_started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the server switched protocols"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            self._fail(cause if isinstance(cause, BadResponse) else BadResponse(str(exc)))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(str(exc) or "malformed HTTP"))
        if self._waiter is not None and not self._head_done:
            # the parser holds an unfinished header whole and calls on_header only at its
            # end: bound the bytes that arrive before the head is complete as well
            self._head_received += len(data)
            if self._head_received > MAX_HEAD_BYTES:
                self._fail(_head_too_large())

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles the waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._head_done and not self._framed:
            # a body that runs until the connection closes: its end is the close
            self._settle(complete=exc is None)
        elif isinstance(exc, OSError):
            self._fail(exc)
        elif self._head_done or self._head_received:
            self._fail(ClosedDuringAnswer("the server closed the connection mid-answer"))
        else:
            self._fail(ConnectionClosed("the server closed the connection without an answer"))

    # ------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None:
            # more bytes after the answer, in the same read: nothing asked for them
            raise BadResponse("the server sent more than one answer")

    def on_status(self, status: bytes) -> None:
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        # _count(), inlined: a few headers per answer, thousands of answers a second
        self._head_bytes += n + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _head_too_large()
        if n == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif (n == 14 and name.lower() == b"content-length") or (
            n == 17 and name.lower() == b"transfer-encoding"
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._head_done = self._status >= 200 or self._status == 101
        if self._status in (204, 304):
            self._framed = True  # no body, whatever the headers say

    def on_body(self, body: bytes) -> None:
        if not self._head_done:
            return  # the body of an interim (1xx) answer
        room = self._max_body - len(self._body)
        if len(body) <= room:
            self._body += body
            return
        self._body += body[:room]
        # enough read: the rest is never read, so this connection ends here
        self._settle(complete=False)
        self.abort()

    def on_message_complete(self) -> None:
        if not self._head_done:
            self._reset()  # 100 Continue, 103 Early Hints: the real answer follows
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._settle(complete=True)

    # -------------------------------------------------------------------- helpers

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _head_too_large()

    def _settle(self, *, complete: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(
                Response(self._status, self._retry_after, bytes(self._body), complete)
            )
        keep_alive = self._keep_alive
        self._reset()
        self._keep_alive = keep_alive and complete

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()


def _head_too_large() -> HeadTooLarge:
    return HeadTooLarge(f"response head larger than {MAX_HEAD_BYTES // 1024} KiB")
