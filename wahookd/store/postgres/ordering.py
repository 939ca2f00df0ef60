"""Ordering (SPEC §8) in PostgreSQL: one delivery per (webhook, key) in play, cluster-wide.

The invariant is store/sqlite/ordering.py's: among the unfinished deliveries of one
webhook that share an `order_key`, only the lowest id (the key's *head*) may be due or
in flight; the others are *held* (`pending`, no `next_attempt_at`). The same places
keep it (ingest holds, claim refuses a non-head and wakes the head, a final outcome
wakes the next head, re-enabling wakes heads only, a manual retry settles its keys, a
queue clear wakes what it uncovered), through the same partial index
`deliveries_order`.

What several nodes add: two transactions on different nodes must not each decide
about one key from a snapshot that misses the other's uncommitted rows (a delivery
ingested as due while the head finishes elsewhere, say: two heads, or a held one
nobody wakes). So every transaction that decides about a key first takes a
transaction-level advisory lock on it (`lock_keys`, in key order): no coordinator, no
extra rows, and the lock is gone at commit. Nodes ordering different keys never wait
on each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

import asyncpg

from ...models import DueItem, State

Key = tuple[int, str]  # (webhook_id, order_key)

_QUEUED = f"('{State.PENDING}', '{State.RETRYING}')"

# conditions on a row `d` of deliveries with an order_key: an unfinished delivery of its
# key comes before it
_EARLIER = (
    "EXISTS (SELECT 1 FROM deliveries e WHERE e.webhook_id = d.webhook_id"
    " AND e.order_key = d.order_key AND e.order_key IS NOT NULL AND e.finished_at IS NULL"
    " AND e.id < d.id)"
)
IS_LOWEST = f"NOT {_EARLIER}"
NOT_HEAD = f"(d.order_key IS NOT NULL AND {_EARLIER})"


def key_lock(key: Key) -> int:
    """The advisory lock id of an ordering key: a signed 64-bit hash."""
    text = f"order\0{key[0]}\0{key[1]}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


async def lock_keys(conn: asyncpg.Connection, keys: Iterable[Key]) -> None:
    """Hold these keys until the transaction ends (in lock id order: no cycles)."""
    ids = sorted({key_lock(key) for key in keys})
    if ids:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k", ids
        )


def _split(keys: Iterable[Key]) -> tuple[list[int], list[str]]:
    pairs = sorted(set(keys))
    return [w for w, _ in pairs], [k for _, k in pairs]


async def keys_in_use(conn: asyncpg.Connection, keys: Iterable[Key]) -> set[Key]:
    """Those of the keys that have an unfinished delivery (a new one must wait)."""
    hooks, names = _split(keys)
    if not hooks:
        return set()
    rows = await conn.fetch(
        "SELECT v.webhook_id, v.order_key FROM unnest($1::bigint[], $2::text[])"
        " AS v(webhook_id, order_key) WHERE EXISTS (SELECT 1 FROM deliveries d"
        " WHERE d.webhook_id = v.webhook_id AND d.order_key = v.order_key"
        " AND d.order_key IS NOT NULL AND d.finished_at IS NULL)",
        hooks,
        names,
    )
    return {(r[0], r[1]) for r in rows}


async def wake_heads(conn: asyncpg.Connection, keys: Iterable[Key], now: float) -> list[DueItem]:
    """Make each key's head due now when it is held and its webhook active; those woken."""
    hooks, names = _split(keys)
    if not hooks:
        return []
    rows = await conn.fetch(
        "UPDATE deliveries h SET next_attempt_at = $3, updated_at = $3"
        " FROM unnest($1::bigint[], $2::text[]) AS v(webhook_id, order_key)"
        " WHERE h.id = (SELECT d.id FROM deliveries d WHERE d.webhook_id = v.webhook_id"
        "  AND d.order_key = v.order_key AND d.order_key IS NOT NULL"
        "  AND d.finished_at IS NULL ORDER BY d.id LIMIT 1)"
        f" AND h.next_attempt_at IS NULL AND h.state IN {_QUEUED}"
        " AND h.webhook_id IN (SELECT id FROM webhooks WHERE is_active)"
        " RETURNING h.id, h.webhook_id",
        hooks,
        names,
        now,
    )
    return [DueItem(now, r[0], r[1]) for r in sorted(rows)]


async def hold(conn: asyncpg.Connection, ids: Collection[int]) -> None:
    """Take queued deliveries out of the due indexes: they wait for their key's head."""
    if ids:
        await conn.execute(
            "UPDATE deliveries SET next_attempt_at = NULL WHERE id = ANY($1::bigint[])"
            f" AND state IN {_QUEUED}",
            sorted(ids),
        )


async def settle_keys(
    conn: asyncpg.Connection, keys: Iterable[Key], now: float
) -> tuple[set[int], list[DueItem]]:
    """Restore the invariant on keys whose failed deliveries came back: (held, woken).

    As store/sqlite/ordering.settle_keys; the caller holds the keys' locks.
    """
    held: set[int] = set()
    idle: list[Key] = []
    for webhook_id, key in sorted(set(keys)):
        rows = await conn.fetch(
            "SELECT id, state, next_attempt_at FROM deliveries WHERE webhook_id = $1"
            " AND order_key = $2 AND order_key IS NOT NULL AND finished_at IS NULL ORDER BY id",
            webhook_id,
            key,
        )
        busy = any(r[1] == State.PROCESSING for r in rows)
        for index, (delivery_id, state, next_at) in enumerate(rows):
            waits = index > 0 or busy
            if waits and state != State.PROCESSING and next_at is not None:
                held.add(delivery_id)
        if rows and not busy:
            idle.append((webhook_id, key))
    await hold(conn, held)
    return held, await wake_heads(conn, idle, now)
