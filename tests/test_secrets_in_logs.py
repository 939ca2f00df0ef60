"""Secrets never reach the log: a full run of the real daemon at debug level, text and JSON."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
import trustme
from daemon_proc import DaemonProcess, free_port
from support import Receiver, Reply, ca_file

JWT_SECRET = "jwt-secret-" + "J" * 40
SESSION_SECRET = "session-secret-ABCDEF123456"
ROTATED_SECRET = "rotated-secret-ZYXWV987654"
STATIC_SECRET = "static-secret-QWERTY000111"
HEADER_VALUE = "Bearer receiver-credential-777"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_no_secret_in_a_full_run_of_logs(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, fmt: str
) -> None:
    # the receiver fails first (so error paths log too), then accepts
    receiver.replies = [Reply(status=500, body=b"boom"), Reply(status=401, body=b"nope")]
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp_path / "data" / "w.db"}"\n'
        f'[auth]\njwt_secret = "{JWT_SECRET}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, tmp_path)}"\nallow_networks = ["127.0.0.0/8"]\n'
        f'retry_schedule = ["1s", "1s"]\n'
        f'[log]\nlevel = "debug"\nformat = "{fmt}"\n'
        f'[[webhook]]\nsession = "static-s"\nurl = "{receiver.url}"\nevents = ["*"]\n'
        f'secret = "{STATIC_SECRET}"\n'
    )
    daemon = DaemonProcess(config, port, tmp_path)
    token = jwt.encode({"exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        await daemon.start()
        async with aiohttp.ClientSession(base_url=daemon.base, headers=auth) as http:
            put = {
                "url": receiver.url,
                "events": ["*"],
                "secret": SESSION_SECRET,
                "headers": {"Authorization": HEADER_VALUE},
            }
            async with http.put("/api/webhook/config/s1", json=put) as resp:
                assert resp.status == 200
            async with http.put(
                "/api/webhook/config/s1", json={**put, "secret": ROTATED_SECRET}
            ) as resp:
                assert resp.status == 200
            events = [
                {"event": "session.disconnected", "sessionId": s, "reason": "x"}
                for s in ("s1", "static-s")
            ]
            async with http.post("/api/events", json={"events": events}) as resp:
                assert resp.status == 202
            # refused calls log too: a bad token, a bad body
            async with http.get(
                "/api/webhook/queue", headers={"Authorization": f"Bearer {token}x"}
            ) as resp:
                assert resp.status == 401
            async with http.put("/api/webhook/config/s1", json={**put, "url": 5}) as resp:
                assert resp.status == 400
            async with http.post(
                "/api/webhook/test", json={"url": receiver.url, "secret": SESSION_SECRET}
            ) as resp:
                assert resp.status == 200
            await receiver.wait_for(4, timeout_s=15)  # 3 attempts (one fails) and the test
            for _ in range(150):  # then everything gets delivered
                async with http.get("/api/webhook/queue") as resp:
                    queue = (await resp.json())["queue"]
                if not any(queue.values()):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"queue not drained: {queue}")
        await daemon.signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        await daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    finally:
        await daemon.stop()
    log = daemon.log()
    assert "listening on" in log
    # the log really covers the run: one line per finished attempt, failures included
    attempts = [line for line in log.splitlines() if "attempt dlv_" in line]
    assert len(attempts) >= 3, log
    if fmt == "json":
        fields = json.loads(attempts[0])
        assert {"delivery", "session", "event", "attempt", "status", "ms", "outcome"} <= set(fields)
    assert any("retry" in a for a in attempts), attempts  # a failed attempt was logged
    for secret in (JWT_SECRET, SESSION_SECRET, ROTATED_SECRET, STATIC_SECRET, HEADER_VALUE, token):
        assert secret not in log, f"a secret leaked into the {fmt} log"
    # nor any tail or head of one that masking might have left long enough to matter
    for secret in (SESSION_SECRET, ROTATED_SECRET, STATIC_SECRET):
        assert secret[:12] not in log and secret[-12:] not in log
    db = tmp_path / "data" / "w.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
