"""(b) wahookd end to end: ingest N events through the batch API, time to the last 2xx.

A fresh daemon (its own database, synchronous = "full", every attempt logged) with one
session whose webhook points at the receiver. The clock starts just before the first
POST /api/events and stops at the receiver's timestamp of the last 2xx it answered
(the largest `$msec` among 2xx lines of its access log). Completion is detected by
polling the log's line count every 20 ms; the queue and the session's stats are then
checked through the API, so a run that lost or duplicated deliveries says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .common import (
    auth_headers,
    batch_body,
    batches,
    cpu_s,
    mem_kb,
    pid_of,
    post_events,
    put_webhook,
    queue_counts,
    running_daemon,
    say,
    self_cpu_s,
    session_stats,
    wait_until,
)
from .profile import Profiler
from .receiver import Receiver

NAME = "wahookd"


@dataclass(frozen=True)
class Options:
    """What (b) does."""

    events: int
    batch: int  # events per POST /api/events
    parallel: int  # ingest requests in flight
    concurrency: int  # delivery.concurrency and per_webhook_concurrency
    log_level: str
    timeout_s: float
    profile_dir: Path | None = None


async def ingest_all(http: aiohttp.ClientSession, base: str, bodies: list[bytes], parallel: int):
    """POST every pre-encoded batch, `parallel` at a time."""
    todo = iter(bodies)

    async def worker() -> None:
        for body in todo:
            await post_events(http, base, body)

    await asyncio.gather(*(worker() for _ in range(parallel)))


@dataclass
class TimedIngest:
    """What one timed phase measured: its clock, CPU readings, peak memory, the queue after."""

    t0: float
    complete: bool
    polled_at: float
    ingested_at: list[float]
    cpu0: float
    cpu1: float
    rx_cpu0: float
    rx_cpu1: float
    self0: float
    self1: float
    hwm_kb: int
    queue: dict[str, int]


async def timed_ingest(
    pid: int,
    rx: Receiver,
    http: aiohttp.ClientSession,
    base: str,
    bodies: list[bytes],
    parallel: int,
    arrived: Callable[[], bool],
    timeout_s: float,
    profile_dir: Path | None,
    profile_name: str,
) -> TimedIngest:
    """Ingest every body while the receiver's log fills; stop when `arrived()` (or the
    ingest failed), then wait (bounded) for the last outcomes to commit. (b) and (g)."""
    profiler = None
    ingested_at: list[float] = []
    if profile_dir is not None:
        profiler = await Profiler.attach(pid, profile_dir, profile_name)
    try:
        cpu0, rx_cpu0, self0 = cpu_s(pid), rx.cpu_s(), self_cpu_s()
        t0 = time.time()
        ingest = asyncio.create_task(ingest_all(http, base, bodies, parallel))
        ingest.add_done_callback(lambda _: ingested_at.append(time.time()))

        def done() -> bool:
            failed = ingest.done() and ingest.exception() is not None
            return failed or arrived()

        complete = await wait_until(done, timeout_s)
        polled_at = time.time()
        await ingest  # raises what the ingest raised
        cpu1, rx_cpu1, self1 = cpu_s(pid), rx.cpu_s(), self_cpu_s()
    finally:
        if profiler is not None:
            outputs = await profiler.stop()
            say("profile: " + ", ".join(str(p) for p in outputs))
    _, hwm_kb = mem_kb(pid)
    # the last outcomes commit just after their 2xx was logged: wait for them (bounded)
    for _ in range(50):
        queue = await queue_counts(http, base)
        if not any(queue.values()):
            break
        await asyncio.sleep(0.1)
    return TimedIngest(
        t0,
        complete,
        polled_at,
        ingested_at,
        cpu0,
        cpu1,
        rx_cpu0,
        rx_cpu1,
        self0,
        self1,
        hwm_kb,
        queue,
    )


async def measure(rx: Receiver, tmp: Path, opts: Options) -> dict[str, Any]:
    """Run (b) in `tmp`; the figures as a dict."""
    log = rx.log(NAME)
    if opts.profile_dir is not None:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    # encoded before the clock starts: the bench's JSON is not the daemon's work
    bodies = [batch_body(r) for r in batches(opts.events, opts.batch)]
    async with (
        running_daemon(
            tmp,
            concurrency=opts.concurrency,
            per_webhook_concurrency=opts.concurrency,
            log_level=opts.log_level,
        ) as daemon,
        aiohttp.ClientSession(headers=auth_headers()) as http,
    ):
        pid = pid_of(daemon)
        await put_webhook(http, daemon.base, rx.url(NAME))
        run = await timed_ingest(
            pid,
            rx,
            http,
            daemon.base,
            bodies,
            opts.parallel,
            lambda: log.count() >= opts.events,
            opts.timeout_s,
            opts.profile_dir,
            "wahookd-b",
        )
        t0, complete, polled_at, ingested_at = run.t0, run.complete, run.polled_at, run.ingested_at
        cpu0, cpu1, rx_cpu0, rx_cpu1 = run.cpu0, run.cpu1, run.rx_cpu0, run.rx_cpu1
        self0, self1, hwm_kb, queue = run.self0, run.self1, run.hwm_kb, run.queue
        stats = await session_stats(http, daemon.base)
    entries = log.entries()
    ok = [e for e in entries if 200 <= e[1] < 300]
    unique = len({e[2] for e in ok})
    last = max((e[0] for e in ok), default=polled_at)
    seconds = max(last - t0, 1e-9)
    return {
        "events": opts.events,
        "batch": opts.batch,
        "ingest_parallel": opts.parallel,
        "concurrency": opts.concurrency,
        "log_level": opts.log_level,
        "complete": complete,
        "arrivals": len(entries),
        "delivered_unique": unique,
        "duplicates": len(ok) - unique,
        "seconds": seconds,
        "per_s": unique / seconds,
        "ingest_s": ingested_at[0] - t0 if ingested_at else None,
        "detect_lag_ms": (polled_at - last) * 1000,
        "daemon_cpu_s": cpu1 - cpu0,
        "daemon_cpu_us_per_delivery": (cpu1 - cpu0) / max(unique, 1) * 1e6,
        "receiver_cpu_s": rx_cpu1 - rx_cpu0,
        "bench_cpu_s": self1 - self0,
        "hwm_mb": hwm_kb / 1024,
        "queue_after": queue,
        "stats_successful": stats.get("successful"),
        "profiled": opts.profile_dir is not None,
    }
