"""Fairness: a troubled webhook's backlog or dead receiver never delays other webhooks.

Two real TLS receivers on 127.0.0.1 and a real SQLite file. Sessions "a…" are the troubled
webhooks, session "b" the healthy one. With `concurrency = 8` and
`per_webhook_concurrency = 4`, one troubled webhook holds at most 4 attempts in flight, so
"b" always finds a free slot. Without that limit, or with a scheduler that served due
deliveries strictly in order across webhooks, "a"'s older deliveries would take every slot
and "b" would wait seconds behind them; the bounds below sit far below that wait and far
above what "b" needs on an idle machine (a few ms).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from support import Daemon, Received, Receiver, Reply, ca_file, make_config, running_daemon

from wahookd.config import Config

CONCURRENCY = 8
PER_WEBHOOK = 4


def event(session: str, n: int) -> dict[str, object]:
    return {
        "event": "message.received",
        "sessionId": session,
        "messageId": f"{session}-{n}",
        "from": "1234567890",
        "to": "me",
        "type": "text",
        "text": "hi",
    }


def attempt(r: Received) -> int:
    return int(r.headers["X-Webhook-Attempt"])


@pytest.fixture
async def receivers(ca: trustme.CA) -> AsyncIterator[tuple[Receiver, Receiver]]:
    """Two running TLS receivers: the troubled one for "a", the healthy one for "b"."""
    a, b = Receiver(ca), Receiver(ca)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def configure(d: Daemon, session: str, rx: Receiver) -> None:
    status, answer = await d.call(
        "PUT", f"/api/webhook/config/{session}", {"url": rx.url, "events": ["*"]}
    )
    assert status == 200, answer


async def post(d: Daemon, events: list[dict[str, object]]) -> None:
    status, answer = await d.call("POST", "/api/events", {"events": events})
    assert status == 202 and answer["queued"] == len(events), answer


async def b_latencies(d: Daemon, rx: Receiver, count: int, gap_s: float) -> list[float]:
    """Post `count` events for session "b", one at a time; seconds from each POST to arrival.

    An event that has not arrived within 2 s counts as infinite and ends the series (any
    later one would queue behind it anyway).
    """
    latencies: list[float] = []
    for n in range(count):
        latencies.append(await latency_of_one(d, rx, n, give_up_s=2.0))
        if latencies[-1] == math.inf:
            break
        await asyncio.sleep(gap_s)
    return latencies


async def latency_of_one(d: Daemon, rx: Receiver, n: int, give_up_s: float) -> float:
    """Post one event for session "b"; seconds from the POST until rx got it (inf: never)."""
    before = len(rx.requests)
    started = time.monotonic()
    await post(d, [event("b", n)])
    try:
        got = await rx.wait_for(before + 1, timeout_s=give_up_s)
    except TimeoutError:
        return math.inf
    return got[before].at - started


def outage_config(tmp_path: Path, ca: trustme.CA) -> Config:
    return make_config(
        tmp_path,
        ca_file=str(ca_file(ca, tmp_path)),
        timeout="2s",
        retry_schedule=["1s", "1s"],
        concurrency=CONCURRENCY,
        per_webhook_concurrency=PER_WEBHOOK,
    )


async def flood_after_outage(d: Daemon, rx: Receiver, sessions: list[str], count: int) -> None:
    """Queue `count` events per session to rx, which fails every first attempt with a 500
    and answers retries slowly (0.3 s); return once every one of those retries is due."""
    rx.responder = lambda r: Reply(500) if attempt(r) == 1 else Reply(200, delay_s=0.3)
    for session in sessions:
        await configure(d, session, rx)
        await post(d, [event(session, i) for i in range(count)])
    firsts = await rx.wait_for(count * len(sessions), timeout_s=8)
    last_failure = max(r.at for r in firsts if attempt(r) == 1)
    await asyncio.sleep(max(0.0, last_failure + 1.2 - time.monotonic()))


async def test_retry_flood_does_not_starve_first_attempts(
    tmp_path: Path, ca: trustme.CA, receivers: tuple[Receiver, Receiver]
) -> None:
    # "a" had an outage: its 300 retries come due together while it answers slowly. At
    # 4 in flight, draining them takes ~22 s (~11 s if "a" could take all 8 slots, and as
    # long if "b" had to wait for older due deliveries); "b" must not wait for that.
    flood = 300
    rx_a, rx_b = receivers
    async with running_daemon(outage_config(tmp_path, ca)) as d:
        await configure(d, "b", rx_b)
        await flood_after_outage(d, rx_a, ["a"], flood)
        retried_before_b = sum(attempt(r) == 2 for r in rx_a.requests)
        latencies = await b_latencies(d, rx_b, 5, gap_s=0.1)
        retried_after_b = sum(attempt(r) == 2 for r in rx_a.requests)
    # every event for "b" arrived well under a second after its ingest ...
    assert max(latencies) < 1.0, latencies
    # ... while "a"'s flood was due and being worked on, far from drained
    assert retried_before_b >= PER_WEBHOOK, retried_before_b
    assert retried_after_b < flood // 2, retried_after_b


async def test_outage_of_a_shared_receiver_does_not_starve_first_attempts(
    tmp_path: Path, ca: trustme.CA, receivers: tuple[Receiver, Receiver]
) -> None:
    # The same outage hits three sessions whose webhooks point at one receiver (one
    # customer's backend), 100 events each. Together their lanes may hold 12 attempts,
    # more than the 8 slots; "b" must still get the next slot that frees up (< 0.3 s),
    # not wait ~7 s until two of the three backlogs are drained.
    rx_a, rx_b = receivers
    async with running_daemon(outage_config(tmp_path, ca)) as d:
        await configure(d, "b", rx_b)
        await flood_after_outage(d, rx_a, ["a1", "a2", "a3"], 100)
        latencies = await b_latencies(d, rx_b, 3, gap_s=0.1)
    assert max(latencies) < 1.0, latencies


async def test_timing_out_receiver_does_not_slow_others(
    tmp_path: Path, ca: trustme.CA, receivers: tuple[Receiver, Receiver]
) -> None:
    # "a" never answers within the 1 s attempt timeout, so every attempt to it holds a slot
    # for the full second. With 100 deliveries queued to it (and each retried 0.5 s later)
    # it could keep all 8 slots busy for >12 s; "b" must still get through at idle speed.
    backlog, b_events = 100, 6
    rx_a, rx_b = receivers
    rx_a.default = Reply(200, delay_s=1.6)
    cfg = make_config(
        tmp_path,
        ca_file=str(ca_file(ca, tmp_path)),
        timeout="1s",
        retry_schedule=["0.5s", "0.5s", "0.5s"],
        concurrency=CONCURRENCY,
        per_webhook_concurrency=PER_WEBHOOK,
    )
    async with running_daemon(cfg) as d:
        await configure(d, "a", rx_a)
        await configure(d, "b", rx_b)
        await post(d, [event("a", i) for i in range(backlog)])
        await rx_a.wait_for(PER_WEBHOOK, timeout_s=5)  # "a" holds its slots
        await asyncio.sleep(0.3)
        latencies = await b_latencies(d, rx_b, b_events, gap_s=0.25)
        attempts_a = len(rx_a.requests)
        _, queue = await d.call("GET", "/api/webhook/queue?sessionId=a")
        _, stats = await d.call("GET", "/api/webhook/stats/a")
    # every event for "b" arrived as fast as on an idle daemon ...
    assert max(latencies) < 0.5, latencies
    # ... while "a" timed out the whole time and still had most of its backlog queued
    assert attempts_a >= 2 * PER_WEBHOOK, attempts_a
    assert stats["stats"]["successful"] == 0, stats
    assert queue["queue"]["pending"] + queue["queue"]["retrying"] >= backlog // 2, queue
