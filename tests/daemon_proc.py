"""The real daemon as a subprocess, for end-to-end, signal and crash tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the test then binds it itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> list[str]:
    """The argv that runs the wahookd CLI with this interpreter."""
    return [sys.executable, "-m", "wahookd", *args]


class DaemonProcess:
    """`wahookd serve -c CONFIG` in a subprocess, stopped by its PID."""

    def __init__(
        self,
        config_path: Path,
        port: int,
        cwd: Path,
        env: dict[str, str] | None = None,
        program: list[str] | None = None,
    ) -> None:
        self.extra_env = env or {}
        self.program = program or cli()  # the argv before `serve -c CONFIG`
        self.config_path = config_path
        self.port = port
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = cwd / f"daemon-{port}.log"

    @property
    def base(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 15.0) -> None:
        """Start the daemon and wait until /readyz answers 200."""
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("WAHOOKD_CONFIG", None)
        self.proc = await asyncio.create_subprocess_exec(
            *self.program,
            "serve",
            "-c",
            str(self.config_path),
            cwd=self.cwd,
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
                try:
                    async with http.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon not ready in {timeout_s}s:\n{self.log()}")
                await asyncio.sleep(0.05)

    def log(self) -> str:
        """Everything the daemon printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def signal(self, signum: int) -> None:
        """Send a signal to the daemon's PID."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout_s: float = 20.0) -> int:
        """Wait for exit; returns the exit status. One that does not exit in time fails
        the test with the end of its log, which says what it was still doing."""
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"daemon did not exit in {timeout_s}s; its log ends:\n{self.log()[-4000:]}"
            ) from None

    async def stop(self) -> int:
        """SIGTERM and wait; SIGKILL if it hangs."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.wait()
