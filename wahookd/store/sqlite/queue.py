"""The queue: what waits, counted by state and session, and clearing it."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from ...models import CLEARABLE_STATES, DueItem, State
from . import ordering

_COUNTED = (State.PENDING, State.PROCESSING, State.FAILED, State.RETRYING)


def queue_counts(conn: sqlite3.Connection, sessions: Collection[str] | None) -> dict[str, int]:
    """Queued deliveries by state, over every session or the given ones."""
    counts = {state.value: 0 for state in _COUNTED}
    sql = "SELECT state, COUNT(*) FROM deliveries WHERE state IN (?, ?, ?, ?)"
    params: list[Any] = list(counts)
    if sessions is not None:
        sql += f" AND session_id IN ({','.join('?' * len(sessions))})"
        params += sessions
    for state, n in conn.execute(sql + " GROUP BY state", params):
        counts[state] = n
    return counts


def oldest_due_at(conn: sqlite3.Connection) -> float | None:
    """The earliest next-attempt time of the queued deliveries, None when none waits."""
    # one step down the partial index, whatever the backlog
    (oldest,) = conn.execute(
        "SELECT MIN(next_attempt_at) FROM deliveries INDEXED BY deliveries_due"
        " WHERE next_attempt_at IS NOT NULL"
    ).fetchone()
    return None if oldest is None else float(oldest)


def queue_counts_by_session(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Queued deliveries by session and state (sessions with none queued are absent)."""
    states = [s.value for s in _COUNTED]
    out: dict[str, dict[str, int]] = {}
    for session_id, state, n in conn.execute(
        "SELECT session_id, state, COUNT(*) FROM deliveries WHERE state IN (?, ?, ?, ?)"
        " GROUP BY state, session_id",
        states,
    ):
        out.setdefault(session_id, dict.fromkeys(states, 0))[state] = n
    return out


def clear_queue(
    conn: sqlite3.Connection,
    session_id: str,
    states: Collection[State],
    now: float,
    woken: list[DueItem] | None = None,
) -> dict[str, int]:
    """Delete a session's queued deliveries in the given states (never those in flight).

    Ordered ones left behind a cleared head get theirs woken (ordering.py), appended
    to `woken`.
    """
    removed = {state.value: 0 for state in CLEARABLE_STATES}
    keys: set[ordering.Key] = set()
    for state in states:
        keys.update(
            conn.execute(
                "SELECT DISTINCT webhook_id, order_key FROM deliveries"
                " WHERE state = ? AND session_id = ? AND order_key IS NOT NULL",
                (state.value, session_id),
            )
        )
        conn.execute(
            "DELETE FROM attempts WHERE delivery_id IN"
            " (SELECT id FROM deliveries WHERE state = ? AND session_id = ?)",
            (state.value, session_id),
        )
        cur = conn.execute(
            "DELETE FROM deliveries WHERE state = ? AND session_id = ?",
            (state.value, session_id),
        )
        removed[state.value] = cur.rowcount
    if keys:
        next_up = ordering.wake_heads(conn, keys, now)
        if woken is not None:
            woken += next_up
    return removed
