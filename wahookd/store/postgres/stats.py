"""A session's all-time delivery statistics: per-node rows, summed on read.

Each node adds to its own (session, event type, node) rows, so nodes finishing
deliveries of one session at the same time never wait on one hot counter row, and the
sums stay exact: every change is committed with the transition that caused it.
`StatsDelta` applies the `stats` changes that `transition()` decides.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from ...delivery.transition import StatsChange
from ..types import SessionStats

# one row per (session, event type): the nodes' rows summed; a failed count taken back
# by a manual retry on another node than the one that counted it may make one node's
# row negative, never the sum of a session's rows (clamped at 0 all the same)
_SELECT = (
    "SELECT session_id, event_type, sum(successful)::bigint, greatest(sum(failed), 0)::bigint,"
    " sum(success_ms_total)::bigint, max(last_delivery_at) FROM session_stats"
    " WHERE session_id = ANY($1::text[]) GROUP BY session_id, event_type"
    " ORDER BY session_id, event_type"
)

_UPSERT = (
    "INSERT INTO session_stats AS s (session_id, event_type, node_id, successful, failed,"
    " success_ms_total, last_delivery_at)"
    " SELECT session_id, event_type, $1, successful, failed, ms, last_at FROM unnest($2::text[],"
    " $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::float8[])"
    " AS v(session_id, event_type, successful, failed, ms, last_at)"
    " ON CONFLICT (session_id, event_type, node_id) DO UPDATE SET"
    " successful = s.successful + excluded.successful, failed = s.failed + excluded.failed,"
    " success_ms_total = s.success_ms_total + excluded.success_ms_total,"
    " last_delivery_at = greatest(s.last_delivery_at, excluded.last_delivery_at)"
)


async def session_stats(conn: asyncpg.Connection, session_id: str) -> SessionStats | None:
    """All-time stats of a session, None when it never finished a delivery."""
    found = await sessions_stats(conn, [session_id])
    return found.get(session_id)


async def sessions_stats(
    conn: asyncpg.Connection, sessions: Collection[str]
) -> dict[str, SessionStats]:
    """All-time stats of these sessions; those that never finished a delivery are absent."""
    by_session: dict[str, list[Any]] = {}
    for row in await conn.fetch(_SELECT, sorted(set(sessions))):
        by_session.setdefault(row[0], []).append(row)
    return {session_id: _stats(rows) for session_id, rows in by_session.items()}


def _stats(rows: Sequence[Any]) -> SessionStats:
    """Sum a session's rows, one per event type."""
    last = [r[5] for r in rows if r[5] is not None]
    return SessionStats(
        successful=sum(r[2] for r in rows),
        failed=sum(r[3] for r in rows),
        success_ms_total=sum(r[4] for r in rows),
        last_delivery_at=max(last) if last else None,
        by_event={r[1]: r[2] for r in rows if r[2]},
    )


class StatsDelta:
    """The `stats` changes of a transaction's transitions, summed per (session, event type).

    `apply` writes them as one multi-row upsert into this node's rows.
    """

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        # (session, event type) -> [successful, failed (minus unfailed), ms, last_delivery_at]
        self._rows: dict[tuple[str, str], list[Any]] = {}

    def add(
        self,
        session_id: str,
        event_type: str,
        change: StatsChange,
        now: float,
        duration_ms: int = 0,
    ) -> None:
        """Count one delivery's change; a successful one's attempt took `duration_ms`."""
        row = self._rows.get((session_id, event_type))
        if row is None:
            row = self._rows[(session_id, event_type)] = [0, 0, 0, None]
        if change == "successful":
            row[0] += 1
            row[2] += duration_ms
            row[3] = now
        elif change == "failed":
            row[1] += 1
        else:
            row[1] -= 1  # a failed delivery retried by hand counts as failed no longer

    async def apply(self, conn: asyncpg.Connection, node_id: str) -> None:
        """Add the counts to this node's session_stats rows (one statement)."""
        # in key order: two transactions of this node upserting the same rows take their
        # locks in the same order
        rows = [(s, e, *row) for (s, e), row in sorted(self._rows.items()) if row[0] or row[1]]
        if rows:
            columns = [list(col) for col in zip(*rows, strict=True)]
            await conn.execute(_UPSERT, node_id, *columns)
