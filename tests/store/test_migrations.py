"""Schema migrations on a database written by an older wahookd, and deleted webhooks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from wahookd.delivery.transition import WEBHOOK_GONE
from wahookd.events import validate_event
from wahookd.models import AttemptResult, Outcome
from wahookd.store import IngestItem, SqliteStore, WebhookFields
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


def v5_database(path: Path) -> None:
    """A database as the release before several webhooks per session writes it (schema 5):
    a session webhook with a secret mid-rotation, a static one, deliveries in every state
    with attempts, all-time stats, and a deleted webhook whose id (7) was the highest."""
    conn = sqlite3.connect(path, isolation_level=None)
    for version, migration in enumerate(MIGRATIONS[:5], start=1):
        conn.executescript(f"BEGIN; {migration}; PRAGMA user_version = {version}; COMMIT;")
    conn.execute(
        "INSERT INTO webhooks (id, kind, session_id, url, events, secret, previous_secret,"
        " previous_secret_until, headers, is_active, created_at, updated_at, failing_since)"
        " VALUES (1, 'session', 's1', 'https://a.example/', '[\"*\"]', 'new-secret',"
        " 'old-secret', ?, '{\"X-Key\": \"k\"}', 1, 10, 20, 15)",
        (T0 + 3600,),
    )
    conn.execute(
        "INSERT INTO webhooks (id, kind, session_id, static_key, url, events, is_active,"
        " created_at, updated_at) VALUES (2, 'static', '*', 'k2', 'https://crm.example/',"
        " '[\"message.received\"]', 1, 10, 10)"
    )
    conn.execute(
        "INSERT INTO webhooks (id, kind, session_id, url, events, created_at,"
        " updated_at) VALUES (7, 'session', 'gone', 'https://g.example/', '[\"*\"]', 0, 0)"
    )
    conn.execute("DELETE FROM webhooks WHERE id = 7")
    conn.execute("INSERT INTO events VALUES (1, 'evt_1', 0, 's1', 'session.connected', '{}', 0)")
    for id_, webhook, state, due, finished in (
        (1, 1, "pending", 0.0, None),
        (2, 1, "retrying", 30.0, None),
        (3, 1, "delivered", None, 5.0),
        (4, 2, "failed", None, 6.0),
    ):
        conn.execute(
            "INSERT INTO deliveries (id, uid, event_id, webhook_id, session_id, event_type,"
            " state, attempts, next_attempt_at, created_at, updated_at, finished_at)"
            " VALUES (?, ?, 1, ?, 's1', 'session.connected', ?, 1, ?, 0, 0, ?)",
            (id_, f"dlv_{id_:016x}", webhook, state, due, finished),
        )
        conn.execute(
            "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code,"
            " outcome, error) VALUES (?, 1, ?, 12, ?, 'x', NULL)",
            (id_, 100.0 + id_, 200 if state == "delivered" else 500),
        )
    conn.execute("INSERT INTO session_stats VALUES ('s1', 'session.connected', 1, 1, 12, 5.0)")
    conn.close()


async def test_a_database_of_the_previous_release_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    v5_database(path)
    store = await SqliteStore.open(path, "full")
    try:
        hooks = {hook.id: hook for hook in await store.webhooks()}
        assert sorted(hooks) == [1, 2]
        own, static = hooks[1], hooks[2]
        assert own.kind == "session" and own.is_default and own.session == "s1"
        assert (own.url, own.events, own.secret, own.headers) == (
            "https://a.example/",
            ("*",),
            "new-secret",
            (("X-Key", "k"),),
        )
        assert (own.previous_secret, own.previous_secret_until) == ("old-secret", T0 + 3600)
        assert static.kind == "static" and static.static_key == "k2"
        for hook in (own, static):
            assert hook.public_id.startswith("wh_") and len(hook.public_id) == 19
            assert (hook.ordering, hook.rate_limit, hook.filter_chats) == ("none", None, None)
        assert own.public_id != static.public_id
        # the deliveries, their attempts and the stats survive
        rows = await store.list_deliveries("s1", None, None, None, 10)
        assert [(r.row_id, r.state, len(r.attempt_log)) for r in rows] == [
            (4, "failed", 1),
            (3, "delivered", 1),
            (2, "retrying", 1),
            (1, "pending", 1),
        ]
        assert await store.queue_counts(None) == {
            "pending": 1,
            "processing": 0,
            "failed": 1,
            "retrying": 1,
        }
        stats = await store.session_stats("s1")
        assert stats is not None and (stats.successful, stats.failed) == (1, 1)
        assert [d.id for d in await store.load_webhook_due(1, 10)] == [1, 2]
        health = await store.webhook_health([1, 2])
        assert health[1].failing_since == 15
        assert (health[1].last_status, health[1].last_attempt_at) == (200, 103.0)
        assert (health[2].last_status, health[2].last_attempt_at) == (500, 104.0)
        # ids stay never reused: past the deleted webhook 7
        extra = await store.create_webhook(
            "s1", WebhookFields("https://b.example/", ("*",), None, True), T0
        )
        assert extra.id > 7 and extra.kind == "extra"
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM deliveries WHERE order_key IS NULL").fetchone() == (
        4,
    )
    conn.close()
