"""(g) many webhooks: (b)'s workload spread over W sessions, each with its own webhook.

A fresh daemon with (b)'s settings (synchronous = "full", every attempt logged, the same
`delivery.concurrency` and `per_webhook_concurrency`, so the total in flight is (b)'s)
and W sessions `g0000`..: session i's webhook is `/fanout/hook/i` on the receiver's
port i % P (W = 200 webhooks on P = 20 ports by default). Event n goes to session
n % W; the N events are ingested as in (b), in batches of 100 (each batch mixes
sessions), `parallel` requests in flight. The webhooks are configured before the clock.

The clock starts just before the first POST /api/events and stops at the receiver's
timestamp of the last 2xx; completion is detected by polling the count of 2xx lines in
the location's log, which every port writes to. Then it checks that every delivery
arrived exactly once and where it should: the queue is empty, the sessions' stats add
up to N successful and 0 failed, the 2xx lines carry N distinct X-Webhook-Id values,
and each line's port and path are its webhook's.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .common import (
    auth_headers,
    batch_body,
    batches,
    pid_of,
    put_webhook,
    running_daemon,
    sessions_overview,
)
from .end_to_end import timed_ingest
from .receiver import Receiver

NAME = "fanout"
HOOK_PATH = "/hook/"
CONFIGURE_PARALLEL = 8


@dataclass(frozen=True)
class Options:
    """What (g) does."""

    events: int
    webhooks: int  # sessions, each with its own webhook
    ports: int  # receiver ports the webhooks are spread over (webhook i on port i % ports)
    batch: int  # events per POST /api/events
    parallel: int  # ingest requests in flight
    concurrency: int  # delivery.concurrency and per_webhook_concurrency, as in (b)
    log_level: str
    timeout_s: float
    profile_dir: Path | None = None


def session_ids(count: int) -> list[str]:
    """g0000, g0001, ...: as long as (b)'s session name, so every body is BODY_BYTES."""
    return [f"g{i:04d}" for i in range(count)]


async def configure(http: aiohttp.ClientSession, base: str, rx: Receiver, opts: Options) -> None:
    """PUT each session's webhook, CONFIGURE_PARALLEL at a time."""
    todo = iter(enumerate(session_ids(opts.webhooks)))

    async def worker() -> None:
        for i, session in todo:
            url = rx.url(NAME, i % opts.ports, f"{HOOK_PATH}{i}")
            await put_webhook(http, base, url, session)

    await asyncio.gather(*(worker() for _ in range(CONFIGURE_PARALLEL)))


def check_routes(
    rx: Receiver, opts: Options, routes: list[tuple[float, int, str, int, str]]
) -> tuple[int, dict[int, int]]:
    """(2xx lines whose port or path is not their webhook's, 2xx lines per port)."""
    prefix = f"/{NAME}{HOOK_PATH}"
    misrouted = 0
    per_port: Counter[int] = Counter()
    for _, status, _, port, path in routes:
        if not 200 <= status < 300:
            continue
        per_port[port] += 1
        hook = path[len(prefix) :] if path.startswith(prefix) else ""
        index = int(hook) if hook.isdigit() else opts.webhooks
        if index >= opts.webhooks or rx.ports[index % opts.ports] != port:
            misrouted += 1
    return misrouted, dict(per_port)


async def measure(rx: Receiver, tmp: Path, opts: Options) -> dict[str, Any]:
    """Run (g) in `tmp`; the figures as a dict."""
    if len(rx.ports) < opts.ports:
        raise RuntimeError(f"the receiver listens on {len(rx.ports)} ports, not {opts.ports}")
    log = rx.log(NAME)
    if opts.profile_dir is not None:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
    sessions = session_ids(opts.webhooks)
    # encoded before the clock starts: the bench's JSON is not the daemon's work
    bodies = [batch_body(r, sessions) for r in batches(opts.events, opts.batch)]
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
        configure_t0 = time.monotonic()
        await configure(http, daemon.base, rx, opts)
        configure_s = time.monotonic() - configure_t0
        run = await timed_ingest(
            pid,
            rx,
            http,
            daemon.base,
            bodies,
            opts.parallel,
            lambda: log.count_2xx() >= opts.events,
            opts.timeout_s,
            opts.profile_dir,
            "wahookd-g",
        )
        t0, complete, polled_at, ingested_at = run.t0, run.complete, run.polled_at, run.ingested_at
        cpu0, cpu1, rx_cpu0, rx_cpu1 = run.cpu0, run.cpu1, run.rx_cpu0, run.rx_cpu1
        self0, self1, hwm_kb, queue = run.self0, run.self1, run.hwm_kb, run.queue
        overview = {s["sessionId"]: s for s in await sessions_overview(http, daemon.base)}
    ours = [overview[s] for s in sessions if s in overview]
    successful = sum(s["stats"]["successful"] for s in ours)
    failed = sum(s["stats"]["failed"] for s in ours)
    routes = log.routes()
    ok = [r for r in routes if 200 <= r[1] < 300]
    unique = len({r[2] for r in ok})
    misrouted, per_port = check_routes(rx, opts, routes)
    last = max((r[0] for r in ok), default=polled_at)
    seconds = max(last - t0, 1e-9)
    problems = []
    if any(queue.values()):
        problems.append(f"queue not empty: {queue}")
    if successful != opts.events or failed:
        problems.append(f"stats: {successful:,} successful, {failed:,} failed")
    if unique != opts.events:
        problems.append(f"{unique:,} distinct X-Webhook-Id")
    if len(ok) != unique:
        problems.append(f"{len(ok) - unique:,} duplicates")
    if len(routes) != len(ok):
        problems.append(f"{len(routes) - len(ok):,} non-2xx lines")
    if misrouted:
        problems.append(f"{misrouted:,} on the wrong port or path")
    if len(ours) != opts.webhooks:
        problems.append(f"{len(ours)} of {opts.webhooks} sessions listed")
    return {
        "events": opts.events,
        "webhooks": opts.webhooks,
        "ports": opts.ports,
        "batch": opts.batch,
        "ingest_parallel": opts.parallel,
        "concurrency": opts.concurrency,
        "per_webhook_concurrency": opts.concurrency,
        "log_level": opts.log_level,
        "configure_s": configure_s,
        "complete": complete,
        "verified": complete and not problems,
        "problems": problems,
        "arrivals": len(routes),
        "delivered_unique": unique,
        "duplicates": len(ok) - unique,
        "misrouted": misrouted,
        "per_port_min": min(per_port.values(), default=0),
        "per_port_max": max(per_port.values(), default=0),
        "ports_hit": len(per_port),
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
        "stats_successful": successful,
        "stats_failed": failed,
        "profiled": opts.profile_dir is not None,
    }
