"""Claims: which queued deliveries are due, and moving them to `processing` with bodies."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from ...models import Claimed, DueItem, State
from . import ordering
from .batching import IN_CHUNK, padded_in

# bodies read as one joined row at most this large together; larger ones row by row
JOINED_BODIES_MAX = 4 * 1024 * 1024


def load_due(
    conn: sqlite3.Connection,
    after: tuple[float, int] | None,
    limit: int,
    exclude_webhooks: Collection[int],
) -> list[DueItem]:
    """The next `limit` queued deliveries after the key `after`, soonest first."""
    sql = "SELECT next_attempt_at, id, webhook_id FROM deliveries INDEXED BY deliveries_due"
    sql += " WHERE next_attempt_at IS NOT NULL"
    params: list[Any] = []
    if after is not None:
        sql += " AND (next_attempt_at, id) > (?, ?)"
        params += after
    if exclude_webhooks:
        sql += f" AND webhook_id NOT IN ({','.join('?' * len(exclude_webhooks))})"
        params += exclude_webhooks
    sql += " ORDER BY next_attempt_at, id LIMIT ?"
    params.append(limit)
    rows = conn.execute(sql, params)
    return [DueItem(due_at, id_, webhook_id) for due_at, id_, webhook_id in rows]


# one webhook's due rows, read from deliveries_due alone (it ends with webhook_id)
WEBHOOK_DUE = (
    "SELECT next_attempt_at, id, webhook_id FROM deliveries INDEXED BY deliveries_due"
    " WHERE next_attempt_at IS NOT NULL AND webhook_id = ?"
    " ORDER BY next_attempt_at, id LIMIT ?"
)


def load_webhook_due(conn: sqlite3.Connection, webhook_id: int, limit: int) -> list[DueItem]:
    """One webhook's soonest `limit` queued deliveries.

    SQLite's C loop skips other webhooks' entries of deliveries_due without table
    lookups. A lane overflows when its webhook holds many of the soonest rows, so they
    are dense there; 64 rows behind a million others take ~30 ms (measured), on the
    reader's thread. A webhook-keyed index would make this a seek, but it cost every
    delivery two scattered page writes (schema migration 9).
    """
    rows = conn.execute(WEBHOOK_DUE, (webhook_id, limit))
    return [DueItem(due_at, id_, hook_id) for due_at, id_, hook_id in rows]


def claim(
    conn: sqlite3.Connection, ids: Sequence[int], now: float, woken: list[DueItem]
) -> list[Claimed]:
    """Move queued deliveries to `processing`; returns those still claimable, with bodies.

    One that is not its ordering key's head is held instead and the head woken
    (appended to `woken`): see ordering.py.
    """
    if not ids:
        return []
    marks, params = padded_in(ids)
    # next_attempt_at IS NOT NULL: still queued and not parked, so a row deleted,
    # parked or already claimed since the scheduler saw it is skipped. Read as one
    # JSON row, then moved by one UPDATE (the writer holds the lock throughout):
    # UPDATE ... RETURNING would cost a GIL round trip per row.
    (found,) = conn.execute(
        "SELECT json_group_array(json_array(id, uid, webhook_id, session_id, event_type,"
        f" attempts + 1, event_id, attempts + 1 - cycle_base, order_key, {ordering.NOT_HEAD}))"
        f" FROM deliveries WHERE id IN ({marks}) AND next_attempt_at IS NOT NULL",
        params,
    ).fetchone()
    rows: list[list[Any]] = msgspec.json.decode(found)
    claimed = [row for row in rows if not row[9]]
    if waiting := [row for row in rows if row[9]]:
        ordering.hold(conn, [row[0] for row in waiting])
    if claimed:
        marks, params = padded_in([row[0] for row in claimed])
        conn.execute(
            f"UPDATE deliveries SET state = '{State.PROCESSING}', attempts = attempts + 1,"
            f" next_attempt_at = NULL, updated_at = ? WHERE id IN ({marks})",
            (now, *params),
        )
    if waiting:  # after the claims: a head claimed just now is in flight, not woken
        woken += ordering.wake_heads(conn, [(row[2], row[8]) for row in waiting], now)
    if not claimed:
        return []
    bodies = bodies_of(conn, sorted({row[6] for row in claimed}))
    return [
        Claimed(id_, uid, hook, session, event_type, attempt, bodies[event_id], cycle, key)
        for id_, uid, hook, session, event_type, attempt, event_id, cycle, key, _ in claimed
    ]


def bodies_of(conn: sqlite3.Connection, event_ids: Sequence[int]) -> dict[int, bytes]:
    """The events' bodies, as one joined row per query when they are small together.

    Each row fetched is a round trip of the GIL between this thread and the event
    loop's, which costs far more than the hex under load. Large bodies (up to
    server.max_body each) come row by row, so the joined value stays small.
    """
    bodies: dict[int, bytes] = {}
    for lo in range(0, len(event_ids), IN_CHUNK):
        marks, chunk = padded_in(event_ids[lo : lo + IN_CHUNK])
        (total,) = conn.execute(
            f"SELECT sum(length(body)) FROM events WHERE id IN ({marks})", chunk
        ).fetchone()
        if (total or 0) > JOINED_BODIES_MAX:
            rows = conn.execute(f"SELECT id, body FROM events WHERE id IN ({marks})", chunk)
            bodies.update(rows)
            continue
        (joined,) = conn.execute(
            f"SELECT group_concat(id || ':' || hex(body)) FROM events WHERE id IN ({marks})",
            chunk,
        ).fetchone()
        if not joined:
            continue
        for pair in joined.split(","):
            event_id, _, hexed = pair.partition(":")
            bodies[int(event_id)] = bytes.fromhex(hexed)
    return bodies
