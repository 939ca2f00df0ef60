"""(c) Ingest only: how fast POST /api/events commits, with nothing being sent.

A fresh daemon whose session webhook is active but points at a paused receiver (a port
that listens and never accepts, receiver.Blackhole, with a 60 s attempt timeout): every
event still gets its delivery row and goes into the scheduler, as in production, but
the at most `concurrency` attempts it starts hang for the whole measurement instead of
competing for the CPU. Two figures, one after the other on the same daemon:

- single: `clients` concurrent clients, one event per request, for `seconds`;
- batched: `batch_parallel` clients posting `batch` events per request, for `seconds`.

Both count only 202 answers (synchronous = "full": each one is on disk).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .common import (
    API_TIMEOUT,
    auth_headers,
    batch_body,
    cpu_s,
    event_body,
    mem_kb,
    percentiles,
    pid_of,
    put_webhook,
    queue_counts,
    running_daemon,
    say,
    self_cpu_s,
)
from .profile import Profiler
from .receiver import Blackhole

JSON = {"Content-Type": "application/json"}
WARMUP_REQUESTS = 200


@dataclass(frozen=True)
class Options:
    """What (c) does."""

    seconds: float
    clients: int  # single-event clients in flight
    batch: int  # events per batched request
    batch_parallel: int  # batched requests in flight
    concurrency: int
    log_level: str
    profile_dir: Path | None = None  # py-spy each half into wahookd-c-{single,batched}.*


async def hammer(
    http: aiohttp.ClientSession,
    url: str,
    make_body: Callable[[int], bytes],
    events_per_request: int,
    clients: int,
    seconds: float,
    pid: int,
    profile: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """`clients` workers POST make_body(n) back to back until `seconds` pass."""
    numbers = itertools.count()
    ok = errors = 0
    latencies_ms: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal ok, errors
        while time.monotonic() < deadline:
            body = make_body(next(numbers))
            sent = time.perf_counter()
            async with http.post(url, data=body, headers=JSON, timeout=API_TIMEOUT) as resp:
                await resp.read()
                if resp.status == 202:
                    ok += 1
                    latencies_ms.append((time.perf_counter() - sent) * 1000)
                else:
                    errors += 1

    profiler = None if profile is None else await Profiler.attach(pid, *profile)
    try:
        cpu0, self0, start = cpu_s(pid), self_cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        if profiler is not None:
            outputs = await profiler.stop()
            say("profile: " + ", ".join(str(p) for p in outputs))
    return {
        "requests": ok,
        "errors": errors,
        "events": ok * events_per_request,
        "seconds": elapsed,
        "requests_per_s": ok / elapsed,
        "events_per_s": ok * events_per_request / elapsed,
        "response_ms": percentiles(latencies_ms),
        "daemon_cpu_s": cpu_s(pid) - cpu0,
        "bench_cpu_s": self_cpu_s() - self0,
    }


async def measure(tmp: Path, opts: Options) -> dict[str, Any]:
    """Run (c) in `tmp`; the figures as a dict."""
    paused = Blackhole()
    try:
        async with (
            running_daemon(
                tmp,
                concurrency=opts.concurrency,
                per_webhook_concurrency=opts.concurrency,
                log_level=opts.log_level,
                timeout="60s",
            ) as daemon,
            aiohttp.ClientSession(
                headers=auth_headers(), connector=aiohttp.TCPConnector(limit=0)
            ) as http,
        ):
            pid = pid_of(daemon)
            await put_webhook(http, daemon.base, paused.url())
            url = f"{daemon.base}/api/events"
            base = 10**7  # message numbers apart from the other runs', for readable bodies
            for n in range(WARMUP_REQUESTS):
                async with http.post(url, data=event_body(3 * base + n), headers=JSON) as resp:
                    await resp.read()
            profile = opts.profile_dir
            if profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
            single = await hammer(
                http,
                url,
                lambda n: event_body(base + n),
                1,
                opts.clients,
                opts.seconds,
                pid,
                None if profile is None else (profile, "wahookd-c-single"),
            )
            size = opts.batch
            batched = await hammer(
                http,
                url,
                lambda n: batch_body(range(2 * base + n * size, 2 * base + (n + 1) * size)),
                size,
                opts.batch_parallel,
                opts.seconds,
                pid,
                None if profile is None else (profile, "wahookd-c-batched"),
            )
            queue = await queue_counts(http, daemon.base)
            _, hwm_kb = mem_kb(pid)
    finally:
        paused.close()
    return {
        "clients": opts.clients,
        "batch": opts.batch,
        "batch_parallel": opts.batch_parallel,
        "single": single,
        "batched": batched,
        "queue_after": queue,
        "hwm_mb": hwm_kb / 1024,
    }
