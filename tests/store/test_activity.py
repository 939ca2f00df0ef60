"""Deliveries finished per minute (the console's chart): counts, scope, the index used.

The counts through the store run on both backends; the query plan is SQLite's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from wahookd.store import MinuteActivity, SqliteStore
from wahookd.store.sqlite.activity import activity

from .backends import execute
from .conftest import OpenStore

T0 = 1_700_000_040.0  # a minute boundary: 28333334 * 60
ROWS = [
    # (session, state, finished_at)
    ("a", "delivered", T0 - 3600),  # before the window
    ("a", "delivered", T0 + 1),
    ("a", "delivered", T0 + 59.9),
    ("a", "failed", T0 + 30),
    ("b", "delivered", T0 + 60),
    ("b", "failed", T0 + 179),
    ("b", "pending", None),
    ("a", "retrying", None),
]


async def filled(tmp_path: Path) -> sqlite3.Connection:
    """A migrated database with finished and queued deliveries of two sessions."""
    path = tmp_path / "w.db"
    store = await SqliteStore.open(path)
    await store.close()
    conn = sqlite3.connect(path)
    rows = ROWS
    conn.executemany(
        "INSERT INTO deliveries (uid, event_id, webhook_id, session_id, event_type, state,"
        " created_at, updated_at, finished_at) VALUES (?, 1, 1, ?, 'message.received', ?, ?, ?, ?)",
        [(f"dlv_{i:016x}", s, st, T0 - 4000, T0, f) for i, (s, st, f) in enumerate(rows)],
    )
    conn.commit()
    return conn


async def test_counts_per_minute_in_the_window_oldest_first(tmp_path: Path) -> None:
    conn = await filled(tmp_path)
    m = int(T0)
    assert activity(conn, T0, None) == [
        MinuteActivity(m, 2, 1),
        MinuteActivity(m + 60, 1, 0),
        MinuteActivity(m + 120, 0, 1),
    ]
    assert activity(conn, T0, {"b"}) == [
        MinuteActivity(m + 60, 1, 0),
        MinuteActivity(m + 120, 0, 1),
    ]
    assert activity(conn, T0, set()) == []
    assert activity(conn, T0 + 3600, None) == []
    conn.close()


class PlanSpy:
    """A connection that records the query plan of each statement it runs."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.plan: list[str] = []

    def execute(self, sql: str, params: object = ()) -> sqlite3.Cursor:
        self.plan += [row[3] for row in self.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        return self.conn.execute(sql, params)  # type: ignore[arg-type]


async def test_one_range_scan_of_the_finished_index(tmp_path: Path) -> None:
    conn = await filled(tmp_path)
    for sessions in (None, {"a", "b"}):
        spy = PlanSpy(conn)
        activity(spy, T0, sessions)  # type: ignore[arg-type]
        assert any("USING INDEX deliveries_finished (finished_at>?)" in p for p in spy.plan)
        assert not any(p.startswith("SCAN deliveries") for p in spy.plan), spy.plan
    conn.close()


async def test_counts_per_minute_through_either_backend(open_store: OpenStore) -> None:
    store = await open_store()
    for i, (session, state, finished_at) in enumerate(ROWS):
        await execute(
            store,
            "INSERT INTO deliveries (uid, event_id, webhook_id, session_id, event_type, state,"
            " created_at, updated_at, finished_at) VALUES (?, 1, 1, ?, 'message.received', ?,"
            " ?, ?, ?)",
            f"dlv_{i:016x}",
            session,
            state,
            T0 - 4000,
            T0,
            finished_at,
        )
    m = int(T0)
    assert await store.activity(T0, None) == [
        MinuteActivity(m, 2, 1),
        MinuteActivity(m + 60, 1, 0),
        MinuteActivity(m + 120, 0, 1),
    ]
    assert await store.activity(T0, {"b"}) == [
        MinuteActivity(m + 60, 1, 0),
        MinuteActivity(m + 120, 0, 1),
    ]
    assert await store.activity(T0, set()) == []
    assert await store.activity(T0 + 3600, None) == []
