"""examples/receivers/: each receiver, as shipped, against the real daemon (issue 14).

Each runs as a subprocess on 127.0.0.1 (python3 with aiohttp, node with Express, the PHP
CLI server) and gets the eight event types from a real `wahookd serve`; then the test
posts to it directly: a duplicate X-Webhook-Id, bad and missing signatures, a rotation's
two Standard Webhooks signatures and an unknown event type.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemon_proc import DaemonProcess, cli, free_port

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[1] / "examples" / "receivers"
NODE_DIR = EXAMPLES / "node"
SESSION = "receivers-e2e"
# a whsec_ secret: X-Webhook-Signature keys on its UTF-8 bytes, webhook-signature on the
# base64-decoded rest, so both key derivations are exercised
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()

EVENTS: list[dict[str, Any]] = [
    {
        "event": "message.received",
        "messageId": "msg_1",
        "from": "1234567890",
        "to": "me",
        "type": "text",
        "text": "Hello! How can I help you?",
        "contact": {"name": "John Doe"},
    },
    {
        "event": "message.sent",
        "messageId": "msg_2",
        "from": "me",
        "to": "1234567890",
        "type": "text",
        "text": "Thanks for contacting us!",
    },
    {"event": "message.delivered", "messageId": "msg_2", "to": "1234567890"},
    {"event": "message.read", "messageId": "msg_2", "to": "1234567890"},
    {
        "event": "session.connected",
        "phoneNumber": "+1234567890",
        "deviceInfo": {"model": "iPhone 15 Pro", "version": "2.2408.10"},
    },
    {"event": "session.disconnected", "reason": "connection_lost"},
    {
        "event": "session.qr_generated",
        "qrCode": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA",
        "expiresAt": "2024-01-01T09:31:30.000Z",
    },
    {
        "event": "contact.updated",
        "phoneNumber": "1234567890",
        "contact": {"name": "John Doe", "status": "Available"},
    },
]


def _missing(*tools: str) -> str | None:
    lost = [t for t in tools if shutil.which(t) is None]
    return " and ".join(lost) if lost else None


def _skip_unless(*tools: str) -> None:
    lost = _missing(*tools)
    if lost:
        pytest.skip(
            f"{lost} not installed (make test installs it through apt when run as root; "
            "see scripts/test-deps.sh)"
        )


def _node_ready() -> None:
    """node, and the Express the lock file names (npm ci when node_modules is missing)."""
    _skip_unless("node")
    if (NODE_DIR / "node_modules" / "express").is_dir():
        return
    _skip_unless("npm")
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"npm ci failed in {NODE_DIR}: {done.stderr.strip()[-300:]}")


@dataclass(frozen=True)
class Example:
    """How to check for and start one language's receiver."""

    ready: Callable[[], None]
    argv: Callable[[int], list[str]]
    cwd: Path


EXAMPLE_RECEIVERS: dict[str, Example] = {
    "python": Example(
        ready=lambda: None,  # this interpreter, with the venv's aiohttp
        argv=lambda port: [sys.executable, "receiver.py"],
        cwd=EXAMPLES / "python",
    ),
    "node": Example(
        ready=_node_ready,
        argv=lambda port: ["node", "server.js"],
        cwd=NODE_DIR,
    ),
    "php": Example(
        ready=lambda: _skip_unless("php"),
        argv=lambda port: ["php", "-S", f"127.0.0.1:{port}", "receiver.php"],
        cwd=EXAMPLES / "php",
    ),
}


class ReceiverProcess:
    """One example receiver in a subprocess, stopped by its PID."""

    def __init__(self, example: Example, tmp: Path) -> None:
        self.example = example
        self.port = free_port()
        self.received_log = tmp / "received.jsonl"
        self.out_path = tmp / "receiver.out"
        self.env = {
            **os.environ,
            "WEBHOOK_SECRET": SECRET,
            "PORT": str(self.port),
            "RECEIVED_LOG": str(self.received_log),
            "SEEN_IDS_FILE": str(tmp / "seen-ids"),  # PHP keeps its seen ids in a file
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Where the receiver takes webhooks."""
        return f"http://127.0.0.1:{self.port}/webhook"

    def output(self) -> str:
        """Everything the receiver printed."""
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    async def start(self, timeout_s: float = 20.0) -> None:
        """Start it and wait until its port accepts connections."""
        with self.out_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.example.argv(self.port),
                cwd=self.example.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"receiver exited {self.proc.returncode}:\n{self.output()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"receiver not up in {timeout_s}s:\n{self.output()}"
                    ) from err
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it hangs."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def lines(self) -> list[dict[str, Any]]:
        """The deliveries it processed, one JSON object each."""
        if not self.received_log.exists():
            return []
        text = self.received_log.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    async def wait_for_lines(self, n: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Wait until it has processed n deliveries."""
        deadline = time.monotonic() + timeout_s
        while len(lines := self.lines()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(lines)} of {n} deliveries processed in {timeout_s}s: {lines}\n"
                    f"receiver said:\n{self.output()}"
                )
            await asyncio.sleep(0.05)
        return lines


