"""The receiver every measurement posts to, and how arrivals are counted.

nginx (Debian's nginx-light, installed by bench/setup.sh) when it is there: one worker,
`return 200` for each measurement's own location, and an access log per location with
one line per request: `$msec $status $http_x_webhook_id`. Otherwise N aiohttp processes
on uvloop sharing the port (SO_REUSEPORT) write the same lines (suite/aioreceiver.py).
Either way, an arrival is a line in that location's log: counting lines tells when a
run is complete, and the largest timestamp among 2xx lines is the last 2xx.

The receiver listens on one port, or on several (`ports`, for (g)'s many webhooks): one
nginx server block (still one worker) with a `listen` per port, or every aiohttp process
bound to each port. A location also takes sub-paths (`/NAME/...`), logged to the same
file with two more fields, `$server_port $uri`, so a run can check where each delivery
went; the log counts arrivals over every port at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .common import bench_env, cpu_s, say

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    log_format bench '$msec $status $http_x_webhook_id';
    log_format bench_route '$msec $status $http_x_webhook_id $server_port $uri';
    # long-lived keep-alive connections, as wahookd's and the clients' pools expect
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
{listens}
{locations}
        location / {{ return 404; }}
    }}
}}
"""

LISTEN = "        listen 127.0.0.1:{port} backlog=4096;"

LOCATION = """\
        location = /{name} {{
            access_log {tmp}/{name}.log bench;
            return 200 "OK";
        }}
        location /{name}/ {{
            access_log {tmp}/{name}.log bench_route;
            return 200 "OK";
        }}"""

TWO_XX = re.compile(rb"^\S+ 2\d\d(?: |$)", re.MULTILINE)


@dataclass
class AccessLog:
    """One location's arrivals: lines `<unix seconds> <status> <X-Webhook-Id>` in its files."""

    directory: Path
    name: str
    _offsets: dict[Path, int] = field(default_factory=dict)
    _lines: int = 0
    _tails: dict[Path, bytes] = field(default_factory=dict)
    _ok_lines: int = 0

    def files(self) -> list[Path]:
        """nginx writes NAME.log; each aiohttp process NAME.PID.log."""
        return sorted(self.directory.glob(f"{self.name}.*log"))

    def count(self) -> int:
        """Lines written so far (read incrementally: cheap to poll)."""
        for path in self.files():
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            self._offsets[path] = offset + len(chunk)
            self._lines += chunk.count(b"\n")
        return self._lines

    def count_2xx(self) -> int:
        """Complete lines with a 2xx status written so far, over every file (so every
        port); read incrementally, a line cut by a read is counted once it is whole."""
        for path in self.files():
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            self._offsets[path] = offset + len(chunk)
            data = self._tails.get(path, b"") + chunk
            whole, _, tail = data.rpartition(b"\n")
            self._tails[path] = tail
            self._ok_lines += len(TWO_XX.findall(whole))
        return self._ok_lines

    def fields(self) -> list[list[bytes]]:
        """Every complete line, split on spaces (at least status and time)."""
        out = []
        for path in self.files():
            for line in path.read_bytes().split(b"\n"):
                parts = line.split()
                if len(parts) >= 2:
                    out.append(parts)
        return out

    def entries(self) -> list[tuple[float, int, str]]:
        """Every complete line as (unix seconds, status, X-Webhook-Id or "-")."""
        return [
            (float(p[0]), int(p[1]), p[2].decode() if len(p) > 2 else "-") for p in self.fields()
        ]

    def routes(self) -> list[tuple[float, int, str, int, str]]:
        """Lines of sub-paths: (unix seconds, status, X-Webhook-Id, local port, path)."""
        return [
            (float(p[0]), int(p[1]), p[2].decode(), int(p[3]), p[4].decode())
            for p in self.fields()
            if len(p) >= 5
        ]


class Receiver:
    """A started receiver with a location (and a log) per name in `names`."""

    def __init__(
        self, tmp: Path, ports: list[int], kind: str, procs: list[subprocess.Popen[bytes]]
    ):
        self.tmp = tmp
        self.ports = ports
        self.port = ports[0]
        self.kind = kind
        self.resolution_ms = 1.0 if kind.startswith("nginx") else 0.001
        self._procs = procs

    def url(self, name: str, port_index: int = 0, path: str = "") -> str:
        """The URL that logs to `name`: on its `port_index`-th port, with a sub-path
        (`path` starting with "/") when given."""
        return f"http://127.0.0.1:{self.ports[port_index]}/{name}{path}"

    def log(self, name: str) -> AccessLog:
        """A fresh reader of `name`'s arrivals."""
        return AccessLog(self.tmp, name)

    def pids(self) -> list[int]:
        """The processes that serve requests (nginx: its workers; aiohttp: each process)."""
        pids = []
        for proc in self._procs:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            kids = children.read_text().split() if children.exists() else []
            pids += [int(k) for k in kids] or [proc.pid]
        return pids

    def cpu_s(self) -> float:
        """CPU seconds its serving processes used so far."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_s(pid)
        return total

    def stop(self) -> None:
        """Stop every process it started, by PID (SIGKILL after 5 s)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def nginx_binary() -> str | None:
    """nginx from PATH or Debian's /usr/sbin."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def free_ports(count: int) -> list[int]:
    """`count` distinct unused TCP ports on 127.0.0.1: each bound (to port 0) and held
    until all are picked, so the kernel cannot hand out one twice."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


