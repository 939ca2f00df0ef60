"""The queue: what waits, counted by state and session, and clearing it.

Counts read the (state, session_id, id) index for the four queue states only, so a
scrape costs what the queue holds, never what the log holds (delivered rows are not
read).
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from ...models import CLEARABLE_STATES, DueItem, State
from . import ordering

_COUNTED = [s.value for s in (State.PENDING, State.PROCESSING, State.FAILED, State.RETRYING)]


async def queue_counts(
    conn: asyncpg.Connection, sessions: Collection[str] | None
) -> dict[str, int]:
    """Queued deliveries by state, over every session or the given ones."""
    counts = dict.fromkeys(_COUNTED, 0)
    if sessions is None:
        rows = await conn.fetch(
            "SELECT state, count(*) FROM deliveries WHERE state = ANY($1::text[]) GROUP BY state",
            _COUNTED,
        )
    else:
        rows = await conn.fetch(
            "SELECT state, count(*) FROM deliveries WHERE state = ANY($1::text[])"
            " AND session_id = ANY($2::text[]) GROUP BY state",
            _COUNTED,
            list(sessions),
        )
    for state, n in rows:
        counts[state] = n
    return counts


async def oldest_due_at(conn: asyncpg.Connection) -> float | None:
    """The earliest next-attempt time of the queued deliveries, None when none waits."""
    # one step down the partial index, whatever the backlog
    oldest = await conn.fetchval(
        "SELECT min(next_attempt_at) FROM deliveries WHERE next_attempt_at IS NOT NULL"
    )
    return None if oldest is None else float(oldest)


async def queue_counts_by_session(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Queued deliveries by session and state (sessions with none queued are absent)."""
    out: dict[str, dict[str, int]] = {}
    for session_id, state, n in await conn.fetch(
        "SELECT session_id, state, count(*) FROM deliveries WHERE state = ANY($1::text[])"
        " GROUP BY state, session_id",
        _COUNTED,
    ):
        out.setdefault(session_id, dict.fromkeys(_COUNTED, 0))[state] = n
    return out


async def clear_queue(
    conn: asyncpg.Connection,
    session_id: str,
    states: Collection[State],
    now: float,
    woken: list[DueItem],
) -> dict[str, int]:
    """Delete a session's queued deliveries in the given states (never those in flight).

    Ordered ones left behind a cleared head get theirs woken (ordering.py), under the
    keys' locks, appended to `woken`.
    """
    removed = {state.value: 0 for state in CLEARABLE_STATES}
    wanted = [s.value for s in states if s in CLEARABLE_STATES]
    if not wanted:
        return removed
    keys = [
        (r[0], r[1])
        for r in await conn.fetch(
            "SELECT DISTINCT webhook_id, order_key FROM deliveries WHERE state = ANY($1::text[])"
            " AND session_id = $2 AND order_key IS NOT NULL",
            wanted,
            session_id,
        )
    ]
    await ordering.lock_keys(conn, keys)
    rows = await conn.fetch(
        "WITH gone AS (DELETE FROM deliveries WHERE state = ANY($1::text[]) AND session_id = $2"
        " RETURNING id, state), attempts_gone AS (DELETE FROM attempts"
        " WHERE delivery_id IN (SELECT id FROM gone))"
        " SELECT state, count(*) FROM gone GROUP BY state",
        wanted,
        session_id,
    )
    for state, n in rows:
        removed[state] = n
    woken += await ordering.wake_heads(conn, keys, now)
    return removed
