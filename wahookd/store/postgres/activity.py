"""Recent activity: deliveries finished per minute, for the console's overview chart.

One range scan of the `deliveries_finished` index (finished_at), grouped by minute.
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from ...models import State
from ..types import MinuteActivity

_SQL = (
    "SELECT (floor(finished_at / 60) * 60)::bigint AS minute,"
    " count(*) FILTER (WHERE state = $1), count(*) FILTER (WHERE state = $2)"
    " FROM deliveries WHERE finished_at IS NOT NULL AND finished_at >= $3"
)


async def activity(
    conn: asyncpg.Connection, since: float, sessions: Collection[str] | None
) -> list[MinuteActivity]:
    """Delivered and failed deliveries per minute since `since`, oldest first; empty minutes
    are absent. `sessions`: only these (None: all)."""
    params: list[object] = [State.DELIVERED.value, State.FAILED.value, since]
    sql = _SQL
    if sessions is not None:
        sql += " AND session_id = ANY($4::text[])"
        params.append(sorted(set(sessions)))
    rows = await conn.fetch(sql + " GROUP BY minute ORDER BY minute", *params)
    return [MinuteActivity(int(m), int(d), int(f)) for m, d, f in rows if d or f]