async def _wait_listening(
    ports: list[int], procs: list[subprocess.Popen[bytes]], timeout_s: float
) -> None:
    """Until every port answers (bounded by `timeout_s` and a count of tries)."""
    deadline = time.monotonic() + timeout_s
    waiting = list(ports)
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout_s / 0.05) + 1):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("receiver exited at start")
            for port in list(waiting):
                try:
                    async with http.get(
                        f"http://127.0.0.1:{port}/", timeout=aiohttp.ClientTimeout(1)
                    ):
                        waiting.remove(port)
                except (aiohttp.ClientError, TimeoutError):
                    pass
            if not waiting:
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    raise RuntimeError(f"receiver not listening on {waiting} after {timeout_s}s")


def _launch_nginx(
    tmp: Path, names: list[str], count: int
) -> tuple[subprocess.Popen[bytes], list[int], str]:
    """Write nginx's config (one server block listening on `count` ports), check it
    (`nginx -t`), start it; (process, ports, version)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx not found (bench/setup.sh installs it as root)")
    ports = free_ports(count)
    listens = "\n".join(LISTEN.format(port=p) for p in ports)
    locations = "\n".join(LOCATION.format(tmp=tmp, name=n) for n in names)
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, listens=listens, locations=locations))
    argv = [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {check.stderr.strip()}")
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    label = version.stderr.strip().split(":")[-1].strip() or "nginx"
    with (tmp / "nginx.out").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    return proc, ports, label


def _launch_aiohttp(
    tmp: Path, procs: int, count: int
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """Start `procs` receiver processes, each on the same `count` free ports;
    (processes, ports)."""
    ports = free_ports(count)
    arg = ",".join(str(p) for p in ports)
    started = []
    with (tmp / "aioreceiver.out").open("ab") as log:
        for _ in range(procs):
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "suite.aioreceiver", arg, str(tmp)],
                    env=bench_env(),
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
    return started, ports


async def start_nginx(tmp: Path, names: list[str], ports: int = 1) -> Receiver:
    """nginx with its own config in `tmp`: one worker listening on `ports` ports, a
    logged location per name."""
    proc, picked, label = _launch_nginx(tmp, names, ports)
    receiver = Receiver(tmp, picked, f"{label} (1 worker, return 200)", [proc])
    try:
        await _wait_listening(picked, [proc], 10)
    except BaseException:
        receiver.stop()
        raise
    return receiver


async def start_aiohttp(tmp: Path, procs: int, ports: int = 1) -> Receiver:
    """`procs` aiohttp processes on uvloop sharing `ports` ports (SO_REUSEPORT)."""
    started, picked = _launch_aiohttp(tmp, procs, ports)
    kind = f"aiohttp x{procs} processes (uvloop, SO_REUSEPORT)"
    receiver = Receiver(tmp, picked, kind, started)
    try:
        await _wait_listening(picked, started, 15)
    except BaseException:
        receiver.stop()
        raise
    return receiver


async def start_receiver(tmp: Path, names: list[str], prefer: str, ports: int = 1) -> Receiver:
    """nginx when `prefer` allows and it starts, else the aiohttp receiver; on `ports`
    ports either way."""
    if prefer in ("auto", "nginx"):
        try:
            return await start_nginx(tmp, names, ports)
        except RuntimeError as exc:
            if prefer == "nginx":
                raise
            say(f"nginx unavailable ({exc}); using the aiohttp receiver")
    return await start_aiohttp(tmp, max(2, os.cpu_count() or 2), ports)


class Blackhole:
    """A port that listens but never accepts: attempts to it hang until their timeout.

    A receiver that is down without refusing, so the daemon sends (almost) nothing while
    its webhook stays active and every ingested event still gets its delivery row.
    """

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1)
        self.port = int(self._sock.getsockname()[1])

    def url(self) -> str:
        """The URL of the paused receiver."""
        return f"http://127.0.0.1:{self.port}/paused"

    def close(self) -> None:
        """Stop listening."""
        self._sock.close()
