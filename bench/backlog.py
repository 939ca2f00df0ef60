"""Bounded memory: the daemon's RSS and restart time behind a backlog of queued deliveries.

Starts its own dead receiver (answers every POST 500 and timestamps arrivals) and
its own daemon on 127.0.0.1, builds a backlog of `--count` queued deliveries for a
few sessions' webhooks, then:

1. samples the daemon's RSS (/proc/PID/status) for `--sample-s` while it keeps
   attempting, and prints the peak;
2. restarts it (SIGTERM, wait, start) and measures process start -> first attempt
   at the receiver, then samples the fresh process's RSS the same way;
3. prints a table against the targets (RSS < 150 MB, first attempt < 3 s) and
   writes bench/results/backlog.json.

The backlog is built through the real path, `POST /api/events` with batches of up
to 1000 events, against the running daemon (`--build api`, the default), or
offline with the daemon's own store code before it starts (`--build store`).
Events go to the sessions round-robin; `--grouped` sends each session's events in
one run instead (bursts), which makes every dead webhook's lane overflow. Usage:

    .venv/bin/python bench/backlog.py [--count 1000000] [--sessions 4] [--sample-s 20]
    .venv/bin/python bench/backlog.py --count 100000          # quick check, ~25 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from daemon_proc import DaemonProcess, free_port

SECRET = "b" * 64
RSS_TARGET_MB = 150.0
FIRST_ATTEMPT_TARGET_S = 3.0
MAX_COUNT = 5_000_000
MAX_BATCH = 1000
RESULTS = Path(__file__).parent / "results" / "backlog.json"
# the first attempt is immediate, then these waits; the long last step keeps every
# delivery queued (`retrying`, never `failed`) for the whole run
RETRY_SCHEDULE = ["1s", "2s", "5s", "24h"]


# ------------------------------------------------------------------ receiver
@dataclass
class Receiver:
    """A dead receiver: every POST gets a 500, so every delivery stays queued."""

    arrivals: int = 0
    mark: float | None = None  # monotonic time after which the first arrival is wanted
    first_after_mark: float | None = None
    got_first: asyncio.Event = field(default_factory=asyncio.Event)

    async def hook(self, request: web.Request) -> web.Response:
        """Timestamp the arrival before anything else, then refuse it."""
        now = time.monotonic()
        await request.read()
        self.arrivals += 1
        if self.mark is not None and self.first_after_mark is None and now >= self.mark:
            self.first_after_mark = now
            self.got_first.set()
        return web.Response(status=500, text="receiver down")

    def arm(self, mark: float) -> None:
        """Wait for the first arrival at or after `mark`."""
        self.mark, self.first_after_mark = mark, None
        self.got_first.clear()


# ------------------------------------------------------------------- memory
def read_mem_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass
class Sample:
    """What one sampling window saw."""

    seconds: float
    peak_rss_mb: float
    first_rss_mb: float
    last_rss_mb: float
    hwm_mb: float
    attempts: int  # arrivals at the receiver during the window
    attempts_per_s: float


async def sample_rss(pid: int, rx: Receiver, seconds: float, every_s: float = 0.25) -> Sample:
    """Sample VmRSS every `every_s` for `seconds` (bounded by count and time)."""
    start, arrivals0 = time.monotonic(), rx.arrivals
    rss: list[int] = []
    hwm = 0
    for _ in range(int(seconds / every_s) + 1):
        kb, hwm = read_mem_kb(pid)
        rss.append(kb)
        if time.monotonic() - start >= seconds:
            break
        await asyncio.sleep(every_s)
    elapsed = time.monotonic() - start
    return Sample(
        seconds=elapsed,
        peak_rss_mb=max(rss) / 1024,
        first_rss_mb=rss[0] / 1024,
        last_rss_mb=rss[-1] / 1024,
        hwm_mb=hwm / 1024,
        attempts=rx.arrivals - arrivals0,
        attempts_per_s=(rx.arrivals - arrivals0) / elapsed,
    )


# ------------------------------------------------------------------- backlog
@dataclass(frozen=True)
class Layout:
    """Which session the i-th event of the backlog belongs to."""

    count: int
    sessions: int
    grouped: bool  # each session's events in one run (bursts), not round-robin

    def session(self, i: int) -> str:
        """The session id of event i."""
        s = i * self.sessions // self.count if self.grouped else i % self.sessions
        return f"bench-{s}"


def event(i: int, layout: Layout) -> dict[str, Any]:
    """The i-th event of the backlog: a small text message, like most real traffic."""
    return {
        "event": "message.received",
        "sessionId": layout.session(i),
        "messageId": f"msg_{i}",
        "from": "15550001234",
        "to": "15550005678",
        "type": "text",
        "text": f"backlog message {i}",
    }


def batches(count: int, size: int) -> list[range]:
    """The backlog cut into ranges of event numbers, one per request."""
    return [range(lo, min(lo + size, count)) for lo in range(0, count, size)]


async def run_workers(
    jobs: list[range], parallel: int, do: Callable[[range], Awaitable[None]], label: str
) -> None:
    """Run `do` over every job with `parallel` workers, printing progress to stderr."""
    todo = iter(jobs)
    done = 0
    step = max(1, len(jobs) // 10)
    start = time.monotonic()

    async def worker() -> None:
        nonlocal done
        for job in todo:  # the shared iterator hands each job to one worker
            await do(job)
            done += 1
            if done % step == 0:
                print(
                    f"  {label}: {done}/{len(jobs)} batches, {time.monotonic() - start:.1f}s",
                    file=sys.stderr,
                )

    await asyncio.gather(*(worker() for _ in range(parallel)))


async def build_via_api(
    http: aiohttp.ClientSession, base: str, layout: Layout, batch: int, parallel: int
) -> int:
    """POST the backlog to /api/events; returns the deliveries queued."""
    queued = 0

    async def post(job: range) -> None:
        nonlocal queued
        body = json.dumps({"events": [event(i, layout) for i in job]}).encode()
        for attempt in range(20):  # bounded: a 503 (storage busy) is retried, nothing else
            async with http.post(
                f"{base}/api/events", data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                if resp.status == 202:
                    queued += (await resp.json())["queued"]
                    return
                text = await resp.text()
                if resp.status != 503:
                    raise RuntimeError(f"POST /api/events: {resp.status} {text}")
            await asyncio.sleep(0.1 * (attempt + 1))
        raise RuntimeError("POST /api/events: still 503 after 20 tries")

    await run_workers(batches(layout.count, batch), parallel, post, "ingest")
    return queued


async def build_via_store(db: Path, rx_url: str, layout: Layout, batch: int) -> int:
    """Write the backlog with the daemon's own store code, before the daemon starts."""
    from wahookd.events import parse_ingest_body
    from wahookd.store import IngestItem, SqliteStore

    store = await SqliteStore.open(db, "full")
    try:
        hooks = {}
        for s in range(layout.sessions):
            hook, _ = await store.put_session_webhook(
                f"bench-{s}", rx_url, ["*"], "s", True, (), time.time()
            )
            hooks[hook.session] = hook.id
        queued = 0

        async def ingest(job: range) -> None:
            nonlocal queued
            now = time.time()
            events = parse_ingest_body({"events": [event(i, layout) for i in job]}, now=now)
            items = [IngestItem(ev, (hooks[ev.session_id],)) for ev in events]
            results = await store.ingest(items, now)
            queued += sum(len(r.deliveries) for r in results)

        # two writers in flight so group commit overlaps building a batch with the last commit
        await run_workers(batches(layout.count, batch), 2, ingest, "store ingest")
        return queued
    finally:
        await store.close()


