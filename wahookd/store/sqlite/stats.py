"""A session's all-time delivery statistics (the `session_stats` table).

`StatsDelta` applies the `stats` changes that `transition()` decides (`record`,
`recover` and `retry_failed` write them).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from ...delivery.transition import StatsChange
from ..types import SessionStats
from .batching import IN_CHUNK, padded_statements
from .rows import named

_COLUMNS = "event_type, successful, failed, success_ms_total, last_delivery_at"


def session_stats(conn: sqlite3.Connection, session_id: str) -> SessionStats | None:
    """All-time stats of a session, None when it never finished a delivery."""
    rows = named(
        conn,
        f"SELECT {_COLUMNS} FROM session_stats WHERE session_id = ? ORDER BY event_type",
        (session_id,),
    ).fetchall()
    return _stats(rows) if rows else None


def sessions_stats(conn: sqlite3.Connection, sessions: Collection[str]) -> dict[str, SessionStats]:
    """All-time stats of these sessions; those that never finished a delivery are absent."""
    by_session: dict[str, list[sqlite3.Row]] = {}
    wanted = sorted(set(sessions))
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        for row in named(
            conn,
            f"SELECT session_id, {_COLUMNS} FROM session_stats"
            f" WHERE session_id IN ({','.join('?' * len(chunk))}) ORDER BY session_id, event_type",
            chunk,
        ):
            by_session.setdefault(row["session_id"], []).append(row)
    return {session_id: _stats(rows) for session_id, rows in by_session.items()}


def _stats(rows: Sequence[sqlite3.Row]) -> SessionStats:
    """Sum a session's rows, one per event type."""
    last = [r["last_delivery_at"] for r in rows if r["last_delivery_at"] is not None]
    return SessionStats(
        successful=sum(r["successful"] for r in rows),
        failed=sum(r["failed"] for r in rows),
        success_ms_total=sum(r["success_ms_total"] for r in rows),
        last_delivery_at=max(last) if last else None,
        by_event={r["event_type"]: r["successful"] for r in rows if r["successful"]},
    )


# ------------------------------------------------------------------ changes
# one statement for many (session, event type) rows: the padding rows (session NULL)
# are skipped by the WHERE, which also keeps SQLite from reading ON as a join
_UPSERT = (
    "INSERT INTO session_stats (session_id, event_type, successful, failed,"
    " success_ms_total, last_delivery_at) SELECT * FROM (VALUES {rows})"
    " WHERE column1 IS NOT NULL"
    " ON CONFLICT DO UPDATE SET successful = successful + excluded.successful,"
    " failed = failed + excluded.failed,"
    " success_ms_total = success_ms_total + excluded.success_ms_total,"
    " last_delivery_at = MAX(COALESCE(last_delivery_at, 0),"
    " COALESCE(excluded.last_delivery_at, 0))"
)
# a failed delivery retried by hand counts as failed no longer (never below 0)
_UNFAIL = (
    "UPDATE session_stats SET failed = MAX(failed - ?, 0) WHERE session_id = ? AND event_type = ?"
)


class StatsDelta:
    """The `stats` changes of a transaction's transitions, summed per (session, event type).

    `apply` writes them with one multi-row statement per 64 (session, event type),
    not one per delivery nor one per session: `record` finishes a whole batch of
    deliveries at once, to as many sessions as it has webhooks.
    """

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        # (session, event type) -> [successful, failed, success_ms_total,
        # last_delivery_at, unfailed]
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
            row = self._rows[(session_id, event_type)] = [0, 0, 0, None, 0]
        if change == "successful":
            row[0] += 1
            row[2] += duration_ms
            row[3] = now
        elif change == "failed":
            row[1] += 1
        else:
            row[4] += 1

    def apply(self, conn: sqlite3.Connection) -> None:
        """Add the counts to session_stats."""
        added = [(s, e, *row[:4]) for (s, e), row in self._rows.items() if row[0] or row[1]]
        if added:
            padded_statements(conn, added, _upsert_sql)
        unfailed = [(row[4], s, e) for (s, e), row in self._rows.items() if row[4]]
        if unfailed:
            conn.executemany(_UNFAIL, unfailed)


@functools.cache
def _upsert_sql(count: int) -> str:
    return _UPSERT.format(rows=",".join(["(?, ?, ?, ?, ?, ?)"] * count))
