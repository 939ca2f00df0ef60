"""Nodes for the end-to-end cluster tests: real daemons on one PostgreSQL database.

Each node is `wahookd serve` as a subprocess (tests/daemon_proc.py) on its own loopback
port; every node is stopped by its PID when the test ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import trustme
from daemon_proc import DaemonProcess, free_port
from support import ca_file

SECRET = "c" * 64  # the nodes share one JWT key: a token works on any of them
WAIT_S = 30.0


def token(role: str = "admin") -> str:
    return jwt.encode({"exp": int(time.time()) + 600, "role": role}, SECRET, algorithm="HS256")


def write_config(
    path: Path,
    port: int,
    dsn: str,
    ca: trustme.CA,
    *,
    static_url: str | None = None,
    extra: str = "",
) -> None:
    """A node's config; `static_url`: a static webhook for every session to that URL."""
    text = (
        f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = "500ms"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\n'
        f'path = "{path.parent / "data" / "wahookd.db"}"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, path.parent)}"\n'
        'allow_networks = ["127.0.0.0/8"]\nretry_schedule = ["1s"]\n'
        f"{extra}"
    )
    if static_url is not None:
        text += f'\n[[webhook]]\nsession = "*"\nurl = "{static_url}"\nevents = ["*"]\n'
    path.write_text(text)


class Nodes:
    """Starts nodes on one database; `close()` kills those still running, by PID."""

    def __init__(self, root: Path, dsn: str, ca: trustme.CA) -> None:
        self.root = root
        self.dsn = dsn
        self.ca = ca
        self.all: list[DaemonProcess] = []

    async def start(
        self, count: int, *, static_url: str | None = None, extra: str = ""
    ) -> list[DaemonProcess]:
        started = []
        for _ in range(count):
            home = self.root / f"node{len(self.all)}"
            home.mkdir()
            port = free_port()
            config = home / "wahookd.toml"
            write_config(config, port, self.dsn, self.ca, static_url=static_url, extra=extra)
            node = DaemonProcess(config, port, home)
            self.all.append(node)
            await node.start(timeout_s=30)
            started.append(node)
        return started

    async def close(self) -> None:
        for node in self.all:
            if node.proc is not None and node.proc.returncode is None:
                node.proc.kill()
                await node.wait()


async def call(
    node: DaemonProcess, method: str, path: str, body: Any = None, timeout_s: float = 10.0
) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON answer, headers) of one API call with an admin token."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
        http.request(
            method,
            f"{node.base}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token()}"},
        ) as resp,
    ):
        return resp.status, await resp.json(), dict(resp.headers)


async def api(node: DaemonProcess, method: str, path: str, body: Any = None) -> Any:
    """One API call that must succeed; its JSON answer."""
    status, answer, _ = await call(node, method, path, body)
    assert status < 300, (method, path, status, answer)
    return answer


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> float:
    """Wait until `check()` holds; how long it took."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def knows(node: DaemonProcess, public_id: str, active: bool | None = True) -> bool:
    """Whether the node's registry has the webhook (GET /api/webhooks/{id} reads it),
    active or not as asked; `active=None`: whether it is gone."""
    status, answer, _ = await call(node, "GET", f"/api/webhooks/{public_id}")
    if active is None:
        return status == 404
    return status == 200 and answer["webhook"]["isActive"] is active