# -------------------------------------------------------------------- daemon
def write_config(tmp: Path, port: int) -> Path:
    """A config for the bench daemon: loopback receiver allowed, short retries, long last step."""
    config = tmp / "wahookd.toml"
    schedule = ", ".join(f'"{s}"' for s in RETRY_SCHEDULE)
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp}/w.db"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
        "[delivery]\nrequire_https = false\n"
        'allow_networks = ["127.0.0.0/8"]\n'
        f"retry_schedule = [{schedule}]\n"
        '[log]\nlevel = "warning"\n'
    )
    return config


async def queue_counts(http: aiohttp.ClientSession, base: str) -> tuple[dict[str, int], float]:
    """GET /api/webhook/queue and how long it took, in ms."""
    start = time.monotonic()
    async with http.get(f"{base}/api/webhook/queue", timeout=aiohttp.ClientTimeout(60)) as resp:
        body = await resp.json()
    elapsed_ms = (time.monotonic() - start) * 1000
    if resp.status != 200:
        raise RuntimeError(f"GET /api/webhook/queue: {resp.status} {body}")
    return dict(body["queue"]), elapsed_ms


def db_size_mb(tmp: Path) -> float:
    """The database with its WAL, in MiB."""
    return sum(p.stat().st_size for p in tmp.glob("w.db*")) / 2**20


