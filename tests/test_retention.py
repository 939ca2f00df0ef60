"""Retention: finished deliveries older than keep_finished are pruned in small batches."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import trustme
from support import Receiver, ca_file, make_config, running_daemon

from wahookd import retention
from wahookd.app import PRUNER
from wahookd.clock import FakeClock
from wahookd.events import validate_event
from wahookd.models import AttemptResult, Outcome, State
from wahookd.retention import Pruner
from wahookd.store import IngestItem, SqliteStore

HOUR = 3600.0
DAY = 24 * HOUR
T0 = 1_700_000_000.0
OK = AttemptResult(200, None, 5, "OK", None, "2xx")
BAD = AttemptResult(500, "HTTP 500", 5, "no", None, "5xx")


def event(n: int, session: str = "s1", event_id: str | None = None):
    body: dict[str, object] = {"event": "session.disconnected", "sessionId": session}
    body["reason"] = f"r{n}"
    if event_id is not None:
        body["id"] = event_id
    return validate_event(body, now=int(T0))


def count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def finish(
    store: SqliteStore, n: int, at: float, result: AttemptResult, kind: str
) -> list[int]:
    """Ingest n events for s1's webhook and finish each delivery with one attempt."""
    hooks = await store.webhooks()
    items = [IngestItem(event(i), (hooks[0].id,)) for i in range(n)]
    ingested = await store.ingest(items, at)
    ids = [r.deliveries[0].id for r in ingested]
    claimed = await store.claim(ids, at)
    outcomes = [Outcome(c, at, result, kind, None) for c in claimed]  # type: ignore[arg-type]
    await store.record(outcomes, at)
    return ids


async def setup(tmp_path: Path) -> tuple[SqliteStore, Path]:
    path = tmp_path / "w.db"
    store = await SqliteStore.open(path, "normal")
    await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], T0)
    return store, path


async def test_prunes_old_finished_deliveries_and_keeps_stats(tmp_path: Path) -> None:
    store, path = await setup(tmp_path)
    await finish(store, 1200, T0, OK, "delivered")  # more than two batches
    await finish(store, 30, T0, BAD, "failed")
    fresh = await finish(store, 20, T0 + 6 * DAY, OK, "delivered")
    waiting = [
        r.deliveries[0].id
        for r in await store.ingest(
            [IngestItem(event(i), ((await store.webhooks())[0].id,)) for i in range(7)], T0
        )
    ]
    stats_before = await store.session_stats("s1")
    queue_before = await store.queue_counts(None)
    clock = FakeClock(T0 + 7 * DAY + 1)
    pruner = Pruner(store, clock, keep_finished_s=7 * DAY)
    commits = store.commits

    deliveries, events = await pruner.prune()

    assert deliveries == 1230
    assert events == 1230
    # small batches: at least one commit per BATCH rows, never one huge transaction
    assert store.commits - commits >= 1230 // retention.BATCH + 1
    assert await store.session_stats("s1") == stats_before
    after = await store.queue_counts(None)
    assert after == {**queue_before, "failed": 0}
    await store.close()
    left = {r for (r,) in sqlite3.connect(path).execute("SELECT id FROM deliveries")}
    assert left == set(fresh) | set(waiting)
    assert count(path, "SELECT COUNT(*) FROM attempts") == len(fresh)
    assert count(path, "SELECT COUNT(*) FROM events") == len(fresh) + len(waiting)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_nothing_younger_than_keep_finished_goes(tmp_path: Path) -> None:
    store, path = await setup(tmp_path)
    await finish(store, 10, T0, OK, "delivered")
    pruner = Pruner(store, FakeClock(T0 + 7 * DAY - 1), keep_finished_s=7 * DAY)
    assert await pruner.prune() == (0, 0)
    pruner.clock = FakeClock(T0 + 7 * DAY + 1)
    assert await pruner.prune() == (10, 10)
    await store.close()
    assert count(path, "SELECT COUNT(*) FROM deliveries") == 0


async def test_events_outlive_a_short_keep_finished_for_idempotency(tmp_path: Path) -> None:
    store, path = await setup(tmp_path)
    hook = (await store.webhooks())[0]
    first = await store.ingest([IngestItem(event(0, event_id="gw-1"), (hook.id,))], T0)
    claimed = await store.claim([first[0].deliveries[0].id], T0)
    await store.record([Outcome(claimed[0], T0, OK, "delivered", None)], T0)
    # an event that matched no webhook has no delivery at all
    await store.ingest([IngestItem(event(1, event_id="gw-2"), ())], T0)
    pruner = Pruner(store, FakeClock(T0 + 2 * HOUR), keep_finished_s=HOUR)

    assert await pruner.prune() == (1, 0)  # the delivery goes, the events stay 24 h
    again = await store.ingest([IngestItem(event(0, event_id="gw-1"), (hook.id,))], T0 + 2 * HOUR)
    assert again[0].duplicate

    pruner.clock = FakeClock(T0 + DAY + 1)
    assert await pruner.prune() == (0, 2)  # the sweep finds both once 24 h have passed
    await store.close()
    assert count(path, "SELECT COUNT(*) FROM events") == 0


