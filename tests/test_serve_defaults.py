"""`wahookd serve` with no config file at all: the embedded defaults just work."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import aiohttp
import pytest


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_serve_on_embedded_defaults(tmp_path: Path) -> None:
    if not port_is_free(8787):
        pytest.skip("127.0.0.1:8787 is taken by another process on this machine")
    env = {k: v for k, v in os.environ.items() if k != "WAHOOKD_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wahookd",
        "serve",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get("http://127.0.0.1:8787/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("daemon did not become ready on 127.0.0.1:8787")
            token = tmp_path / "wahookd-data" / "jwt.secret"
            assert stat.S_IMODE(token.stat().st_mode) == 0o600
            db = tmp_path / "wahookd-data" / "wahookd.db"
            assert stat.S_IMODE(db.stat().st_mode) == 0o600
            async with http.get("http://127.0.0.1:8787/api/webhook/queue") as resp:
                assert resp.status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    text = out.decode()
    assert "listening on http://127.0.0.1:8787" in text
    assert "mint a token with: wahookd token" in text
