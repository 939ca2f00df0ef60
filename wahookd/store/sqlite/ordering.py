"""Ordering (SPEC §8): the SQL that keeps one delivery per (webhook, key) in play.

The invariant. Among the unfinished deliveries (`finished_at IS NULL`) of one webhook
that share an `order_key`, only the lowest id, the key's *head*, may be due or in
flight. The others are *held*: `pending` with no `next_attempt_at`. So the index the
scheduler reads (`deliveries_due`) does not hold them, and a backlog of any size
behind a stuck head costs no scan: the head's final outcome wakes the next one with
one lookup. Each place that changes a delivery keeps the rule:

- ingest holds a new delivery whose key has an unfinished one (`keys_in_use`);
- `claim` refuses a row that is not its key's head (`NOT_HEAD`), holds it, and wakes
  the head (`wake_heads`), so a broken invariant heals instead of stalling the key;
- a final outcome (`delivered`, `failed`) wakes the next head (`wake_heads`);
- re-enabling a webhook wakes unkeyed rows and heads only (`webhooks.set_parked`);
- a manual retry of failed ones settles their keys (`settle_keys`), a queue clear
  wakes the heads it uncovered.

Every lookup goes through the partial index `deliveries_order(webhook_id, order_key, id)
WHERE order_key IS NOT NULL AND finished_at IS NULL`. A woken head is due now only when
its webhook is active; behind an inactive one it stays parked like any other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from typing import Any

import msgspec

from ...models import DueItem, State
from .batching import padded_in

Key = tuple[int, str]  # (webhook_id, order_key)

# (webhook, key) pairs per statement: two parameters each
_PAIRS_PER_STATEMENT = 250

_QUEUED = f"('{State.PENDING}', '{State.RETRYING}')"

# the unfinished deliveries of the key (webhook_id, order_key) = (v.column1, v.column2)
_OF_KEY = (
    "FROM deliveries d INDEXED BY deliveries_order WHERE d.webhook_id = v.column1"
    " AND d.order_key = v.column2 AND d.order_key IS NOT NULL AND d.finished_at IS NULL"
)

# conditions on a row of `deliveries` (unaliased) with an order_key: an unfinished
# delivery of its key comes before it / none does (it is the head)
_EARLIER = (
    "EXISTS (SELECT 1 FROM deliveries e INDEXED BY deliveries_order"
    " WHERE e.webhook_id = deliveries.webhook_id AND e.order_key = deliveries.order_key"
    " AND e.order_key IS NOT NULL AND e.finished_at IS NULL AND e.id < deliveries.id)"
)
IS_LOWEST = f"NOT {_EARLIER}"
# a claim's column: 1 when the row may not go yet
NOT_HEAD = f"(order_key IS NOT NULL AND {_EARLIER})"


def _chunks(keys: Iterable[Key]) -> Iterable[tuple[str, list[Any]]]:
    """(VALUES marks, parameters) per statement's worth of (webhook, key) pairs."""
    pairs = sorted(set(keys))
    for lo in range(0, len(pairs), _PAIRS_PER_STATEMENT):
        chunk = pairs[lo : lo + _PAIRS_PER_STATEMENT]
        params: list[Any] = [value for pair in chunk for value in pair]
        yield ",".join(["(?, ?)"] * len(chunk)), params


def keys_in_use(conn: sqlite3.Connection, keys: Iterable[Key]) -> set[Key]:
    """Those of the keys that have an unfinished delivery (a new one must wait)."""
    found: set[Key] = set()
    for values, params in _chunks(keys):
        (rows,) = conn.execute(
            "SELECT json_group_array(json_array(v.column1, v.column2))"
            f" FROM (VALUES {values}) AS v WHERE EXISTS (SELECT 1 {_OF_KEY})",
            params,
        ).fetchone()
        found.update((webhook_id, key) for webhook_id, key in msgspec.json.decode(rows))
    return found


def wake_heads(conn: sqlite3.Connection, keys: Iterable[Key], now: float) -> list[DueItem]:
    """Make each key's head due now when it is held and its webhook active; those woken.

    A head in flight, already due, or parked behind an inactive webhook stays as it is.
    """
    woken: list[DueItem] = []
    for values, params in _chunks(keys):
        (rows,) = conn.execute(
            # NOT INDEXED: the heads by rowid; on its own the planner walks the state
            # index over every queued row, held ones included (tests/store/test_ordering_scan.py)
            "SELECT json_group_array(json_array(h.id, h.webhook_id)) FROM deliveries h NOT INDEXED"
            f" WHERE h.id IN (SELECT (SELECT d.id {_OF_KEY} ORDER BY d.id LIMIT 1)"
            f" FROM (VALUES {values}) AS v)"
            f" AND h.next_attempt_at IS NULL AND h.state IN {_QUEUED}"
            " AND h.webhook_id IN (SELECT id FROM webhooks WHERE is_active = 1)",
            params,
        ).fetchone()
        heads = msgspec.json.decode(rows)
        if not heads:
            continue
        marks, ids = padded_in([delivery_id for delivery_id, _ in heads])
        conn.execute(
            f"UPDATE deliveries SET next_attempt_at = ?, updated_at = ? WHERE id IN ({marks})",
            (now, now, *ids),
        )
        woken.extend(DueItem(now, delivery_id, webhook_id) for delivery_id, webhook_id in heads)
    return woken


def hold(conn: sqlite3.Connection, ids: Collection[int]) -> None:
    """Take queued deliveries out of the due indexes: they wait for their key's head."""
    if ids:
        marks, params = padded_in(list(ids))
        conn.execute(
            f"UPDATE deliveries SET next_attempt_at = NULL WHERE id IN ({marks})"
            f" AND state IN {_QUEUED}",
            params,
        )


def settle_keys(
    conn: sqlite3.Connection, keys: Iterable[Key], now: float
) -> tuple[set[int], list[DueItem]]:
    """Restore the invariant on keys whose failed deliveries came back: (held, woken).

    A manual retry makes an old delivery unfinished again, below the key's current
    head. Per key: every queued row but the lowest is held, and the lowest waits too
    while another delivery of the key is in flight (that one's outcome wakes it); a
    lowest left held with nothing in flight is woken. Reads each key's unfinished
    rows: a manual, rare operation.
    """
    held: set[int] = set()
    idle: list[Key] = []
    for webhook_id, key in sorted(set(keys)):
        rows = conn.execute(
            "SELECT id, state, next_attempt_at FROM deliveries INDEXED BY deliveries_order"
            " WHERE webhook_id = ? AND order_key = ? AND order_key IS NOT NULL"
            " AND finished_at IS NULL ORDER BY id",
            (webhook_id, key),
        ).fetchall()
        busy = any(state == State.PROCESSING for _, state, _ in rows)
        for index, (delivery_id, state, next_at) in enumerate(rows):
            waits = index > 0 or busy
            if waits and state != State.PROCESSING and next_at is not None:
                held.add(delivery_id)
        if rows and not busy:
            idle.append((webhook_id, key))
    hold(conn, held)
    return held, wake_heads(conn, idle, now)