async def test_cleared_queue_leaves_no_orphan_attempts(tmp_path: Path) -> None:
    store, path = await setup(tmp_path)
    hook = (await store.webhooks())[0]
    ingested = await store.ingest([IngestItem(event(i), (hook.id,)) for i in range(5)], T0)
    claimed = await store.claim([r.deliveries[0].id for r in ingested], T0)
    await store.record([Outcome(c, T0, BAD, "retry", T0 + 30) for c in claimed], T0)
    await store.clear_queue("s1", [State.RETRYING], 0.0)
    pruner = Pruner(store, FakeClock(T0 + DAY + 1), keep_finished_s=HOUR)
    assert await pruner.prune() == (0, 5)  # the sweep removes the events nothing refers to
    await store.close()
    assert count(path, "SELECT COUNT(*) FROM attempts") == 0
    assert count(path, "SELECT COUNT(*) FROM events") == 0


async def test_ingest_commits_between_prune_batches(tmp_path: Path) -> None:
    store, _ = await setup(tmp_path)
    hook = (await store.webhooks())[0]
    await finish(store, 8 * retention.BATCH, T0, OK, "delivered")
    pruner = Pruner(store, FakeClock(T0 + 8 * DAY), keep_finished_s=7 * DAY)
    pruning = asyncio.create_task(pruner.prune())
    for _ in range(2000):  # wait until the first batch has committed
        if await _pruned_some(store):
            break
        await asyncio.sleep(0.001)
    else:
        raise AssertionError("pruning never started")
    await store.ingest([IngestItem(event(99), (hook.id,))], T0 + 8 * DAY)
    # the ingest committed while most of the prune was still to come
    assert not pruning.done()
    assert await pruning == (8 * retention.BATCH, 8 * retention.BATCH)
    await store.close()


async def _pruned_some(store: SqliteStore) -> bool:
    counts = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])
    return int(counts) < 8 * retention.BATCH


async def test_the_daemon_prunes_and_its_answers_stay_right(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    base = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)))
    config = replace(base, storage=replace(base.storage, keep_finished_s=HOUR))
    clock = FakeClock(T0)
    async with running_daemon(config, clock) as d:
        body = {"url": receiver.url, "events": ["*"], "secret": "k" * 32}
        assert (await d.call("PUT", "/api/webhook/config/s1", body))[0] == 200
        events = [{"event": "session.disconnected", "sessionId": "s1", "reason": "x"}] * 3
        assert (await d.call("POST", "/api/events", {"events": events}))[0] == 202
        await receiver.wait_for(3)
        for _ in range(200):  # the outcomes are recorded just after the 200s arrive
            stats = (await d.call("GET", "/api/webhook/stats/s1"))[1]["stats"]
            if stats["successful"] == 3:
                break
            await asyncio.sleep(0.02)
        pruner = d.client.app[PRUNER]
        assert pruner.keep_finished_s == HOUR
        clock.now = T0 + 2 * HOUR
        assert await pruner.prune() == (3, 0)
        assert (await d.call("GET", "/api/webhook/stats/s1"))[1]["stats"] == stats
        queue = (await d.call("GET", "/api/webhook/queue"))[1]["queue"]
        assert queue == {"pending": 0, "processing": 0, "failed": 0, "retrying": 0}


async def test_the_sweep_comes_back_for_events_freed_later(tmp_path: Path) -> None:
    store, path = await setup(tmp_path)
    hook = (await store.webhooks())[0]
    await store.ingest([IngestItem(event(0), (hook.id,))], T0)  # stays pending
    pruner = Pruner(store, FakeClock(T0 + 2 * DAY), keep_finished_s=HOUR)
    assert await pruner.prune() == (0, 0)  # swept past it: a delivery still needs it
    await store.clear_queue("s1", [State.PENDING], 0.0)
    pruner.clock = FakeClock(T0 + 2 * DAY + HOUR)
    assert await pruner.prune() == (0, 0)  # the cursor is past it
    pruner.clock = FakeClock(T0 + 3 * DAY + HOUR)
    assert await pruner.prune() == (0, 1)  # a day later the sweep starts over
    await store.close()
    assert count(path, "SELECT COUNT(*) FROM events") == 0
