"""What every measurement of the suite shares: the workload, the daemon, /proc readings.

The workload is one shape everywhere: a `message.received` event whose compact JSON is
exactly `BODY_BYTES` long (what the receiver gets), signed with `WEBHOOK_SECRET`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from daemon_proc import DaemonProcess, free_port  # noqa: E402

__all__ = ["DaemonProcess", "free_port"]

JWT_SECRET = "b" * 64
WEBHOOK_SECRET = "bench-webhook-secret"
SESSION = "bench"
BODY_BYTES = 400
USER_AGENT = "wahookd-bench/1"
API_TIMEOUT = aiohttp.ClientTimeout(total=60)


# ------------------------------------------------------------------ workload
def _raw_event(i: int, text: str, session: str) -> dict[str, Any]:
    return {
        "event": "message.received",
        "sessionId": session,
        "messageId": f"msg_{i:08d}",
        "from": "15550001234",
        "to": "15550005678",
        "type": "text",
        "text": text,
        # given, so the daemon adds nothing and the delivered body is what was sent
        "timestamp": "2024-01-01T12:00:00.000Z",
    }


def compact(obj: object) -> bytes:
    """JSON as the daemon stores and delivers it: compact, UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def event(i: int, session: str = SESSION) -> dict[str, Any]:
    """The i-th event of a run: its compact JSON is BODY_BYTES long (for i < 10**8)."""
    short = len(compact(_raw_event(i, "", session)))
    return _raw_event(i, "x" * max(0, BODY_BYTES - short), session)


_TEMPLATE = compact(event(0))
_TEMPLATES: dict[str, bytes] = {SESSION: _TEMPLATE}
_MARK = b"msg_00000000"


def event_body(i: int, session: str = SESSION) -> bytes:
    """compact(event(i, session)), fast: the session's template with the message number
    swapped in."""
    template = _TEMPLATES.get(session)
    if template is None:
        template = _TEMPLATES[session] = compact(event(0, session))
    return template.replace(_MARK, b"msg_%08d" % i, 1)


def batch_body(numbers: range, sessions: list[str] | None = None) -> bytes:
    """A POST /api/events body carrying these events: all for SESSION, or event i for
    sessions[i % len(sessions)] (round-robin)."""
    if not sessions:
        return b'{"events":[' + b",".join(event_body(i) for i in numbers) + b"]}"
    n = len(sessions)
    return b'{"events":[' + b",".join(event_body(i, sessions[i % n]) for i in numbers) + b"]}"


def signed_headers(body: bytes, msg_id: str, timestamp: int, attempt: int = 1) -> dict[str, str]:
    """The headers wahookd sends (README "What a receiver gets"), computed the plain way."""
    legacy = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    standard = hmac.digest(
        WEBHOOK_SECRET.encode(), f"{msg_id}.{timestamp}.".encode() + body, "sha256"
    )
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Event": "message.received",
        "X-Webhook-Id": msg_id,
        "X-Webhook-Attempt": str(attempt),
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": f"sha256={legacy}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(standard).decode(),
    }


def batches(count: int, size: int) -> Iterator[range]:
    """Event numbers 0..count-1 cut into ranges of at most `size`."""
    for lo in range(0, count, size):
        yield range(lo, min(lo + size, count))


# -------------------------------------------------------------------- daemon
def write_daemon_config(
    tmp: Path,
    port: int,
    *,
    concurrency: int,
    per_webhook_concurrency: int,
    log_level: str,
    timeout: str = "5s",
) -> Path:
    """The bench daemon's config: the defaults (synchronous = "full"), a loopback receiver
    allowed over plain HTTP, and the concurrency this workload needs."""
    config = tmp / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp}/wahookd.db"\nsynchronous = "full"\n'
        f'[auth]\njwt_secret = "{JWT_SECRET}"\n'
        "[delivery]\nrequire_https = false\n"
        'allow_networks = ["127.0.0.0/8"]\n'
        f"concurrency = {concurrency}\n"
        f"per_webhook_concurrency = {per_webhook_concurrency}\n"
        f'timeout = "{timeout}"\n'
        f'[log]\nlevel = "{log_level}"\n'
    )
    return config


