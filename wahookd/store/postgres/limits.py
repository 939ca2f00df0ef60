"""Cluster-wide per-webhook limits in a claim: `per_webhook_concurrency` and `rateLimit`.

Every node's scheduler keeps both limits for its own attempts in memory (the window);
the cluster's are kept here, by the claims of all nodes, with no coordinator:

- a claim takes a transaction-level advisory lock per webhook of its batch (in lock id
  order, after the ordering keys' locks), so two claims of one webhook never decide at
  once; claims of different webhooks never wait on each other;
- under it, it counts the webhook's deliveries `processing` (every node's: the partial
  index `deliveries_processing`, one entry per attempt in flight) and claims at most
  `per_webhook - in flight` of them. Only claims ever add to that count, and each
  holds the lock until its commit; a statement run after the lock is granted sees
  every claim committed before (READ COMMITTED), so the count is exact;
- a webhook with a `rate_limit` has a token bucket row (`webhook_tokens`: tokens,
  updated_at; no row: full), refilled at the rate up to a burst of the rate, as
  delivery/throttle.py's; the claim takes at most the whole tokens and writes the rest
  back. Times are the nodes' wall clocks: a time before `updated_at` refills nothing,
  so a node whose clock is behind can only claim less.

Ids a limit holds back stay due and untouched; their webhook goes in `limits.refused`
with when to ask again: the next token (rate), or None (concurrency: when an attempt
in flight ends, on whichever node).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import asyncpg

from ...models import State
from ..protocol import ClaimLimits

# float refills land a hair below a whole token (as throttle.py)
_EPSILON = 1e-9

_STATE = f"""
SELECT v.id, w.rate_limit, b.tokens, b.updated_at,
    (SELECT count(*) FROM deliveries d
     WHERE d.webhook_id = v.id AND d.state = '{State.PROCESSING}') AS inflight
FROM unnest($1::bigint[]) AS v(id)
LEFT JOIN webhooks w ON w.id = v.id
LEFT JOIN webhook_tokens b ON b.webhook_id = v.id
"""

_SAVE = """
INSERT INTO webhook_tokens (webhook_id, tokens, updated_at)
SELECT * FROM unnest($1::bigint[], $2::double precision[], $3::double precision[])
ON CONFLICT (webhook_id) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at
"""


def webhook_lock(webhook_id: int) -> int:
    """The advisory lock id of a webhook's limits: a signed 64-bit hash."""
    text = f"limit\0{webhook_id}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


def refill(tokens: float | None, at: float | None, rate: int, now: float) -> tuple[float, float]:
    """A bucket's (tokens, updated_at) at `now`: no row is a full bucket (burst = rate)."""
    if tokens is None or at is None:
        return float(rate), now
    if now > at:
        return min(float(rate), tokens + (now - at) * rate), now
    return tokens, at


async def limit(
    conn: asyncpg.Connection, heads: Sequence[tuple[int, int]], now: float, limits: ClaimLimits
) -> list[int]:
    """Of the ids to claim, (id, webhook id) in id order, those the webhooks' limits allow.

    Takes the webhooks' locks (held to the commit), spends their tokens, and notes in
    `limits.refused` the webhooks of the ids left out.
    """
    by_hook: dict[int, list[int]] = {}
    for delivery_id, webhook_id in heads:
        by_hook.setdefault(webhook_id, []).append(delivery_id)
    locks = sorted({webhook_lock(w) for w in by_hook})
    await conn.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k", locks
    )
    rows = await conn.fetch(_STATE, sorted(by_hook))
    allowed: list[int] = []
    saves: tuple[list[int], list[float], list[float]] = ([], [], [])
    for webhook_id, rate, tokens, at, inflight in rows:
        wanted = by_hook[webhook_id]
        room = max(0, limits.per_webhook - int(inflight))
        retry_at: float | None = None
        if rate is not None:
            tokens, at = refill(tokens, at, rate, now)
            whole = math.floor(tokens + _EPSILON)
            if whole < min(room, len(wanted)):
                room = whole
                left = max(0.0, tokens - whole)
                retry_at = at + (1.0 - left) / rate
        take = min(room, len(wanted))
        allowed += wanted[:take]
        if take < len(wanted):
            limits.refused[webhook_id] = retry_at
        if rate is not None and take:
            saves[0].append(webhook_id)
            saves[1].append(max(0.0, tokens - take))
            saves[2].append(at)
    if saves[0]:
        await conn.execute(_SAVE, *saves)
    allowed.sort()
    return allowed
