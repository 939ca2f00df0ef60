"""A key's turn must not cost a scan of the rows held behind other keys (issue 13).

`ordering.wake_heads` runs in the commit of every final outcome of an ordered delivery.
Its outer query (`FROM deliveries h WHERE h.id IN (<heads>) AND h.state IN ('pending',
'retrying') ...`) was planned as `SEARCH h USING INDEX deliveries_state_session
(state=?)` (now `deliveries_state`, migration 8): SQLite walks every queued row and
tests each against the few heads, instead of looking the heads up by rowid. So each wake
costs O(queued deliveries): with 10,000 held behind one stuck chat, about 2.5 ms of the
writer's time per outcome batch instead of about 30 µs (bench/ordering.py row (i): other
chats' daemon CPU per delivery +40-50 %, throughput 0.72-0.82 of the same run without
the stuck chat).

Counted here in SQLite VM steps (the progress handler), not time: the same wake, before
and after 10,000 deliveries are held behind another key, must cost about the same.
A `+h.state` (or `deliveries h NOT INDEXED`) in that query makes SQLite look the heads
up by rowid: 24 µs against 2,163 µs on this backlog (SQLite 3.40).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wahookd.events import validate_event
from wahookd.store import IngestItem, SqliteStore, WebhookFields
from wahookd.store.sqlite import ordering

T0 = 1_700_000_000.0
ORDERED = WebhookFields(url="https://a.example/h", events=("*",), secret=None, is_active=True)
BACKLOG = 10_000
STEP = 100  # VM instructions per progress-handler call


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "w.db", "normal")
    yield s
    await s.close()


def item(hook_id: int, key: str, n: int) -> IngestItem:
    ev = validate_event(
        {"event": "session.disconnected", "sessionId": "s1", "reason": f"r{n}"}, now=T0
    )
    return IngestItem(ev, (hook_id,), (key,))


def wake_cost(hook_id: int, keys: list[str]):  # type: ignore[no-untyped-def]
    """fn(conn): the VM steps (in units of STEP) of one wake_heads over `keys`."""

    def run(conn: sqlite3.Connection) -> int:
        ticks = 0

        def tick() -> int:
            nonlocal ticks
            ticks += 1
            return 0

        conn.set_progress_handler(tick, STEP)
        try:
            ordering.wake_heads(conn, [(hook_id, k) for k in keys], T0)
        finally:
            conn.set_progress_handler(None, 0)
        return ticks

    return run


async def test_waking_a_key_costs_the_same_with_10000_held_behind_another(
    store: SqliteStore,
) -> None:
    h = await store.create_webhook("s1", ORDERED, T0)
    chats = [f"chat{i}" for i in range(32)]
    # each chat: a head (due) and one held behind it
    await store.ingest([item(h.id, k, n) for n, k in enumerate(chats * 2)], T0)
    before = await store.write(wake_cost(h.id, chats))

    await store.ingest([item(h.id, "stuck", n) for n in range(BACKLOG + 1)], T0)
    held = await store.read(
        lambda c: c.execute(
            "SELECT COUNT(*) FROM deliveries WHERE next_attempt_at IS NULL"
        ).fetchone()[0]
    )
    assert held == BACKLOG + len(chats)
    after = await store.write(wake_cost(h.id, chats))

    # the same 32 lookups; 10,000 rows of another key must not be visited (one visit
    # is several VM instructions, so a scan would add thousands of ticks)
    assert after <= 2 * before + 10, (before, after)
