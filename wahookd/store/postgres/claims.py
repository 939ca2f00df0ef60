"""Claims: which queued deliveries are due, and moving them to `processing` under a lease.

A claim locks the rows still due with `FOR UPDATE SKIP LOCKED` (a row another node is
claiming right now is skipped, never waited for nor handed out twice), moves them to
`processing` with this node's lease and a fresh fencing token, and returns them joined
with their events' bodies: a few statements per batch. Ordered rows are decided under
their keys' locks (ordering.py). Given `ClaimLimits`, the claim keeps the cluster-wide
per-webhook limits (limits.py): the webhooks' limit locks are taken after every
ordering key's and before the rows are locked (which never waits).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from ...models import Claimed, DueItem, State
from ..protocol import ClaimLimits
from . import limits as limits_sql
from . import ordering

# the rows of ids still due, locked (one another node is claiming is skipped), with
# whether each must wait for an earlier delivery of its ordering key
_PICK = f"""
SELECT d.id, d.webhook_id, d.order_key, {ordering.NOT_HEAD} AS waits
FROM deliveries d
WHERE d.id = ANY($1::bigint[]) AND d.next_attempt_at IS NOT NULL
ORDER BY d.id
FOR UPDATE OF d SKIP LOCKED
"""

_CLAIM = f"""
WITH moved AS (
    UPDATE deliveries d SET state = '{State.PROCESSING}', attempts = d.attempts + 1,
        next_attempt_at = NULL, updated_at = $2,
        lease_node = $3, lease_until = $4, lease_token = nextval('lease_tokens')
    WHERE d.id = ANY($1::bigint[])
    RETURNING d.id, d.uid, d.webhook_id, d.session_id, d.event_type, d.attempts,
        d.event_id, d.attempts - d.cycle_base AS cycle, d.order_key, d.lease_token
)
SELECT m.id, m.uid, m.webhook_id, m.session_id, m.event_type, m.attempts, e.body, m.cycle,
    m.order_key, m.lease_token
FROM moved m JOIN events e ON e.id = m.event_id
ORDER BY m.id
"""


async def load_due(
    conn: asyncpg.Connection,
    after: tuple[float, int] | None,
    limit: int,
    exclude_webhooks: Collection[int],
) -> list[DueItem]:
    """The next `limit` queued deliveries after the key `after`, soonest first."""
    sql = "SELECT next_attempt_at, id, webhook_id FROM deliveries WHERE next_attempt_at IS NOT NULL"
    params: list[Any] = []
    if after is not None:
        sql += " AND (next_attempt_at, id) > ($1, $2)"
        params += after
    if exclude_webhooks:
        sql += f" AND webhook_id <> ALL(${len(params) + 1}::bigint[])"
        params.append(list(exclude_webhooks))
    sql += f" ORDER BY next_attempt_at, id LIMIT ${len(params) + 1}"
    params.append(limit)
    rows = await conn.fetch(sql, *params)
    return [DueItem(r[0], r[1], r[2]) for r in rows]


async def load_webhook_due(conn: asyncpg.Connection, webhook_id: int, limit: int) -> list[DueItem]:
    """One webhook's soonest `limit` queued deliveries."""
    rows = await conn.fetch(
        "SELECT next_attempt_at, id, webhook_id FROM deliveries"
        " WHERE webhook_id = $1 AND next_attempt_at IS NOT NULL"
        " ORDER BY next_attempt_at, id LIMIT $2",
        webhook_id,
        limit,
    )
    return [DueItem(r[0], r[1], r[2]) for r in rows]


async def claim(
    conn: asyncpg.Connection,
    ids: Sequence[int],
    now: float,
    node_id: str,
    lease_until: float,
    woken: list[DueItem],
    limits: ClaimLimits | None = None,
) -> tuple[list[Claimed], dict[int, int]]:
    """Move those of `ids` still due to `processing` under this node's lease.

    Returns the claimed deliveries (with bodies, by id) and each one's fencing token:
    its outcome is stored only while the row still holds that token. One that is not
    its ordering key's head is held instead and the head woken (appended to `woken`),
    under the key's lock (ordering.py). With `limits`, at most what the webhook's
    cluster-wide limits allow is claimed (limits.py); the others stay due.
    """
    if not ids:
        return [], {}
    due = await conn.fetch(
        "SELECT id, webhook_id, order_key FROM deliveries WHERE id = ANY($1::bigint[])"
        " AND next_attempt_at IS NOT NULL ORDER BY id",
        list(ids),
    )
    await ordering.lock_keys(conn, [(r[1], r[2]) for r in due if r[2] is not None])
    ask = list(ids)
    quota: dict[int, limits_sql.Quota] = {}
    if limits is not None and due:
        hold_s = min(limits_sql.HOLD_S, max(1.0, (lease_until - now) / 2))
        quota = await limits_sql.quotas(conn, {r[1] for r in due}, now, node_id, limits, hold_s)
        # past a webhook's room, its unordered ids are not even locked
        ask = limits_sql.trim([(r[0], r[1], r[2] is not None) for r in due], quota, limits)
    picked = await conn.fetch(_PICK, ask)
    heads = [r[0] for r in picked if not r[3]]
    if limits is not None and heads:
        heads = await limits_sql.take(
            conn, [(r[0], r[1]) for r in picked if not r[3]], quota, limits
        )
    waiting = [r for r in picked if r[3]]
    await ordering.hold(conn, [r[0] for r in waiting])
    if limits is not None and limits.refused:  # at a limit: this node wants a share
        await limits_sql.want(
            conn, [w for w, at in limits.refused.items() if at is None], now, node_id
        )
    rows = await conn.fetch(_CLAIM, heads, now, node_id, lease_until) if heads else []
    if waiting:  # after the claims: a head claimed just now is in flight, not woken
        woken += await ordering.wake_heads(conn, [(r[1], r[2]) for r in waiting], now)
    claimed = [Claimed(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), r[7], r[8]) for r in rows]
    return claimed, {r[0]: r[9] for r in rows}
