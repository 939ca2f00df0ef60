"""Recent activity: deliveries finished per minute, for the console's overview chart.

One range scan of the `deliveries_finished` index (finished_at), grouped by minute: its
cost follows the deliveries finished in the window, never the size of the log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from ...models import State
from ..types import MinuteActivity
from .batching import IN_CHUNK

_SQL = (
    "SELECT CAST(finished_at / 60 AS INTEGER) * 60 AS minute,"
    " SUM(state = ?), SUM(state = ?)"
    " FROM deliveries INDEXED BY deliveries_finished"
    " WHERE finished_at IS NOT NULL AND finished_at >= ?"
)


def activity(
    conn: sqlite3.Connection, since: float, sessions: Collection[str] | None
) -> list[MinuteActivity]:
    """Delivered and failed deliveries per minute since `since`, oldest first; empty minutes
    are absent. `sessions`: only these (None: all)."""
    head: list[Any] = [State.DELIVERED.value, State.FAILED.value, since]
    totals: dict[int, list[int]] = {}
    if sessions is None:
        chunks: list[list[str] | None] = [None]
    else:
        wanted = sorted(set(sessions))
        chunks = [wanted[i : i + IN_CHUNK] for i in range(0, len(wanted), IN_CHUNK)]
    for chunk in chunks:
        sql, params = _SQL, list(head)
        if chunk is not None:
            sql += f" AND session_id IN ({','.join('?' * len(chunk))})"
            params += chunk
        for minute, delivered, failed in conn.execute(sql + " GROUP BY minute", params):
            counts = totals.setdefault(int(minute), [0, 0])
            counts[0] += delivered
            counts[1] += failed
    return [MinuteActivity(m, d, f) for m, (d, f) in sorted(totals.items())]
