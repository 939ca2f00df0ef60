"""Nodes: who is in the cluster, their heartbeat, and the leases they hold.

A node registers when its store opens and beats its heartbeat every `lease / 3`: the
beat renews the lease of every delivery it holds in flight (`lease_until = now +
lease`) and reclaims the expired leases of nodes that stopped beating (killed,
frozen, cut off), which go back to the queue exactly as after a restart (same
X-Webhook-Id, same attempt number). On a graceful stop the node hands its leases back
at once (`recover(own=True)`) and leaves the list.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import asyncpg

from ...models import DueItem, State
from . import outcomes

# a node that has not beaten for this long is dropped from the list (its leases were
# reclaimed long before)
FORGET_AFTER_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as `GET /api/cluster` shows it."""

    node_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    lease_s: float
    stopping: bool
    holding: int  # attempts in flight under its lease


async def register(
    conn: asyncpg.Connection, node_id: str, host: str, pid: int, now: float, lease_s: float
) -> None:
    """Add this node to the list (or refresh it)."""
    await conn.execute(
        "INSERT INTO nodes (id, host, pid, started_at, heartbeat_at, lease_s)"
        " VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (id) DO UPDATE SET"
        " heartbeat_at = excluded.heartbeat_at, lease_s = excluded.lease_s, stopping = FALSE",
        node_id,
        host,
        pid,
        now,
        lease_s,
    )


async def heartbeat(
    conn: asyncpg.Connection,
    node_id: str,
    host: str,
    pid: int,
    now: float,
    lease_s: float,
    tokens: Collection[int],
) -> list[DueItem]:
    """Beat: renew this node's leases, reclaim the expired ones; the deliveries now due.

    Only the leases of `tokens` (the attempts this node has in flight) are renewed, not
    every row naming this node: a claim whose commit reached the server but whose answer
    was lost (the connection cut at that instant) names this node while its scheduler
    never started the attempt; that lease runs out and the delivery is reclaimed, instead
    of being renewed forever. The node's row comes back if it was forgotten meanwhile.
    """
    await register(conn, node_id, host, pid, now, lease_s)
    await conn.execute(
        "UPDATE deliveries SET lease_until = $1"
        f" WHERE lease_node = $2 AND state = '{State.PROCESSING}'"
        " AND lease_token = ANY($3::bigint[])",
        now + lease_s,
        node_id,
        list(tokens),
    )
    await conn.execute(
        "DELETE FROM nodes WHERE heartbeat_at < $1 AND id <> $2", now - FORGET_AFTER_S, node_id
    )
    _, due = await outcomes.recover(conn, now, node_id, own=False)
    return due


async def leave(conn: asyncpg.Connection, node_id: str, now: float) -> list[DueItem]:
    """Hand this node's leases back and leave the list (a graceful stop)."""
    _, due = await outcomes.recover(conn, now, node_id, own=True)
    await conn.execute("DELETE FROM nodes WHERE id = $1", node_id)
    return due


async def nodes(conn: asyncpg.Connection) -> list[NodeInfo]:
    """Every node with the attempts each holds, by id."""
    rows = await conn.fetch(
        "SELECT n.id, n.host, n.pid, n.started_at, n.heartbeat_at, n.lease_s, n.stopping,"
        f" (SELECT count(*) FROM deliveries d WHERE d.state = '{State.PROCESSING}'"
        "  AND d.lease_node = n.id) FROM nodes n ORDER BY n.id"
    )
    return [NodeInfo(*r) for r in rows]
