"""The delivery log on a real SQLite file and a real PostgreSQL database.

Tests taking `open_store` run on both backends (tests/store/conftest.py); the others
check what only SQLite has (its file, WAL, group commit, body read paths).
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from wahookd.events import validate_event
from wahookd.models import AttemptResult, Outcome, State
from wahookd.store import (
    IDEMPOTENCY_WINDOW_S,
    IngestItem,
    SqliteStore,
    StorageError,
    StorageUnavailable,
)
from wahookd.store.sqlite import claims, facade
from wahookd.store.sqlite.schema import SCHEMA_VERSION

from .backends import rows
from .conftest import OpenStore


def event(session: str = "s1", event_id: str | None = None, n: int = 0):
    body: dict[str, object] = {
        "event": "session.disconnected",
        "sessionId": session,
        "reason": f"r{n}",
    }
    if event_id is not None:
        body["id"] = event_id
    return validate_event(body, now=1_700_000_000)


async def open_sqlite(tmp_path: Path, synchronous: str = "full") -> SqliteStore:
    return await SqliteStore.open(tmp_path / "data" / "w.db", synchronous)  # type: ignore[arg-type]


async def test_file_mode_wal_synchronous_and_schema_version(tmp_path: Path) -> None:
    store = await open_sqlite(tmp_path, "normal")
    await store.close()
    path = tmp_path / "data" / "w.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = await open_sqlite(tmp_path)
    await store.close()
    conn = sqlite3.connect(tmp_path / "data" / "w.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer than this wahookd"):
        await open_sqlite(tmp_path)


async def test_concurrent_ingests_share_one_commit(tmp_path: Path) -> None:
    store = await open_sqlite(tmp_path)
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    before = store.commits
    results = await asyncio.gather(
        *(store.ingest([IngestItem(event(n=i), (hook.id,))], 1.0) for i in range(64))
    )
    commits = store.commits - before
    await store.close()
    assert commits < 4, commits  # one fsync for many requests, not one each
    ids = [r[0].deliveries[0].id for r in results]
    assert len(set(ids)) == 64
    assert (await _count(tmp_path, "deliveries")) == 64


async def _count(tmp_path: Path, table: str) -> int:
    conn = sqlite3.connect(tmp_path / "data" / "w.db")
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def test_idempotent_ingest_within_24_hours_only(open_store: OpenStore) -> None:
    store = await open_store()
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    t0 = 1_700_000_000.0
    item = IngestItem(event(event_id="e1"), (hook.id,))
    (first,) = await store.ingest([item], t0)
    (dup,) = await store.ingest([item], t0 + IDEMPOTENCY_WINDOW_S - 1)
    other = IngestItem(event(session="s2", event_id="e1"), (hook.id,))
    (other_session,) = await store.ingest([other], t0 + 1)
    (later,) = await store.ingest([item], t0 + IDEMPOTENCY_WINDOW_S + 1)
    both = await store.ingest([item, item], t0 + 3 * IDEMPOTENCY_WINDOW_S)  # twice in one batch
    await store.close()
    assert (first.duplicate, len(first.deliveries)) == (False, 1)
    assert (dup.duplicate, dup.deliveries, dup.event_uid) == (True, (), "e1")
    assert not other_session.duplicate
    assert not later.duplicate
    assert [r.duplicate for r in both] == [False, True]


@pytest.mark.parametrize("count", [1, 63, 64, 65, 100, 1000])
async def test_every_event_and_delivery_of_a_batch_is_stored(
    open_store: OpenStore, count: int
) -> None:
    # rows go in 64 per INSERT, padded with NULL rows: none lost or doubled at the seams
    store = await open_store()
    a, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    b, _ = await store.put_session_webhook("s2", "https://b.example/", ["*"], None, True, [], 0)
    items = [IngestItem(event(n=i), (a.id, b.id) if i % 3 else (a.id,)) for i in range(count)]
    results = await store.ingest(items, 10.0)
    stored = await rows(store, "SELECT uid, body FROM events ORDER BY id")
    found = await rows(store, "SELECT id, webhook_id, uid FROM deliveries ORDER BY id")
    await store.close()
    deliveries = [d for r in results for d in r.deliveries]
    assert len(deliveries) == count + sum(1 for i in range(count) if i % 3)
    assert stored == [
        (r.event_uid, item.event.body) for r, item in zip(results, items, strict=True)
    ]
    assert [(r[0], r[1]) for r in found] == [(d.id, d.webhook_id) for d in deliveries]
    assert len({r[2] for r in found}) == len(found)  # every delivery uid unique


async def test_duplicates_are_found_across_sessions_and_many_ids(open_store: OpenStore) -> None:
    store = await open_store()
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    first = [IngestItem(event(event_id=f"e{i}"), (hook.id,)) for i in range(0, 1200, 2)]
    await store.ingest(first, 1.0)
    # 1,200 ids of s1 (half seen: more than one lookup query) and the same ids in s2 (new)
    again = [IngestItem(event(event_id=f"e{i}"), (hook.id,)) for i in range(1200)]
    other = [IngestItem(event(session="s2", event_id=f"e{i}"), (hook.id,)) for i in range(10)]
    results = await store.ingest(again + other, 2.0)
    await store.close()
    assert [r.duplicate for r in results] == [i % 2 == 0 for i in range(1200)] + [False] * 10


@pytest.mark.parametrize("count", [1, 2, 31, 33, 64, 65, 130])
async def test_every_outcome_and_claim_of_a_batch_lands(open_store: OpenStore, count: int) -> None:
    # claims read bodies as joined hex, outcomes go in by statements padded with NULL
    # rows to a power of two: every row exactly once, the bodies byte for byte
    store = await open_store()
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    items = [IngestItem(event(n=i), (hook.id,)) for i in range(count)]
    results = await store.ingest(items, 10.0)
    ids = [r.deliveries[0].id for r in results]
    claimed = await store.claim(ids, 11.0)
    assert [c.id for c in claimed] == ids
    assert [c.body for c in claimed] == [item.event.body for item in items]
    ok = AttemptResult(200, None, 3, "OK", None, "2xx")
    fail = AttemptResult(500, "HTTP 500", 4, "no", None, "5xx")
    outcomes = [
        Outcome(c, 11.0, ok, "delivered", None)
        if i % 2
        else Outcome(c, 11.0, fail, "retry", 50.0 + i)
        for i, c in enumerate(claimed)
    ]
    await store.record(outcomes, 12.0)
    attempts = await rows(
        store, "SELECT delivery_id, attempt, status_code, outcome, error FROM attempts ORDER BY id"
    )
    states = await rows(store, "SELECT id, state, next_attempt_at FROM deliveries ORDER BY id")
    await store.close()
    assert attempts == [
        (c.id, 1, 200, "delivered", None) if i % 2 else (c.id, 1, 500, "retry", "HTTP 500")
        for i, c in enumerate(claimed)
    ]
    assert states == [
        (c.id, "delivered", None) if i % 2 else (c.id, "retrying", 50.0 + i)
        for i, c in enumerate(claimed)
    ]


@pytest.mark.parametrize("sessions", [1, 3, 64, 65, 130])
async def test_a_batch_to_many_webhooks_keeps_each_sessions_stats_and_failing_state(
    open_store: OpenStore, sessions: int
) -> None:
    # stats go in by multi-row upserts and the failing state is cleared by one
    # statement per batch: every session and webhook exactly once at the seams
    store = await open_store()
    hooks = [
        (await store.put_session_webhook(f"s{i}", "https://a.example/", ["*"], None, True, [], 0))[
            0
        ]
        for i in range(sessions)
    ]
    items = [
        IngestItem(event(session=f"s{i % sessions}", n=i), (hooks[i % sessions].id,))
        for i in range(2 * sessions + 1)
    ]
    results = await store.ingest(items, 10.0)
    claimed = await store.claim([r.deliveries[0].id for r in results], 11.0)
    fail = AttemptResult(500, "HTTP 500", 4, "no", None, "5xx")
    # the first attempt of each fails: every webhook starts failing
    first = {c.webhook_id: c for c in reversed(claimed)}
    await store.record([Outcome(c, 11.0, fail, "retry", 50.0) for c in first.values()], 12.0)
    ok = AttemptResult(200, None, 3, "OK", None, "2xx")
    rest = [c for c in claimed if first[c.webhook_id] is not c]
    # the others succeed, except for the last webhook, whose attempts all failed
    last = hooks[-1].id if sessions > 1 else None
    await store.record(
        [
            Outcome(c, 11.0, fail, "retry", 50.0)
            if c.webhook_id == last
            else Outcome(c, 11.0, ok, "delivered", None)
            for c in rest
        ],
        13.0,
    )
    stats = await store.sessions_stats([f"s{i}" for i in range(sessions)])
    failing = dict(await rows(store, "SELECT id, failing_since FROM webhooks"))
    await store.close()
    for i, hook in enumerate(hooks):
        sent = sum(1 for c in rest if c.webhook_id == hook.id)
        got = stats.get(f"s{i}")
        if hook.id == last:
            assert got is None and failing[hook.id] == 12.0
        else:
            assert got is not None and (got.successful, got.failed) == (sent, 0)
            assert got.success_ms_total == 3 * sent and got.last_delivery_at == 13.0
            assert failing[hook.id] is None


@pytest.mark.parametrize("from_pages", [1, 1000])
async def test_the_wal_is_checkpointed_beside_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, from_pages: int
) -> None:
    # once the WAL file has grown to from_pages, the checkpointer thread copies committed
    # pages into the database file long before the writer's own (backstop) checkpoint
    # would; below that (a light load: 1,000 pages) it leaves the WAL to SQLite as before
    monkeypatch.setattr(facade, "CHECKPOINT_FROM_PAGES", from_pages)
    store = await open_sqlite(tmp_path)
    db = tmp_path / "data" / "w.db"
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    empty = db.stat().st_size
    for batch in range(20):
        items = [IngestItem(event(n=batch * 100 + i), (hook.id,)) for i in range(100)]
        await store.ingest(items, 10.0)
        await asyncio.sleep(0.01)
    for _ in range(100 if from_pages == 1 else 10):  # the last checkpoint may still run
        if store.checkpoints and db.stat().st_size > empty:
            break
        await asyncio.sleep(0.01)
    wal_pages = (tmp_path / "data" / "w.db-wal").stat().st_size // 4096
    grown = db.stat().st_size > empty
    await store.close()
    assert wal_pages < facade.WRITER_AUTOCHECKPOINT_PAGES
    if from_pages == 1:
        assert store.checkpoints >= 1 and grown
    else:
        assert wal_pages < from_pages
        assert store.checkpoints == 0 and not grown
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (2000,)
    conn.close()


async def test_claim_record_recover(open_store: OpenStore) -> None:
    store = await open_store()
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    results = await store.ingest([IngestItem(event(n=i), (hook.id,)) for i in range(3)], 10.0)
    ids = [r.deliveries[0].id for r in results]
    claimed = await store.claim(ids, 11.0)
    assert [c.attempt for c in claimed] == [1, 1, 1]
    assert await store.claim(ids, 11.5) == []  # already in flight
    ok = AttemptResult(200, None, 12, "OK", None, "2xx")
    fail = AttemptResult(500, "HTTP 500", 7, "", None, "5xx")
    await store.record(
        [
            Outcome(claimed[0], 11.0, ok, "delivered", None),
            Outcome(claimed[1], 11.0, fail, "retry", 41.0),
        ],
        12.0,
    )
    counts = await store.queue_counts(None)
    assert counts == {"pending": 0, "processing": 1, "failed": 0, "retrying": 1}
    # a crash leaves claimed[2] processing: recovery puts it back, same attempt number
    assert await store.recover(20.0) == 1
    (again,) = await store.claim([ids[2]], 21.0)
    assert again.attempt == 1 and again.uid == claimed[2].uid
    stats = await store.session_stats("s1")
    await store.close()
    assert stats is not None
    assert (stats.successful, stats.failed, stats.success_ms_total) == (1, 0, 12)
    assert stats.last_delivery_at == 12.0


async def test_parking_follows_the_webhook(open_store: OpenStore) -> None:
    store = await open_store()
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    (res,) = await store.ingest([IngestItem(event(), (hook.id,))], 10.0)
    await store.set_webhook_active(hook.id, False, 11.0)
    assert await store.load_due(None, 10, ()) == []  # parked: the scheduler cannot see it
    assert (await store.queue_counts({"s1"}))[State.PENDING] == 1
    assert await store.claim([res.deliveries[0].id], 12.0) == []
    await store.set_webhook_active(hook.id, True, 13.0)
    (due,) = await store.load_due(None, 10, ())
    await store.close()
    assert (due.id, due.due_at) == (res.deliveries[0].id, 13.0)


@pytest.mark.parametrize("joined_max", [0, 200, 4 * 1024 * 1024])
async def test_claimed_bodies_are_the_ingested_bytes_on_either_read_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, joined_max: int
) -> None:
    # small bodies come back as one joined row; together larger than the cap, row by row
    # (so a claim of large bodies never builds one huge SQLite value)
    monkeypatch.setattr(claims, "JOINED_BODIES_MAX", joined_max)
    store = await open_sqlite(tmp_path)
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], 0)
    items = [IngestItem(event(n=i), (hook.id,)) for i in range(12)]
    results = await store.ingest(items, 10.0)
    claimed = await store.claim([r.deliveries[0].id for r in results], 11.0)
    await store.close()
    assert [c.body for c in claimed] == [item.event.body for item in items]


async def test_injected_faults_refuse_writes_and_reads_as_a_failing_disk_would(
    tmp_path: Path,
) -> None:
    store = await open_sqlite(tmp_path)
    try:
        store.write_fault = lambda: sqlite3.OperationalError("database or disk is full")
        with pytest.raises(StorageUnavailable, match="disk is full"):
            await store.set_webhook_active(1, False, 1.0)
        store.read_fault = lambda: sqlite3.OperationalError("disk I/O error")
        with pytest.raises(StorageUnavailable, match="I/O error"):
            await store.queue_counts(None)
        assert store.faults == 2
        store.read_fault = lambda: RuntimeError("a bug")
        with pytest.raises(RuntimeError, match="a bug"):  # not a storage fault: as it is
            await store.ping()
        store.write_fault = store.read_fault = None
        await store.set_webhook_active(1, False, 1.0)
        assert (await store.queue_counts(None))["pending"] == 0
    finally:
        await store.close()
