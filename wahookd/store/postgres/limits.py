"""Cluster-wide per-webhook limits in a claim: `per_webhook_concurrency` and `rateLimit`.

Every node's scheduler keeps both limits for its own attempts in memory (the window);
the cluster's are kept here, by the claims of all nodes, with no coordinator:

- a claim takes a transaction-level advisory lock per webhook of its batch (in lock id
  order, after the ordering keys' locks, before any row lock), so two claims of one
  webhook never decide at once; claims of different webhooks never wait on each other;
- under it, it counts the webhook's deliveries `processing` (every node's: the partial
  index `deliveries_processing`, one entry per attempt in flight) and claims at most
  `per_webhook - in flight` of them. Only claims ever add to that count, and each
  holds the lock until its commit; a statement run after the lock is granted sees
  every claim committed before (READ COMMITTED), so the count is exact;
- a node stalled (SIGSTOP, a long pause) inside a claim would hold these locks and
  stall every claim of its webhooks: the claim sets `idle_in_transaction_session_timeout`
  for its own transaction (HOLD_S, at most half the lease), so the server ends it;
- the slots are shared fairly among the nodes that want them: those holding some,
  and those a limit held back within DEMAND_S (a row of `webhook_demand`, written
  when that happens). A node takes no more than its share (the limit over those
  nodes, rounded up) unless it is alone: otherwise a node whose attempts end would
  hand its slots to its own next deliveries in the same commit, for ever, and the
  others would never get one;
- a webhook with a `rate_limit` has a token bucket row (`webhook_tokens`: tokens,
  updated_at; no row: full), refilled at the rate up to a burst of the rate, as
  delivery/throttle.py's; the claim takes at most the whole tokens and writes the rest
  back. Times are the nodes' wall clocks: a time before `updated_at` refills nothing,
  so a node whose clock is behind can only claim less.

The quotas are read before the rows are locked, and no more unordered rows of a
webhook are locked than it has room for, so a claim whose webhooks are all at their
limits locks no row and writes no WAL (only a `webhook_demand` row, UNLOGGED: its
commit waits for no flush). Ids a
limit holds back stay due and untouched; their webhook goes in `limits.refused` with
when to ask again: the next token (rate), or None (concurrency: when an attempt in
flight ends, on whichever node).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import asyncpg

from ...models import State
from ..protocol import ClaimLimits

# float refills land a hair below a whole token (as throttle.py)
_EPSILON = 1e-9

# a node that asked for a webhook at its limit within this long still wants a share
# (longer than the scheduler's longest backoff, delivery/window.BUSY_MAX_S)
DEMAND_S = 3.0
# demand rows older than this are deleted (nodes gone, webhooks no longer busy)
DEMAND_KEEP_S = 60.0
# the longest a claim holding limit locks may sit idle (its node stalled) before the
# server ends it; claims.py makes it shorter with a short lease
HOLD_S = 10.0

_PROCESSING = f"d.webhook_id = v.id AND d.state = '{State.PROCESSING}'"

# per webhook: its rate limit and bucket, its deliveries in flight (all, this node's),
# and how many nodes share its slots: those holding some, those that asked for one
# lately, and this one
_STATE = f"""
SELECT v.id, w.rate_limit, b.tokens, b.updated_at,
    set_config('idle_in_transaction_session_timeout', $4, true) AS idle_timeout,
    (SELECT count(*) FROM deliveries d WHERE {_PROCESSING}) AS inflight,
    (SELECT count(*) FROM deliveries d WHERE {_PROCESSING} AND d.lease_node = $2) AS mine,
    (SELECT count(*) FROM (
        SELECT d.lease_node FROM deliveries d WHERE {_PROCESSING}
        UNION SELECT q.node_id FROM webhook_demand q WHERE q.webhook_id = v.id AND q.at >= $3
        UNION SELECT $2) AS s) AS sharing
FROM unnest($1::bigint[]) AS v(id)
LEFT JOIN webhooks w ON w.id = v.id
LEFT JOIN webhook_tokens b ON b.webhook_id = v.id
"""

_DEMAND = """
WITH gone AS (
    DELETE FROM webhook_demand WHERE webhook_id = ANY($1::bigint[]) AND at < $4
)
INSERT INTO webhook_demand (webhook_id, node_id, at)
SELECT w, $2, $3 FROM unnest($1::bigint[]) AS w
ON CONFLICT (webhook_id, node_id) DO UPDATE SET at = excluded.at
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


