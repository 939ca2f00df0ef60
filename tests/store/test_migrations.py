"""Schema migrations on a database written by an older wahookd, and deleted webhooks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from wahookd.delivery.transition import WEBHOOK_GONE
from wahookd.events import validate_event
from wahookd.models import AttemptResult, Outcome
from wahookd.store import IngestItem, SqliteStore
from wahookd.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

T0 = 1_700_000_000.0
FAIL = AttemptResult(500, "HTTP 500", 3, "no", None, "5xx")


def v1_database(path: Path) -> None:
    """Schema version 1 with a webhook, a queued and an in-flight delivery, and a delivery
    whose webhook (id 3, the highest ever used) was deleted."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    conn.execute(
        "INSERT INTO webhooks (id, kind, session_id, url, events, is_active, created_at,"
        " updated_at) VALUES (1, 'session', 's1', 'https://a.example/', '[\"*\"]', 1, 0, 0)"
    )
    conn.execute("INSERT INTO events VALUES (1, 'evt_1', 0, 's1', 'session.connected', '{}', 0)")
    for id_, webhook, state, due in (
        (1, 1, "pending", 0.0),
        (2, 1, "processing", None),
        (3, 3, "failed", None),
    ):
        conn.execute(
            "INSERT INTO deliveries (id, uid, event_id, webhook_id, session_id, event_type,"
            " state, attempts, next_attempt_at, created_at, updated_at)"
            " VALUES (?, ?, 1, ?, 's1', 'session.connected', ?, 1, ?, 0, 0)",
            (id_, f"dlv_{id_:016x}", webhook, state, due),
        )
    conn.close()


async def test_a_v1_database_migrates_and_keeps_its_queue(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    v1_database(path)
    store = await SqliteStore.open(path, "full")
    try:
        assert await store.recover(T0) == 1  # the in-flight one is queued again
        assert await store.queue_counts(None) == {
            "pending": 2,
            "processing": 0,
            "failed": 1,
            "retrying": 0,
        }
        hook, _ = await store.put_session_webhook(
            "s2", "https://b.example/", ["*"], None, True, [], T0
        )
        # never the id of the deleted webhook a delivery still names
        assert hook.id > 3
        # the failed delivery of the deleted webhook cannot be retried onto anything
        assert (await store.retry_failed("s1", T0)).retried == 0
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_an_outcome_for_a_deleted_webhook_fails_the_delivery(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db", "normal")
    try:
        hook, _ = await store.put_session_webhook(
            "s1", "https://a.example/", ["*"], None, True, [], T0
        )
        event = validate_event(
            {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}, now=T0
        )
        (result,) = await store.ingest([IngestItem(event, (hook.id,))], T0)
        (claimed,) = await store.claim([result.deliveries[0].id], T0)
        await store.delete_session_webhook("s1")  # while the attempt is in flight
        await store.record([Outcome(claimed, T0, FAIL, "retry", T0 + 30)], T0)
        (row,) = await store.list_deliveries("s1", None, None, None, 10)
        assert row.state == "failed" and WEBHOOK_GONE in (row.last_error or "")
        # a new webhook for another session gets a fresh id and none of that queue
        other, _ = await store.put_session_webhook(
            "s2", "https://b.example/", ["*"], None, True, [], T0
        )
        assert other.id != hook.id
        assert await store.load_webhook_due(other.id, 10) == []
    finally:
        await store.close()