def auth_headers() -> dict[str, str]:
    """An admin token for the bench daemon, valid for 6 hours."""
    token = jwt.encode({"exp": int(time.time()) + 6 * 3600}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def running_daemon(tmp: Path, **config: Any) -> Any:
    """A fresh daemon (own database) in `tmp`, stopped by its PID on the way out."""
    port = free_port()
    daemon = DaemonProcess(write_daemon_config(tmp, port, **config), port, tmp)
    try:
        await daemon.start(timeout_s=60)
        yield daemon
    finally:
        await daemon.stop()


def pid_of(daemon: DaemonProcess) -> int:
    """The daemon's PID (it must have been started)."""
    assert daemon.proc is not None
    return daemon.proc.pid


async def put_webhook(http: aiohttp.ClientSession, base: str, url: str, session: str = SESSION):
    """Configure the session's webhook (all events, signed)."""
    async with http.put(
        f"{base}/api/webhook/config/{session}",
        json={"url": url, "events": ["*"], "secret": WEBHOOK_SECRET},
        timeout=API_TIMEOUT,
    ) as resp:
        if resp.status != 200:
            raise RuntimeError(f"PUT webhook: {resp.status} {await resp.text()}")


async def post_events(http: aiohttp.ClientSession, base: str, body: bytes) -> dict[str, Any]:
    """POST /api/events with a pre-encoded body; a 503 (storage busy) is retried, bounded."""
    for attempt in range(20):
        async with http.post(
            f"{base}/api/events",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=API_TIMEOUT,
        ) as resp:
            if resp.status == 202:
                answer: dict[str, Any] = await resp.json()
                return answer
            text = await resp.text()
            if resp.status != 503:
                raise RuntimeError(f"POST /api/events: {resp.status} {text}")
        await asyncio.sleep(0.1 * (attempt + 1))
    raise RuntimeError("POST /api/events: still 503 after 20 tries")


async def queue_counts(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    """GET /api/webhook/queue."""
    async with http.get(f"{base}/api/webhook/queue", timeout=API_TIMEOUT) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"GET queue: {resp.status} {body}")
        return dict(body["queue"])


async def session_stats(
    http: aiohttp.ClientSession, base: str, session: str = SESSION
) -> dict[str, Any]:
    """GET /api/webhook/stats/{session}: the `stats` object (successful, failed, ...)."""
    async with http.get(f"{base}/api/webhook/stats/{session}", timeout=API_TIMEOUT) as resp:
        body: dict[str, Any] = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"GET stats: {resp.status} {body}")
        stats: dict[str, Any] = body["stats"]
        return stats


async def sessions_overview(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    """GET /api/webhook/sessions: every session with a webhook, its queue and stats."""
    async with http.get(f"{base}/api/webhook/sessions", timeout=API_TIMEOUT) as resp:
        body: dict[str, Any] = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"GET sessions: {resp.status} {body}")
        sessions: list[dict[str, Any]] = body["sessions"]
        return sessions


async def run_workers(count: int, worker: Callable[[int], Awaitable[None]]) -> None:
    """Run `count` copies of worker(n) and wait for all; the first error cancels the rest."""
    async with asyncio.TaskGroup() as tg:
        for n in range(count):
            tg.create_task(worker(n))


async def wait_until(done: Callable[[], bool], timeout_s: float, every_s: float = 0.02) -> bool:
    """Poll `done` until it holds or `timeout_s` passes; whether it held (bounded by both)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / every_s) + 2):
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)
    return done()


# --------------------------------------------------------------------- /proc
def mem_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; VmHWM is its peak resident set."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    """CPU seconds of this (the bench's) process."""
    t = os.times()
    return t.user + t.system


def filesystem_of(path: Path) -> str:
    """The filesystem type holding `path` (tmpfs would make every fsync free)."""
    best, fstype = "", "?"
    real = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1]
        prefix = mount.rstrip("/") + "/"
        if (real == mount or real.startswith(prefix)) and len(mount) > len(best):
            best, fstype = mount, parts[2]
    return fstype


def percentiles(values: list[float], points: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of values (ms), plus max; empty dict for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
        out[f"p{p:g}"] = ordered[rank - 1]
    out["max"] = ordered[-1]
    return out


def say(message: str) -> None:
    """Progress to stderr, so stdout keeps only the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_env() -> dict[str, str]:
    """The environment for the suite's own subprocesses: `suite` importable."""
    path = os.pathsep.join(p for p in (str(REPO / "bench"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


async def run_module(
    module: str, args: list[str], timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`python -m module args...` in its own process (with `env` added); its stdout's JSON.
    Killed by PID if it outlives `timeout_s`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env={**bench_env(), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{module} exited {proc.returncode}: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result
