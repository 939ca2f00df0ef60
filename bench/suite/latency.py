"""(d) Latency from the 202 to the arrival at the receiver, at a fixed rate.

A fresh daemon (the (b) config). The bench sends single-event requests open loop: the
i-th leaves at start + i/rate whatever happened to the others (at most `max_inflight`
at once; a send held back by that limit counts as late). For each 202 it notes the
wall-clock time and the event id. The receiver logs each arrival's wall-clock time and
X-Webhook-Id (a delivery id); the daemon's delivery log API (GET
/api/webhook/deliveries/{session}) maps delivery ids to event ids afterwards. Latency =
arrival - 202. nginx logs milliseconds, so each value is good to about 1 ms.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .common import (
    API_TIMEOUT,
    SESSION,
    auth_headers,
    event_body,
    mem_kb,
    percentiles,
    pid_of,
    put_webhook,
    running_daemon,
    wait_until,
)
from .receiver import Receiver

NAME = "latency"
JSON = {"Content-Type": "application/json"}
PAGE = 500


@dataclass(frozen=True)
class Options:
    """What (d) does."""

    rate: float  # events per second
    seconds: float
    concurrency: int
    log_level: str
    max_inflight: int = 512
    drain_timeout_s: float = 60.0


async def delivery_events(http: aiohttp.ClientSession, base: str, limit: int) -> dict[str, str]:
    """Delivery id -> event id for the session's deliveries (at most `limit`, paged)."""
    mapping: dict[str, str] = {}
    cursor: str | None = None
    for _ in range(limit // PAGE + 2):
        query = f"limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(
            f"{base}/api/webhook/deliveries/{SESSION}?{query}", timeout=API_TIMEOUT
        ) as resp:
            page = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"GET deliveries: {resp.status} {page}")
        for d in page["deliveries"]:
            mapping[d["id"]] = d["eventId"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    return mapping


async def measure(rx: Receiver, tmp: Path, opts: Options) -> dict[str, Any]:
    """Run (d) in `tmp`; the figures as a dict."""
    total = int(opts.rate * opts.seconds)
    log = rx.log(NAME)
    acked: dict[str, float] = {}  # event id -> wall-clock time of its 202
    response_ms: list[float] = []
    late_ms: list[float] = []
    errors = 0
    async with (
        running_daemon(
            tmp,
            concurrency=opts.concurrency,
            per_webhook_concurrency=opts.concurrency,
            log_level=opts.log_level,
        ) as daemon,
        aiohttp.ClientSession(
            headers=auth_headers(), connector=aiohttp.TCPConnector(limit=0)
        ) as http,
    ):
        pid = pid_of(daemon)
        await put_webhook(http, daemon.base, rx.url(NAME))
        url = f"{daemon.base}/api/events"
        slots = asyncio.Semaphore(opts.max_inflight)

        async def send(i: int, due: float) -> None:
            nonlocal errors
            async with slots:
                sent = time.perf_counter()
                late_ms.append(max(0.0, sent - due) * 1000)
                async with http.post(
                    url, data=event_body(i), headers=JSON, timeout=API_TIMEOUT
                ) as resp:
                    answer = await resp.json()
                    now = time.time()
                    if resp.status != 202:
                        errors += 1
                        return
                response_ms.append((time.perf_counter() - sent) * 1000)
                acked[answer["ids"][0]] = now

        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        sent = 0
        while sent < total:  # bounded: one pass over `total` events, paced by the clock
            now = time.perf_counter()
            due_now = min(total, int((now - start) * opts.rate) + 1)
            for i in range(sent, due_now):
                task = asyncio.create_task(send(i, start + i / opts.rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent = due_now
            await asyncio.sleep(max(0.0, start + sent / opts.rate - time.perf_counter()))
        send_seconds = time.perf_counter() - start
        if tasks:
            await asyncio.wait(set(tasks), timeout=opts.drain_timeout_s)
        complete = await wait_until(lambda: log.count() >= len(acked), opts.drain_timeout_s)
        mapping = await delivery_events(http, daemon.base, total + 10)
        _, hwm_kb = mem_kb(pid)
    latencies_ms = []
    for arrived, status, delivery_id in log.entries():
        event_id = mapping.get(delivery_id)
        if 200 <= status < 300 and event_id in acked:
            latencies_ms.append(max(0.0, arrived - acked[event_id]) * 1000)
    return {
        "rate": opts.rate,
        "seconds": opts.seconds,
        "sent": total,
        "send_seconds": send_seconds,
        "achieved_rate": total / send_seconds,
        "acked": len(acked),
        "errors": errors,
        "arrived": len(latencies_ms),
        "complete": complete,
        "latency_ms": percentiles(latencies_ms),
        "response_ms": percentiles(response_ms),
        "late_send_ms": percentiles(late_ms),
        "resolution_ms": rx.resolution_ms,
        "hwm_mb": hwm_kb / 1024,
    }