@dataclass
class Quota:
    """How many more deliveries of one webhook a claim may take, and why no more."""

    room: int  # the most it may claim now
    rate: int | None = None  # its rate limit; then its bucket at `at`:
    tokens: float = 0.0
    at: float = 0.0
    retry_at: float | None = None  # when short of tokens: when the next one is


async def quotas(
    conn: asyncpg.Connection,
    webhook_ids: Collection[int],
    now: float,
    node_id: str,
    limits: ClaimLimits,
    hold_s: float = HOLD_S,
) -> dict[int, Quota]:
    """Lock these webhooks' limits (held to the commit) and say what each one allows now.

    A webhook that allows nothing is put in `limits.refused` already.
    """
    hooks = sorted(webhook_ids)
    locks = sorted({webhook_lock(w) for w in hooks})
    await conn.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k", locks
    )
    out: dict[int, Quota] = {}
    limit = limits.per_webhook
    # a node that stalls (SIGSTOP, a long pause) while holding these locks would stall
    # every claim of these webhooks in the cluster: the server ends its transaction
    # once it has sent nothing for `hold_s` (set for this transaction only)
    idle = f"{max(1, int(hold_s * 1000))}ms"
    rows = await conn.fetch(_STATE, hooks, node_id, now - DEMAND_S, idle)
    for webhook_id, rate, tokens, at, _, inflight, mine, sharing in rows:
        # the slots left, and no more than this node's fair share of them
        share = -(-limit // max(1, int(sharing)))
        quota = out[webhook_id] = Quota(max(0, min(limit - int(inflight), share - int(mine))))
        if rate is not None:
            quota.rate = rate
            quota.tokens, quota.at = refill(tokens, at, rate, now)
            whole = math.floor(quota.tokens + _EPSILON)
            if whole < quota.room:
                quota.room = whole
                quota.retry_at = quota.at + (1.0 - max(0.0, quota.tokens - whole)) / rate
        if quota.room == 0:
            limits.refused[webhook_id] = quota.retry_at
    return out


def trim(
    due: Sequence[tuple[int, int, bool]], quota: dict[int, Quota], limits: ClaimLimits
) -> list[int]:
    """Of the ids due, (id, webhook id, has an ordering key) in id order, those worth
    locking: every ordered one (a non-head takes no room), and no more unordered ones
    of a webhook than its room. The webhooks of those left out go in `limits.refused`."""
    kept: list[int] = []
    counted: dict[int, int] = {}
    for delivery_id, webhook_id, keyed in due:
        q = quota.get(webhook_id)
        if keyed or q is None:
            kept.append(delivery_id)
        elif counted.get(webhook_id, 0) < q.room:
            counted[webhook_id] = counted.get(webhook_id, 0) + 1
            kept.append(delivery_id)
        else:
            limits.refused[webhook_id] = q.retry_at
    return kept


async def want(
    conn: asyncpg.Connection, webhook_ids: Collection[int], now: float, node_id: str
) -> None:
    """Note that this node wants slots of these webhooks (held back at their limits)."""
    if webhook_ids:
        await conn.execute(_DEMAND, sorted(webhook_ids), node_id, now, now - DEMAND_KEEP_S)


async def take(
    conn: asyncpg.Connection,
    heads: Sequence[tuple[int, int]],
    quota: dict[int, Quota],
    limits: ClaimLimits,
) -> list[int]:
    """Of the ids to claim, (id, webhook id) in id order, those the quotas allow.

    Spends the rate-limited webhooks' tokens and notes in `limits.refused` the
    webhooks of the ids left out.
    """
    allowed: list[int] = []
    taken: dict[int, int] = {}
    for delivery_id, webhook_id in heads:
        q = quota.get(webhook_id)
        if q is None:  # moved to another webhook meanwhile? never: claim what is due
            allowed.append(delivery_id)
        elif taken.get(webhook_id, 0) < q.room:
            taken[webhook_id] = taken.get(webhook_id, 0) + 1
            allowed.append(delivery_id)
        else:
            limits.refused[webhook_id] = q.retry_at
    saves: tuple[list[int], list[float], list[float]] = ([], [], [])
    for webhook_id, n in sorted(taken.items()):
        q = quota[webhook_id]
        if q.rate is not None:
            saves[0].append(webhook_id)
            saves[1].append(max(0.0, q.tokens - n))
            saves[2].append(q.at)
    if saves[0]:
        await conn.execute(_SAVE, *saves)
    return allowed