def log_problems(daemon: DaemonProcess) -> list[str]:
    """Warning and error lines the daemon logged (its level is `warning`)."""
    return [line for line in daemon.log().splitlines() if line.strip()][:20]


# ---------------------------------------------------------------------- main
async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Build the backlog, sample, restart, sample; returns the results."""
    rx = Receiver()
    rx_app = web.Application()
    rx_app.router.add_post("/hook", rx.hook)
    rx_runner = web.AppRunner(rx_app, access_log=None)
    await rx_runner.setup()
    rx_port = free_port()
    await web.TCPSite(rx_runner, "127.0.0.1", rx_port).start()
    rx_url = f"http://127.0.0.1:{rx_port}/hook"
    token = jwt.encode({"exp": int(time.time()) + 6 * 3600}, SECRET, algorithm="HS256")
    auth = {"Authorization": f"Bearer {token}"}
    res: dict[str, Any] = {
        "count": args.count,
        "sessions": args.sessions,
        "grouped": args.grouped,
        "build": args.build,
    }
    try:
        with tempfile.TemporaryDirectory(prefix="wahookd-backlog-") as tmp_name:
            tmp = Path(tmp_name)
            port = free_port()
            config = write_config(tmp, port)
            daemon = DaemonProcess(config, port, tmp)
            try:
                async with aiohttp.ClientSession(headers=auth) as http:
                    await run_phases(args, res, rx, rx_url, daemon, tmp, http)
            finally:
                await daemon.stop()
                res["daemon_log"] = log_problems(daemon)
    finally:
        await rx_runner.cleanup()
    return res


async def run_phases(
    args: argparse.Namespace,
    res: dict[str, Any],
    rx: Receiver,
    rx_url: str,
    daemon: DaemonProcess,
    tmp: Path,
    http: aiohttp.ClientSession,
) -> None:
    """The bench itself; fills `res` as it goes."""
    base = daemon.base
    # ---- 1. build the backlog
    layout = Layout(args.count, args.sessions, args.grouped)
    print(f"building a backlog of {args.count} deliveries ({args.build})...", file=sys.stderr)
    if args.build == "store":
        start = time.monotonic()
        queued = await build_via_store(tmp / "w.db", rx_url, layout, args.batch)
        res["build_s"] = time.monotonic() - start
        await daemon.start(timeout_s=300)
    else:
        await daemon.start(timeout_s=60)
        for s in range(args.sessions):
            async with http.put(
                f"{base}/api/webhook/config/bench-{s}",
                json={"url": rx_url, "events": ["*"], "secret": "s"},
            ) as resp:
                assert resp.status == 200, await resp.text()
        start = time.monotonic()
        queued = await build_via_api(http, base, layout, args.batch, args.parallel)
        res["build_s"] = time.monotonic() - start
    assert daemon.proc is not None
    res["queued_at_build"] = queued
    res["db_mb"] = db_size_mb(tmp)
    _, hwm_kb = read_mem_kb(daemon.proc.pid)
    res["hwm_after_build_mb"] = hwm_kb / 1024
    print(f"  built in {res['build_s']:.1f}s; db {res['db_mb']:.0f} MiB", file=sys.stderr)

    # ---- 2. RSS while attempting against the backlog
    print(f"sampling RSS for {args.sample_s:.0f}s...", file=sys.stderr)
    res["run"] = vars(await sample_rss(daemon.proc.pid, rx, args.sample_s))
    res["queue_before_restart"], res["queue_query_ms"] = await queue_counts(http, base)

    # ---- 3. restart: process start -> first attempt at the receiver
    print("restarting...", file=sys.stderr)
    start = time.monotonic()
    res["stop_exit"] = await daemon.stop()
    res["stop_s"] = time.monotonic() - start
    spawned = time.monotonic()
    rx.arm(spawned)
    await daemon.start(timeout_s=300)
    res["ready_s"] = time.monotonic() - spawned
    try:
        async with asyncio.timeout(120):
            await rx.got_first.wait()
    except TimeoutError:
        res["first_attempt_s"] = None
    else:
        assert rx.first_after_mark is not None
        res["first_attempt_s"] = rx.first_after_mark - spawned
    assert daemon.proc is not None
    print(f"sampling RSS after restart for {args.sample_s:.0f}s...", file=sys.stderr)
    res["after_restart"] = vars(await sample_rss(daemon.proc.pid, rx, args.sample_s))
    res["queue_after_restart"], res["queue_query_after_restart_ms"] = await queue_counts(http, base)


def verdict(ok: bool | None) -> str:
    """PASS, FAIL, or n/a when the value is missing."""
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def report(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The table's rows: (what, value, target, verdict)."""
    run, after = res["run"], res["after_restart"]
    q1, q2 = res["queue_before_restart"], res["queue_after_restart"]
    backlog = q2["pending"] + q2["retrying"] + q2["processing"]
    peak = max(run["peak_rss_mb"], after["peak_rss_mb"])
    first = res["first_attempt_s"]
    rows = [
        ("backlog (queued deliveries)", f"{backlog:,}", f"{res['count']:,}", ""),
        (
            f"time to build ({res['build']})",
            f"{res['build_s']:.1f} s ({res['count'] / res['build_s']:,.0f}/s)",
            "",
            "",
        ),
        ("database size", f"{res['db_mb']:.0f} MiB", "", ""),
        (
            f"peak RSS running with backlog ({run['seconds']:.0f} s)",
            f"{run['peak_rss_mb']:.1f} MB ({run['first_rss_mb']:.1f} -> {run['last_rss_mb']:.1f})",
            f"< {RSS_TARGET_MB:.0f} MB",
            verdict(run["peak_rss_mb"] < RSS_TARGET_MB),
        ),
        (
            f"peak RSS after restart ({after['seconds']:.0f} s)",
            f"{after['peak_rss_mb']:.1f} MB"
            f" ({after['first_rss_mb']:.1f} -> {after['last_rss_mb']:.1f})",
            f"< {RSS_TARGET_MB:.0f} MB",
            verdict(after["peak_rss_mb"] < RSS_TARGET_MB),
        ),
        ("VmHWM of the ingesting process", f"{run['hwm_mb']:.1f} MB", "", ""),
        (
            "time to first attempt after restart",
            "none in 120 s" if first is None else f"{first:.2f} s",
            f"< {FIRST_ATTEMPT_TARGET_S:.0f} s",
            verdict(None if first is None else first < FIRST_ATTEMPT_TARGET_S),
        ),
        ("  of which: start -> /readyz 200", f"{res['ready_s']:.2f} s", "", ""),
        ("SIGTERM -> exit", f"{res['stop_s']:.2f} s (exit {res['stop_exit']})", "", ""),
        (
            "attempts/s (running, after restart)",
            f"{run['attempts_per_s']:.0f}, {after['attempts_per_s']:.0f}",
            "",
            "",
        ),
        (
            "GET /api/webhook/queue (before, after)",
            f"{res['queue_query_ms']:.0f} ms, {res['queue_query_after_restart_ms']:.0f} ms",
            "",
            "",
        ),
        ("queue before restart", json.dumps(q1), "", ""),
        ("queue after restart", json.dumps(q2), "failed = 0", verdict(q2["failed"] == 0)),
    ]
    res["peak_rss_mb"] = peak
    res["backlog"] = backlog
    res["pass"] = {
        "rss": peak < RSS_TARGET_MB,
        "first_attempt": first is not None and first < FIRST_ATTEMPT_TARGET_S,
    }
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """Rows as aligned columns."""
    head = ("measure", "value", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1_000_000, help="deliveries to queue")
    parser.add_argument("--sessions", type=int, default=4, help="sessions (one webhook each)")
    parser.add_argument("--build", choices=("api", "store"), default="api")
    parser.add_argument(
        "--grouped",
        action="store_true",
        help="each session's events in one run (bursts) instead of round-robin",
    )
    parser.add_argument("--batch", type=int, default=MAX_BATCH, help="events per request")
    parser.add_argument("--parallel", type=int, default=4, help="ingest requests in flight")
    parser.add_argument("--sample-s", type=float, default=20.0, help="RSS sampling window")
    args = parser.parse_args()
    args.count = max(1, min(args.count, MAX_COUNT))
    args.sessions = max(1, min(args.sessions, 1000))
    args.batch = max(1, min(args.batch, MAX_BATCH))
    args.parallel = max(1, min(args.parallel, 16))
    args.sample_s = max(1.0, min(args.sample_s, 300.0))
    started = time.monotonic()
    results = asyncio.run(main(args))
    rows = report(results)
    results["runtime_s"] = time.monotonic() - started
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print_table(rows)
    print(f"runtime {results['runtime_s']:.0f} s")
    if results["daemon_log"]:
        print("daemon log (warnings and errors):")
        for line in results["daemon_log"]:
            print(f"  {line}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
