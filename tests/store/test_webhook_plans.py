"""Every statement about one webhook's deliveries finds them through an index (SQLite).

Since schema migration 9 there is no webhook-keyed due index (it cost two scattered page
writes per delivery). Listing, health, parking, waking, deleting and retrying a
webhook's deliveries go through deliveries_webhook, its session's index or the state
index. Each statement the store runs for these is traced and its query plan read: none
may scan the deliveries or attempts table whole.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from wahookd.events import validate_event
from wahookd.store import IngestItem, SqliteStore, StaticRow, WebhookFields

T0 = 1_700_000_000.0


async def test_no_statement_about_a_webhook_scans_the_deliveries(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    traced: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(traced.append)

    try:
        await store.on_writer(trace)
        await store.read(trace)
        own, _ = await store.put_session_webhook(
            "s1", "https://a.example/", ["*"], None, True, [], T0
        )
        extra = await store.create_webhook(
            "s1", WebhookFields("https://b.example/", ("*",), None, True), T0
        )
        event = validate_event(
            {"event": "session.disconnected", "sessionId": "s1", "reason": "r"}, now=T0
        )
        await store.ingest([IngestItem(event, (own.id, extra.id))], T0)
        traced.clear()
        await store.list_deliveries("s1", None, None, None, 10, webhook_id=extra.id)
        await store.webhook_health([own.id, extra.id])
        for active in (False, True):
            await store.put_session_webhook("s1", "https://a.example/", ["*"], None, active, [], T0)
        await store.retry_failed("s1", T0, webhook_id=extra.id)
        static = StaticRow(
            "k", "s1", "https://c.example/", ("*",), None, (), None, None, "none", None
        )
        await store.sync_static_webhooks([static], T0)
        await store.sync_static_webhooks([], T0)  # its queued deliveries fail
        await store.delete_webhook(extra.id)
        await store.delete_session_webhook("s1")

        def plans(conn: sqlite3.Connection) -> dict[str, str]:
            return {
                sql: " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
                for sql in traced
                if "webhook_id = " in sql and not sql.startswith("INSERT")
            }

        found = await store.read(plans)
    finally:
        await store.close()
    # each operation above ran at least one statement naming a webhook's deliveries
    assert len(found) >= 8, list(found)
    for sql, plan in found.items():
        assert "SCAN" not in plan, (sql, plan)
