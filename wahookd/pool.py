"""Keep-alive connections to webhook receivers, opened through the network policy.

A connection is opened the way aiohttp opened them before: the host name is resolved
by the policy resolver (which drops every refused address, netpolicy.py), an IP literal
skips the lookup, happy eyeballs (aiohappyeyeballs, as aiohttp uses) connects to the
vetted addresses through the policy's socket factory (the last check, on the exact
address), and TLS verifies the URL's host name. Idle connections are kept per origin
(scheme, host, port) and reused newest first; a sweep closes those idle for KEEPALIVE_S.

`reset()` (a policy or CA change) retires every pooled connection: idle ones close at
once, busy ones when their attempt ends.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Final

import aiohappyeyeballs
from aiohttp.abc import AbstractResolver

from .http1 import Http1Connection
from .netpolicy import RefusedTarget, parse_ip

KEEPALIVE_S: Final = 15.0  # aiohttp's default keep-alive for idle client connections
HAPPY_EYEBALLS_DELAY_S: Final = 0.25

Origin = tuple[bool, str, int]  # (tls, host as in the URL, port)


class ConnectError(OSError):
    """Could not open a connection to host:port; `os_error` says why."""

    def __init__(self, host: str, port: int, os_error: BaseException) -> None:
        super().__init__(str(os_error))
        self.host = host
        self.port = port
        self.os_error = os_error


class ConnectionPool:
    """Idle connections per origin; `acquire` one (reused or new), `release` it after."""

    def __init__(
        self,
        resolver: AbstractResolver,
        open_socket: Callable[[aiohappyeyeballs.AddrInfoType], socket.socket],
        ssl_context: ssl.SSLContext,
    ) -> None:
        self.resolver = resolver
        self.open_socket = open_socket
        self.ssl_context = ssl_context
        # idle connections per origin with the loop time each was released, oldest first
        self._idle: dict[Origin, list[tuple[Http1Connection, float]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._generation = 0
        self._born: dict[Http1Connection, int] = {}  # busy connection -> generation opened

    async def acquire(self, origin: Origin) -> tuple[Http1Connection, bool]:
        """A connection to origin and whether it was reused from the pool."""
        conn = self.take_idle(origin)
        if conn is not None:
            return conn, True
        return await self.connect(origin), False

    def take_idle(self, origin: Origin) -> Http1Connection | None:
        """The most recently used idle connection to origin, if one is still open."""
        idle = self._idle.get(origin)
        while idle:
            conn, _ = idle.pop()
            if not conn.closed:
                self._born[conn] = self._generation
                return conn
        return None

    async def connect(self, origin: Origin) -> Http1Connection:
        """A new connection to origin (counted as busy until released)."""
        conn = await self._connect(origin)
        self._born[conn] = self._generation
        return conn

    def release(self, origin: Origin, conn: Http1Connection) -> None:
        """Give a connection back after its attempt: pooled when clean, else closed."""
        born = self._born.pop(conn, None)
        if not conn.reusable or born != self._generation:
            conn.abort()
            return
        loop = asyncio.get_running_loop()
        self._idle.setdefault(origin, []).append((conn, loop.time()))
        if self._sweep is None:
            self._sweep = loop.call_later(KEEPALIVE_S / 3, self._expire)

    def reset(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Retire every connection (a new policy or CA); optionally trust a new context."""
        if ssl_context is not None:
            self.ssl_context = ssl_context
        self._generation += 1
        self._close_idle()

    def close(self) -> None:
        """Close every connection, idle or busy."""
        self._close_idle()
        for conn in list(self._born):
            conn.abort()
        self._born.clear()

    def _close_idle(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn, _ in conns:
                conn.abort()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _expire(self) -> None:
        """Close connections idle for KEEPALIVE_S (a sweep every third of it, while any idle)."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - KEEPALIVE_S
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
        if self._idle:
            self._sweep = loop.call_later(KEEPALIVE_S / 3, self._expire)

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
        except ssl.SSLError:
            sock.close()
            raise  # the sender names the TLS failure with host and port
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
