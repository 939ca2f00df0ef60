"""The SQLite indexes a delivery's claim and outcome touch stay local, however many
sessions and webhooks a batch spans (SQLite only: it counts WAL frames).

A batch of outcomes and claims to 200 sessions once wrote twice as many pages as the
same batch to one session: the state index was keyed (state, session, id), so each
delivery's entry moved inside its own session's range, a leaf page per session
(issue 12's row (g)). Keyed (state, id, session), a batch's entries sit together. The
claim also deleted each delivery's entry of a webhook-keyed due index (webhook,
next_attempt_at, id), a leaf page per webhook: 1.3 times the pages until schema
migration 9 dropped that index, which an ingest also wrote at each webhook's tail.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from wahookd.events import validate_event
from wahookd.models import AttemptResult, Outcome
from wahookd.store import IngestItem, SqliteStore
from wahookd.store.sqlite import claims, facade

T0 = 1_700_000_000.0
OK = AttemptResult(200, None, 3, "ok", None, "2xx")
BATCH = 32  # outcomes and claims per commit, as the recorder makes them under load
DELIVERIES = 6_400
COMMITS = 60


def wal_size(wal: str) -> int:
    """The WAL file's size (a stat: no need to leave the loop for it)."""
    return os.stat(wal).st_size


def batch_of(hooks: list[int], sessions: int, lo: int) -> list[IngestItem]:
    """Events lo..lo+99, event n to session n % sessions and its webhook."""
    return [
        IngestItem(
            validate_event(
                {"event": "session.disconnected", "sessionId": f"s{n % sessions}"}
                | {"reason": "r"},
                now=T0,
            ),
            (hooks[n % sessions],),
        )
        for n in range(lo, lo + 100)
    ]


async def session_hooks(store: SqliteStore, sessions: int) -> list[int]:
    """Sessions s0.., each with its webhook; their ids."""
    hooks = []
    for s in range(sessions):
        hook, _ = await store.put_session_webhook(
            f"s{s}", "https://a.example/", ["*"], None, True, [], T0
        )
        hooks.append(hook.id)
    return hooks


async def ingest_frames_per_commit(path: Path, sessions: int) -> float:
    """WAL frames one 100-event ingest commit writes, on average, to `sessions` sessions."""
    store = await SqliteStore.open(path)
    try:
        await store.on_writer(lambda c: c.execute("PRAGMA wal_autocheckpoint = 0"))
        hooks = await session_hooks(store, sessions)
        for lo in range(0, DELIVERIES // 2, 100):  # a log to land in
            await store.ingest(batch_of(hooks, sessions, lo), T0)
        wal = f"{path}-wal"
        before = wal_size(wal)
        for lo in range(DELIVERIES // 2, DELIVERIES // 2 + COMMITS * 100, 100):
            await store.ingest(batch_of(hooks, sessions, lo), T0)
        frame = 24 + (await store.read(lambda c: c.execute("PRAGMA page_size").fetchone()))[0]
        return (wal_size(wal) - before) / frame / COMMITS
    finally:
        await store.close()


async def frames_per_commit(path: Path, sessions: int) -> float:
    """WAL frames one record-and-claim commit writes, on average, to `sessions` sessions."""
    store = await SqliteStore.open(path)
    try:
        # nor does the writer checkpoint: the WAL only grows, its size counts frames
        await store.on_writer(lambda c: c.execute("PRAGMA wal_autocheckpoint = 0"))
        hooks = await session_hooks(store, sessions)
        for lo in range(0, DELIVERIES, 100):
            await store.ingest(batch_of(hooks, sessions, lo), T0)
        ids = [item.id for item in await store.load_due(None, DELIVERIES, ())]
        claimed = await store.claim(ids[:BATCH], T0)
        wal = f"{path}-wal"
        before = wal_size(wal)
        for n in range(1, COMMITS + 1):
            outcomes = [Outcome(c, T0, OK, "delivered", None) for c in claimed]
            _, claimed = await store.record_and_claim(
                outcomes, ids[n * BATCH : (n + 1) * BATCH], T0 + n
            )
        frame = 24 + (await store.read(lambda c: c.execute("PRAGMA page_size").fetchone()))[0]
        return (wal_size(wal) - before) / frame / COMMITS
    finally:
        await store.close()


async def test_a_batch_to_200_sessions_writes_about_the_pages_of_a_batch_to_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no checkpointer thread either
    monkeypatch.setattr(facade, "CHECKPOINT_FROM_PAGES", 10**9)
    one = await frames_per_commit(tmp_path / "one.db", 1)
    many = await frames_per_commit(tmp_path / "many.db", 200)
    # 1.06 now; 1.3 with deliveries_webhook_due; 2.0 keyed (state, session, id)
    assert many <= 1.15 * one, (one, many)


async def test_an_ingest_to_200_sessions_writes_at_most_half_again_the_pages_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each delivery still takes an entry at its session's and its webhook's tails (the
    delivery log's deliveries_session and deliveries_webhook), no longer a third in a
    webhook-keyed due index."""
    monkeypatch.setattr(facade, "CHECKPOINT_FROM_PAGES", 10**9)
    one = await ingest_frames_per_commit(tmp_path / "one.db", 1)
    many = await ingest_frames_per_commit(tmp_path / "many.db", 200)
    # 1.66 now; 1.90 with deliveries_webhook_due; 1.48 without deliveries_webhook too
    assert many <= 1.75 * one, (one, many)


async def test_one_webhooks_due_deliveries_are_read_from_the_due_index_alone(
    tmp_path: Path,
) -> None:
    """An overflowed lane's reload needs no webhook-keyed index, nor table lookups."""
    store = await SqliteStore.open(tmp_path / "w.db")

    def plan(c: sqlite3.Connection) -> str:
        rows = c.execute("EXPLAIN QUERY PLAN " + claims.WEBHOOK_DUE, (1, 10))
        return " ".join(row[3] for row in rows)

    try:
        assert "COVERING INDEX deliveries_due" in await store.read(plan)
    finally:
        await store.close()
