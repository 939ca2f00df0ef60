"""A session's all-time delivery statistics (the `session_stats` table; `record` adds to it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

from ..types import SessionStats
from .batching import IN_CHUNK
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
