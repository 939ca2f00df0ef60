"""Signals and the systemd notify protocol, with the real daemon as a subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import aiohttp
import trustme
from daemon_proc import DaemonProcess, free_port
from support import Receiver, ca_file

SECRET = "k" * 64


def write_config(path: Path, port: int, tmp_path: Path, ca: trustme.CA, webhooks: str = "") -> None:
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp_path / "data" / "wahookd.db"}"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, tmp_path)}"\nallow_networks = ["127.0.0.0/8"]\n'
        f'retry_schedule = ["1s"]\n{webhooks}'
    )


def static(url: str, session: str = "*") -> str:
    return f'\n[[webhook]]\nsession = "{session}"\nurl = "{url}"\nevents = ["*"]\n'


async def post_event(daemon: DaemonProcess, session: str = "s1") -> dict[str, object]:
    import jwt

    token = jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    event = {"event": "session.disconnected", "sessionId": session, "reason": "x"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{daemon.base}/api/events", json=event, headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        assert resp.status == 202
        return await resp.json()  # type: ignore[no-any-return]


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def expect(self, wanted: str, timeout_s: float = 10.0) -> list[str]:
        """Read datagrams until one contains the line `wanted`."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                message = data.decode()
                self.messages.append(message)
                if wanted in message.split("\n"):
                    return self.messages

    def drain(self) -> None:
        """Read every datagram already waiting."""
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


async def test_systemd_notify_protocol(tmp_path: Path, ca: trustme.CA) -> None:
    port = free_port()
    config = tmp_path / "wahookd.toml"
    write_config(config, port, tmp_path, ca)
    notify = NotifySocket(tmp_path / "notify.sock")
    daemon = DaemonProcess(
        config, port, tmp_path, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    )
    try:
        await daemon.start()
        await notify.expect("READY=1")
        # READY only once listening: the API answered before or right after it, never refused
        pings_before = sum("WATCHDOG=1" in m for m in notify.messages)
        await asyncio.sleep(1.0)
        notify.drain()
        # WATCHDOG_USEC = 0.4 s: a ping every 0.2 s
        assert sum("WATCHDOG=1" in m for m in notify.messages) - pings_before >= 3
        await daemon.signal(signal.SIGHUP)
        await notify.expect("RELOADING=1")
        reloading_at = len(notify.messages)
        await notify.expect("READY=1")
        assert len(notify.messages) > reloading_at
        await daemon.signal(signal.SIGTERM)
        await notify.expect("STOPPING=1")
        assert await daemon.wait() == 0
    finally:
        await daemon.stop()
        notify.close()
    reload_msg = next(m for m in notify.messages if "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in reload_msg


async def test_sighup_reloads_static_webhooks_and_keeps_old_on_error(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    port = free_port()
    config = tmp_path / "wahookd.toml"
    first = receiver.url.replace("/hook", "/first")
    second = receiver.url.replace("/hook", "/second")
    write_config(config, port, tmp_path, ca, static(first))
    daemon = DaemonProcess(config, port, tmp_path)
    await daemon.start()
    try:
        assert (await post_event(daemon))["queued"] == 1
        await receiver.wait_for(1)
        write_config(config, port, tmp_path, ca, static(first) + static(second))
        await daemon.signal(signal.SIGHUP)
        await _wait_log(daemon, "reloaded: 2 static webhooks")
        assert (await post_event(daemon))["queued"] == 2
        await receiver.wait_for(3)
        # a broken file is logged and the running config kept
        config.write_text(config.read_text() + "\n[delivery]\nbogus = 1\n")
        await daemon.signal(signal.SIGHUP)
        await _wait_log(daemon, "reload failed, keeping the running config")
        assert (await post_event(daemon))["queued"] == 2
        # listen changes need a restart, and say so
        write_config(config, free_port(), tmp_path, ca, static(second))
        await daemon.signal(signal.SIGHUP)
        await _wait_log(daemon, "server.listen changed: restart wahookd to apply it")
        assert (await post_event(daemon))["queued"] == 1
        await receiver.wait_for(6)
    finally:
        assert await daemon.stop() == 0
    paths = [r.path for r in receiver.requests]
    assert paths.count("/first") == 3 and paths.count("/second") == 3


async def _wait_log(daemon: DaemonProcess, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in daemon.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{daemon.log()}"
        await asyncio.sleep(0.05)


async def test_sigterm_lets_in_flight_attempts_finish(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    from support import Reply

    receiver.default = Reply(200, delay_s=1.0)
    port = free_port()
    config = tmp_path / "wahookd.toml"
    write_config(config, port, tmp_path, ca, static(receiver.url))
    daemon = DaemonProcess(config, port, tmp_path)
    await daemon.start()
    await post_event(daemon)
    await receiver.wait_for(1)
    started = time.monotonic()
    await daemon.signal(signal.SIGTERM)
    assert await daemon.wait() == 0
    assert time.monotonic() - started >= 0.8  # it waited for the slow attempt
    # the attempt finished and was recorded: a restart has nothing left to send
    await daemon.start()
    try:
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 1
        assert "1 attempts did not finish" not in daemon.log()
        assert json.loads(receiver.requests[0].body)["sessionId"] == "s1"
    finally:
        assert await daemon.stop() == 0
