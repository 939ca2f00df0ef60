"""Real parts for tests: a TLS webhook receiver, configs, an in-process daemon."""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from wahookd.api.keys import CLOCK, METRICS, REGISTRY, SCHEDULER, SENDER, STORE
from wahookd.app import build_app
from wahookd.auth import load_keys, mint_token
from wahookd.clock import Clock
from wahookd.config import Config, parse_config_text
from wahookd.delivery.scheduler import Scheduler
from wahookd.delivery.sender import Sender
from wahookd.metrics import Metrics
from wahookd.models import Outcome
from wahookd.registry import Registry
from wahookd.store import Store

T = TypeVar("T")


@dataclass
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    at: float  # monotonic arrival time
    path: str


@dataclass
class Reply:
    """What the receiver answers."""

    status: int = 200
    body: bytes = b"OK"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Responder = Callable[[Received], Reply]


class Receiver:
    """A real aiohttp webhook receiver on 127.0.0.1 over TLS (trustme certificate)."""

    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.requests: list[Received] = []
        self.replies: list[Reply] = []  # consumed first, then `default` answers
        self.default = Reply()
        self.responder: Responder | None = None
        self.arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The https URL of the receiver's /hook path."""
        return f"https://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        got = Received(dict(request.headers), await request.read(), time.monotonic(), request.path)
        self.requests.append(got)
        async with self.arrived:
            self.arrived.notify_all()
        if self.responder is not None:
            reply = self.responder(got)
        elif self.replies:
            reply = self.replies.pop(0)
        else:
            reply = self.default
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Wait until `count` requests arrived; returns them all."""
        async with asyncio.timeout(timeout_s):
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests


def ca_file(ca: trustme.CA, directory: Path) -> Path:
    """Write the test CA as a PEM bundle for delivery.ca_file."""
    path = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


# The PostgreSQL database the in-process daemons of a test use, None for SQLite: set by
# the `daemon_backend` fixture (tests/conftest.py) for modules that run on both backends
BACKEND_DSN: str | None = None


def make_config(tmp_path: Path, extra: str = "", **delivery: Any) -> Config:
    """A config for tests: database in tmp_path (or BACKEND_DSN), test CA, short defaults."""
    settings: dict[str, Any] = {
        "timeout": "2s",
        "retry_schedule": ["1s", "2s"],
        # the test receivers listen on loopback, which the network policy refuses by default
        "allow_networks": ["127.0.0.0/8"],
    }
    settings.update(delivery)
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    text = f"""
[server]
listen = "127.0.0.1:8787"
[storage]
path = "{tmp_path / "data" / "wahookd.db"}"
{f'backend = "postgres"{chr(10)}dsn = "{BACKEND_DSN}"' if BACKEND_DSN else ""}
[auth]
jwt_secret = "{"s" * 64}"
[delivery]
{chr(10).join(lines)}
{extra}
"""
    return parse_config_text(text, source=None, base_dir=tmp_path)


@dataclass
class Parts:
    """The running daemon's parts (app.py stores each under its own key), to look inside."""

    store: Store
    registry: Registry
    scheduler: Scheduler
    sender: Sender
    metrics: Metrics
    clock: Clock

    @classmethod
    def of(cls, app: web.Application) -> Parts:
        """The parts of a started app."""
        return cls(app[STORE], app[REGISTRY], app[SCHEDULER], app[SENDER], app[METRICS], app[CLOCK])


@dataclass
class Daemon:
    """An in-process daemon reached through a real loopback socket."""

    client: TestClient[Any, Any]
    state: Parts
    config: Config

    def token(
        self, role: str = "admin", sessions: list[str] | None = None, ttl_s: float = 600
    ) -> str:
        """A token minted with the daemon's own key."""
        keys = load_keys(self.config.auth, self.config.storage.path)
        return mint_token(
            self.config.auth,
            keys,
            subject="test",
            role=role,  # type: ignore[arg-type]
            sessions=sessions,
            ttl_s=ttl_s,
            now=time.time(),
        )

    def headers(self, **kwargs: Any) -> dict[str, str]:
        """Authorization header with a fresh token."""
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """Make an authenticated JSON call; returns (status, parsed JSON)."""
        headers = kwargs.pop("headers", None) or self.headers()
        resp = await self.client.request(method, path, json=body, headers=headers, **kwargs)
        return resp.status, await resp.json()


@asynccontextmanager
async def running_daemon(config: Config, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    """Start the real app on 127.0.0.1 and yield a client for it."""
    app = build_app(config, clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Daemon(client, Parts.of(app), config)


def capture_outcomes(daemon: Daemon) -> list[Outcome]:
    """Collect every recorded attempt outcome (its result carries the error class)."""
    seen: list[Outcome] = []
    previous = daemon.state.scheduler.on_outcome

    def hook(outcome: Outcome) -> None:
        seen.append(outcome)
        if previous is not None:
            previous(outcome)

    daemon.state.scheduler.on_outcome = hook
    return seen


async def attempt_log(daemon: Daemon, session: str | None = None) -> list[dict[str, Any]]:
    """The `attempts` table of the daemon's database (one session's), oldest first, as dicts."""

    def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        cur = conn.execute(
            "SELECT d.session_id, a.delivery_id, a.attempt, a.duration_ms, a.status_code,"
            " a.outcome, a.error, a.response_body"
            " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id ORDER BY a.id"
        )
        names = [col[0] for col in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return [r for r in rows if session is None or r["session_id"] == session]

    return await daemon.state.store.read(read)


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 10.0,
    *,
    interval_s: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll a cheap condition (sync or async) until it holds; fail the test if not in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert time.monotonic() < deadline, f"not reached in {timeout_s}s: {what}"
        await asyncio.sleep(interval_s)


def eventually_sync(
    check: Callable[[], T | None],
    timeout_s: float = 10.0,
    *,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Call `check` until it returns something (not None), outside an event loop; return it."""
    deadline = time.monotonic() + timeout_s
    while (found := check()) is None:
        assert time.monotonic() < deadline, f"not reached in {timeout_s}s: {what}"
        time.sleep(interval_s)
    return found


def assert_readable_error(error: str | None) -> str:
    """An attempt error an operator can read: one short line, no Python internals."""
    assert error, error
    assert "\n" not in error and len(error) <= 300, f"{len(error)} chars: {error[:400]!r}"
    # no traceback, object repr ("<ssl.SSLContext object at 0x...>"), exception-args tuple
    # ("(1, '[SSL: ..."), bytes repr ("b'\x16\x03..."), or CPython source location ("_ssl.c:1006")
    for internal in ("Traceback", "object at 0x", "(1, '", '(1, "', "b'\\x", 'b"\\x', "_ssl.c:"):
        assert internal not in error, f"{internal!r} in {error!r}"
    return error
