"""Keep-alive connections to webhook receivers, opened through the network policy.

A host name is resolved by the policy resolver (which drops every refused address,
netpolicy.py), an IP literal skips the lookup, happy eyeballs (aiohappyeyeballs) connects
to the vetted addresses through the policy's socket factory (the last check, on the exact
address), and TLS verifies the URL's host name. Idle connections are kept per origin
(scheme, host, port), reused newest first, and closed once idle for `idle_timeout_s`
(SPEC §5: below common servers' keep-alive timeouts, so we close first, not them).

`reset()` (a policy or CA change) retires every pooled connection: idle ones close at
once, busy ones when their attempt ends, and ones still opening as soon as they open.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Final

import aiohappyeyeballs
from aiohttp.abc import AbstractResolver

from .http1 import ConnectionClosed, Http1Connection
from .netpolicy import RefusedTarget, parse_ip

HAPPY_EYEBALLS_DELAY_S: Final = 0.25

Origin = tuple[bool, str, int]  # (tls, host as in the URL, port)


class ConnectError(OSError):
    """Could not open a connection to host:port; `os_error` says why."""

    def __init__(self, host: str, port: int, os_error: BaseException) -> None:
        super().__init__(str(os_error))
        self.host = host
        self.port = port
        self.os_error = os_error


class HandshakeError(ConnectError):
    """The TLS handshake with host:port failed; `os_error` is the ssl module's error."""


class ConnectionPool:
    """Idle connections per origin; `take_idle` or `connect`, then `release` after use."""

    def __init__(
        self,
        resolver: AbstractResolver,
        open_socket: Callable[[aiohappyeyeballs.AddrInfoType], socket.socket],
        ssl_context: ssl.SSLContext,
        idle_timeout_s: float,
    ) -> None:
        self.resolver = resolver
        self.open_socket = open_socket
        self.ssl_context = ssl_context
        self.idle_timeout_s = idle_timeout_s
        # idle connections per origin with the loop time each was released, oldest first
        self._idle: dict[Origin, list[tuple[Http1Connection, float]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._generation = 0
        self._born: dict[Http1Connection, int] = {}  # busy connection -> generation opened
        self._closed = False

    def has_idle(self, origin: Origin) -> bool:
        """True when an idle connection to origin may be at hand (take_idle() can still fail)."""
        return bool(self._idle.get(origin))

    def take_idle(self, origin: Origin) -> Http1Connection | None:
        """The most recently used idle connection to origin, if one is still open and fresh."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        cutoff = asyncio.get_running_loop().time() - self.idle_timeout_s
        while idle:
            conn, released_at = idle.pop()
            if conn.closed:
                continue
            if released_at <= cutoff:  # the sweep is late: this one is past its idle time
                conn.abort()
                continue
            self._born[conn] = self._generation
            return conn
        return None

    async def connect(self, origin: Origin) -> Http1Connection:
        """A new connection to origin (counted as busy until released).

        One that finished opening after a reset() or close() was opened under the old
        policy or CA: it is dropped, and (after a reset) opened again under the new one.
        """
        while True:
            generation = self._generation
            conn = await self._connect(origin)
            if self._closed:
                conn.abort()
                raise ConnectionClosed("the sender is shutting down")
            if generation == self._generation:
                self._born[conn] = generation
                return conn
            conn.abort()

    def release(self, origin: Origin, conn: Http1Connection) -> None:
        """Give a connection back after its attempt: pooled when clean, else closed."""
        born = self._born.pop(conn, None)
        if not conn.reusable or born != self._generation or self._closed:
            conn.abort()
            return
        loop = asyncio.get_running_loop()
        self._idle.setdefault(origin, []).append((conn, loop.time()))
        if self._sweep is None:
            self._sweep = loop.call_later(self.idle_timeout_s, self._expire)

    def reset(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Retire every connection (a new policy or CA); optionally trust a new context."""
        if ssl_context is not None:
            self.ssl_context = ssl_context
        self._generation += 1
        self._close_idle()

    def close(self) -> None:
        """Close every connection, idle, busy or still opening."""
        self._closed = True
        self._close_idle()
        for conn in list(self._born):
            conn.abort()
        self._born.clear()

    @property
    def idle_count(self) -> int:
        """Idle connections held (open or not yet swept)."""
        return sum(len(conns) for conns in self._idle.values())

    def _close_idle(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn, _ in conns:
                conn.abort()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _expire(self) -> None:
        """Close connections idle for idle_timeout_s; wake again when the next one is due."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        cutoff = now - self.idle_timeout_s
        next_at: float | None = None
        for origin, conns in list(self._idle.items()):
            # oldest first: the expired ones are a prefix
            expired = 0
            while expired < len(conns) and conns[expired][1] <= cutoff:
                conns[expired][0].abort()
                expired += 1
            del conns[:expired]
            conns[:] = [(conn, at) for conn, at in conns if not conn.closed]
            if not conns:
                del self._idle[origin]
            elif next_at is None or conns[0][1] < next_at:
                next_at = conns[0][1]
        if next_at is not None:
            self._sweep = loop.call_at(next_at + self.idle_timeout_s, self._expire)

    async def _connect(self, origin: Origin) -> Http1Connection:
        tls, host, port = origin
        loop = asyncio.get_running_loop()
        try:
            infos = await self._addresses(host, port)
            sock = await aiohappyeyeballs.start_connection(
                infos,
                happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
                interleave=1,
                socket_factory=self.open_socket,
            )
        except RefusedTarget:
            raise
        except OSError as exc:
            raise ConnectError(host, port, exc) from exc
        try:
            _, conn = await loop.create_connection(
                Http1Connection,
                sock=sock,
                ssl=self.ssl_context if tls else None,
                server_hostname=host if tls else None,
            )
        except ssl.SSLError as exc:
            sock.close()
            raise HandshakeError(host, port, exc) from exc
        except OSError as exc:
            sock.close()
            raise ConnectError(host, port, exc) from exc
        except BaseException:
            sock.close()
            raise
        return conn

    async def _addresses(self, host: str, port: int) -> list[aiohappyeyeballs.AddrInfoType]:
        """Where host:port may be connected to: the literal itself, or the vetted lookup."""
        ip = parse_ip(host)
        if ip is not None:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        answers = await self.resolver.resolve(host, port, family=socket.AF_UNSPEC)
        return [
            (
                answer["family"],
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (answer["host"], answer["port"], 0, 0)
                if answer["family"] == socket.AF_INET6
                else (answer["host"], answer["port"]),
            )
            for answer in answers
        ]