def signed_headers(
    body: bytes, delivery_id: str, *, standard_signatures: list[str] | None = None
) -> dict[str, str]:
    """The headers wahookd sends with a secret (SPEC §5), made independently here."""
    timestamp = str(int(time.time()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    good = base64.b64encode(
        hmac.digest(key, f"{delivery_id}.{timestamp}.".encode() + body, "sha256")
    ).decode()
    sigs = standard_signatures if standard_signatures is not None else [f"v1,{good}"]
    return {
        "Content-Type": "application/json",
        "X-Webhook-Id": delivery_id,
        "X-Webhook-Event": "message.read",
        "X-Webhook-Signature": "sha256=" + hmac.digest(SECRET.encode(), body, "sha256").hex(),
        "webhook-id": delivery_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": " ".join(s.replace("{good}", good) for s in sigs),
    }


async def run_cli(*args: str, cwd: Path) -> str:
    """The wahookd CLI's stdout."""
    proc = await asyncio.create_subprocess_exec(
        *cli(*args), cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[DaemonProcess, str]]:
    """The real daemon, allowed to send plain HTTP to loopback; and an admin token."""
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp_path / "data" / "wahookd.db"}"\n'
        # the examples listen on plain HTTP on loopback, which the defaults refuse
        '[delivery]\nrequire_https = false\nallow_networks = ["127.0.0.0/8"]\n'
    )
    proc = DaemonProcess(config, port, tmp_path)
    await proc.start()
    try:
        token = (await run_cli("token", "-c", str(config), cwd=tmp_path)).strip()
        yield proc, token
    finally:
        await proc.stop()


@pytest.mark.parametrize("language", list(EXAMPLE_RECEIVERS))
async def test_example_receiver_with_real_deliveries(
    language: str, tmp_path: Path, daemon: tuple[DaemonProcess, str]
) -> None:
    example = EXAMPLE_RECEIVERS[language]
    example.ready()
    rx = ReceiverProcess(example, tmp_path)
    await rx.start()
    proc, token = daemon
    auth = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.put(
                f"{proc.base}/api/webhook/config/{SESSION}",
                json={"url": rx.url, "events": ["*"], "secret": SECRET},
                headers=auth,
            ) as resp:
                assert resp.status == 200, await resp.text()
            events = [{**e, "sessionId": SESSION} for e in EVENTS]
            async with http.post(
                f"{proc.base}/api/events", json={"events": events}, headers=auth
            ) as resp:
                assert resp.status == 202, await resp.text()
                assert (await resp.json())["queued"] == 8

            # all eight delivered, verified (both signature schemes) and processed once
            lines = await rx.wait_for_lines(8)
            assert sorted(line["event"] for line in lines) == sorted(e["event"] for e in EVENTS)
            assert all(line["verified"] is True for line in lines), lines
            assert all(line["standardWebhooks"] is True for line in lines), lines
            assert len({line["id"] for line in lines}) == 8
            async with http.get(f"{proc.base}/api/webhook/stats/{SESSION}", headers=auth) as r:
                stats = (await r.json())["stats"]
            assert stats["successful"] == 8 and stats["failed"] == 0, stats

            async def post(body: bytes, headers: dict[str, str]) -> int:
                async with http.post(rx.url, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status

            # a second attempt of a delivered one (same X-Webhook-Id): 200, not processed
            first = lines[0]
            body = json.dumps({**EVENTS[3], "sessionId": SESSION}).encode()
            assert await post(body, signed_headers(body, first["id"])) == 200

            # signatures that do not match, or are missing: 401 (never a 500)
            bad = signed_headers(body, "dlv_bad_signature")
            bad["X-Webhook-Signature"] = "sha256=" + "0" * 64
            assert await post(body, bad) == 401
            short = signed_headers(body, "dlv_short_signature")
            short["X-Webhook-Signature"] = "sha256=00"
            assert await post(body, short) == 401
            missing = signed_headers(body, "dlv_no_signature")
            del missing["X-Webhook-Signature"]
            assert await post(body, missing) == 401
            wrong_standard = signed_headers(
                body, "dlv_bad_standard", standard_signatures=["v1,AAAA"]
            )
            assert await post(body, wrong_standard) == 401
            assert await post(body + b" ", signed_headers(body, "dlv_body_changed")) == 401

            # during a rotation: two v1 signatures, the old one first; either may match
            rotated = signed_headers(
                body,
                "dlv_rotation",
                standard_signatures=["v1," + base64.b64encode(b"x" * 32).decode(), "v1,{good}"],
            )
            assert await post(body, rotated) == 200

            # an unknown event type: logged and 200
            unknown = json.dumps({"event": "test", "message": "hello"}).encode()
            assert await post(unknown, signed_headers(unknown, "dlv_unknown")) == 200

            after = await rx.wait_for_lines(10)
            assert [(x["id"], x["event"]) for x in after[8:]] in (
                [("dlv_rotation", "message.read"), ("dlv_unknown", "test")],
                [("dlv_unknown", "test"), ("dlv_rotation", "message.read")],
            )
            await asyncio.sleep(0.2)  # anything else it would process has had its turn
            ids = [x["id"] for x in rx.lines()]
            assert len(ids) == 10 and ids.count(first["id"]) == 1, rx.lines()
    finally:
        await rx.stop()
    assert "Traceback" not in rx.output()
    assert "Fatal error" not in rx.output()


def test_node_modules_are_ignored() -> None:
    """npm ci's output stays out of git."""
    gitignore = (Path(__file__).parents[1] / ".gitignore").read_text().splitlines()
    assert "/examples/receivers/node/node_modules/" in gitignore
