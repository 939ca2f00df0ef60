"""Outcomes: attempts recorded and their deliveries moved on; auto-disable; lease recovery.

As in store/sqlite/outcomes.py, `record` and `recover` decide nothing: they read what
`transition()` needs, call it, and store what it returns. What the cluster adds:

- an outcome is stored only while its delivery is still `processing` under the lease
  it was claimed with (the fencing token): a node that stalled past its lease, whose
  delivery another node reclaimed (and maybe claimed again), finds a newer token and
  its late outcome is only logged, never written over the newer attempt's;
- the webhooks of the batch's failures (and those whose failing clock a success stops)
  are locked (`FOR NO KEY UPDATE`, in id order) before their state is read: a webhook
  turned off by another node at the same time is seen either before (the retry parks)
  or after (its park, a later statement, finds the retry committed), never half. A
  success needs no lock: it finishes the delivery whatever the webhook is now. Locks
  are always taken rows first (each node's own, by lease token), then webhooks in id
  order, so two recorders never wait on each other in a cycle;
- `recover` returns this node's leases and every expired one, never a live node's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import asyncpg

from ...delivery.transition import (
    WEBHOOK_GONE,
    Delivery,
    Interrupted,
    Recorded,
    WebhookState,
    transition,
)
from ...models import DueItem, Outcome, State
from . import notify, ordering
from .stats import StatsDelta
from .webhooks import set_parked, set_webhook_active

__all__ = ["FAILING_GAP_S", "WEBHOOK_GONE", "record", "recover"]

# auto-disable: failures further apart than this do not make one failing period
FAILING_GAP_S = 24 * 3600.0

_ACTIVE = WebhookState(True)
_INACTIVE = WebhookState(False)

_UPDATE = (
    "UPDATE deliveries d SET state = v.state, next_attempt_at = v.next_at,"
    " finished_at = v.finished_at, updated_at = $1, last_status = v.status,"
    " last_error = v.error, lease_node = NULL, lease_until = NULL, lease_token = NULL"
    " FROM unnest($2::bigint[], $3::text[], $4::float8[], $5::float8[], $6::int[], $7::text[])"
    " AS v(id, state, next_at, finished_at, status, error)"
    f" WHERE d.id = v.id AND d.state = '{State.PROCESSING}'"
)
_INSERT_ATTEMPTS = (
    "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code,"
    " outcome, error, response_body)"
    " SELECT * FROM unnest($1::bigint[], $2::int[], $3::float8[], $4::int[], $5::int[],"
    " $6::text[], $7::text[], $8::text[])"
)


def webhook_state(is_active: bool | None) -> WebhookState | None:
    """The webhook for `transition()`: None when deleted."""
    if is_active is None:
        return None
    return _ACTIVE if is_active else _INACTIVE


async def record(
    conn: asyncpg.Connection,
    outcomes: Sequence[Outcome],
    now: float,
    disable_after_s: float | None,
    node_id: str,
    tokens: Mapping[int, int],
    woken: list[DueItem],
) -> list[int]:
    """Log attempts and move their deliveries on as `transition()` decides.

    `tokens`: the fencing token each delivery was claimed with (by this node); an
    outcome without one, or whose row holds another, is only logged. A delivery with
    an ordering key that finished wakes its key's next one (appended to `woken`).
    Returns the webhooks this batch auto-disabled.
    """
    held = await _held(conn, [o.claimed.id for o in outcomes], tokens)
    webhooks, locked = await _webhooks(conn, outcomes)
    finished_keys: list[ordering.Key] = []
    attempt_cols: list[list[Any]] = [[] for _ in range(8)]
    update_cols: list[list[Any]] = [[] for _ in range(6)]
    gone: set[int] = set()
    stats = StatsDelta()
    for o in outcomes:
        c, r = o.claimed, o.result
        row = (
            c.id,
            c.attempt,
            o.started_at,
            r.duration_ms,
            r.status_code,
            o.kind,
            r.error,
            r.response_body,
        )
        for col, value in zip(attempt_cols, row, strict=True):
            col.append(value)
        t = transition(Delivery.of(c), Recorded.of(o), webhooks.get(c.webhook_id), now)
        if t.disables_webhook:
            gone.add(c.webhook_id)
        if c.id not in held:
            continue  # no longer in flight under our lease: only logged
        update = (c.id, t.state.value, t.next_attempt_at, t.finished_at, r.status_code, t.error)
        for col, value in zip(update_cols, update, strict=True):
            col.append(value)
        if t.stats is not None:
            stats.add(c.session_id, c.event_type, t.stats, now, r.duration_ms)
        if c.order_key is not None and t.finished_at is not None:
            finished_keys.append((c.webhook_id, c.order_key))
    if update_cols[0]:
        await conn.execute(_UPDATE, now, *update_cols)
    for webhook_id in sorted(gone):
        # after the updates, so this batch's retries to it are parked as well
        await conn.execute(
            "UPDATE webhooks SET is_active = FALSE, updated_at = $1 WHERE id = $2", now, webhook_id
        )
        await set_parked(conn, webhook_id, parked=True, now=now)
        await notify.webhook_changed(conn, webhook_id)  # the other nodes stop it too
    if finished_keys:  # after a 410's parking: a head behind an inactive webhook stays parked
        await ordering.lock_keys(conn, finished_keys)
        woken += await ordering.wake_heads(conn, finished_keys, now)
    if attempt_cols[0]:
        await conn.execute(_INSERT_ATTEMPTS, *attempt_cols)
    await stats.apply(conn, node_id)
    return await _track_failing(conn, outcomes, now, disable_after_s, locked)


async def _webhooks(
    conn: asyncpg.Connection, outcomes: Sequence[Outcome]
) -> tuple[dict[int, WebhookState | None], set[int]]:
    """The batch's webhooks' states, and those locked (that this batch may change).

    Locked: the webhooks of failures and 410s (their failing clock moves, they may be
    turned off), those whose failing clock a success stops, and those of ordered
    deliveries (a finished one wakes the next only if the webhook is active: another
    node re-enabling it must not miss that); read again once locked.
    """
    failing = {
        o.claimed.webhook_id
        for o in outcomes
        if o.kind != "delivered" or o.claimed.order_key is not None
    }
    every = sorted({o.claimed.webhook_id for o in outcomes})
    rows = await conn.fetch(
        "SELECT id, is_active, failing_since IS NOT NULL FROM webhooks"
        " WHERE id = ANY($1::bigint[])",
        every,
    )
    states = {r[0]: webhook_state(r[1]) for r in rows}
    lock = sorted(failing | {r[0] for r in rows if r[2]})
    found: set[int] = set()
    if lock:
        # ORDER BY below FOR UPDATE: the rows are locked in id order
        for r in await conn.fetch(
            "SELECT id, is_active FROM webhooks WHERE id = ANY($1::bigint[])"
            " ORDER BY id FOR NO KEY UPDATE",
            lock,
        ):
            states[r[0]] = webhook_state(r[1])
            found.add(r[0])
        for webhook_id in set(lock) - found:
            states.pop(webhook_id, None)  # deleted meanwhile
    return states, found


async def _held(
    conn: asyncpg.Connection, ids: Sequence[int], tokens: Mapping[int, int]
) -> set[int]:
    """Those of ids still `processing` under the token this node claimed them with, locked."""
    fenced = [(i, tokens[i]) for i in ids if i in tokens]
    if not fenced:
        return set()
    rows = await conn.fetch(
        "SELECT d.id FROM deliveries d JOIN unnest($1::bigint[], $2::bigint[]) AS v(id, token)"
        f" ON d.id = v.id AND d.lease_token = v.token WHERE d.state = '{State.PROCESSING}'"
        " ORDER BY d.id FOR UPDATE OF d",
        [i for i, _ in fenced],
        [t for _, t in fenced],
    )
    return {r[0] for r in rows}


async def _track_failing(
    conn: asyncpg.Connection,
    outcomes: Sequence[Outcome],
    now: float,
    disable_after_s: float | None,
    locked: Collection[int],
) -> list[int]:
    """Keep webhooks.failing_since (first failure since the last success); auto-disable.

    Only the `locked` webhooks are written (a webhook another node deleted meanwhile is
    not among them).
    """
    succeeded: set[int] = set()
    failing: set[int] = set()
    for o in outcomes:
        if o.kind == "delivered":
            succeeded.add(o.claimed.webhook_id)
        elif o.kind in ("retry", "failed"):
            failing.add(o.claimed.webhook_id)
    clear = sorted(succeeded.intersection(locked))
    if clear:
        await conn.execute(
            "UPDATE webhooks SET failing_since = NULL, last_failure_at = NULL"
            " WHERE id = ANY($1::bigint[]) AND failing_since IS NOT NULL",
            clear,
        )
    disabled: list[int] = []
    hooks = sorted((failing - succeeded).intersection(locked))
    if not hooks:
        return disabled
    # a failure after a quiet spell starts a new failing period: an idle webhook that
    # failed once long ago is not "failing for days"
    rows = await conn.fetch(
        "UPDATE webhooks SET failing_since = CASE WHEN failing_since IS NULL"
        " OR last_failure_at IS NULL OR $1 - last_failure_at > $2 THEN $1"
        " ELSE failing_since END, last_failure_at = $1 WHERE id = ANY($3::bigint[])"
        " RETURNING id, failing_since, is_active",
        now,
        FAILING_GAP_S,
        hooks,
    )
    if disable_after_s is None:
        return disabled
    for webhook_id, failing_since, is_active in sorted(rows):
        if is_active and now - failing_since >= disable_after_s:
            await set_webhook_active(conn, webhook_id, False, now)
            disabled.append(webhook_id)
    return disabled


_RECOVER = (
    "UPDATE deliveries d SET attempts = v.attempts, cycle_base = v.cycle_base,"
    " state = v.state, next_attempt_at = v.next_at, finished_at = v.finished_at,"
    " last_error = v.error, updated_at = $1, lease_node = NULL, lease_until = NULL,"
    " lease_token = NULL"
    " FROM unnest($2::bigint[], $3::int[], $4::int[], $5::text[], $6::float8[], $7::float8[],"
    " $8::text[]) AS v(id, attempts, cycle_base, state, next_at, finished_at, error)"
    f" WHERE d.id = v.id AND d.state = '{State.PROCESSING}'"
)


async def recover(
    conn: asyncpg.Connection, now: float, node_id: str, *, own: bool
) -> tuple[int, list[DueItem]]:
    """Return leased deliveries to the queue as `transition(..., Interrupted(), ...)` decides.

    `own`: this node's leases (startup, shutdown) and every expired one; else only the
    expired ones (the heartbeat's reclaim). A lease being recorded right now is skipped
    (SKIP LOCKED): its outcome is about to land. Returns how many, and those now due.
    """
    where = "d.lease_until IS NULL OR d.lease_until < $1"
    if own:
        where += " OR d.lease_node = $2"
    rows = await conn.fetch(
        "SELECT d.id, d.attempts, d.cycle_base, d.last_error, d.finished_at, w.is_active,"
        " d.session_id, d.event_type, d.webhook_id FROM deliveries d"
        " LEFT JOIN webhooks w ON w.id = d.webhook_id"
        f" WHERE d.state = '{State.PROCESSING}' AND ({where})"
        " ORDER BY d.id FOR UPDATE OF d SKIP LOCKED",
        *((now, node_id) if own else (now,)),
    )
    cols: list[list[Any]] = [[] for _ in range(7)]
    due: list[DueItem] = []
    stats = StatsDelta()
    for delivery_id, attempts, base, error, finished, active, session, event, hook in rows:
        delivery = Delivery(attempts, base, State.PROCESSING, error, finished)
        t = transition(delivery, Interrupted(), webhook_state(active), now)
        update = (
            delivery_id,
            t.attempts,
            t.cycle_base,
            t.state.value,
            t.next_attempt_at,
            t.finished_at,
            t.error,
        )
        for col, value in zip(cols, update, strict=True):
            col.append(value)
        if t.stats is not None:
            stats.add(session, event, t.stats, now)
        if t.next_attempt_at is not None:
            due.append(DueItem(t.next_attempt_at, delivery_id, hook))
    if cols[0]:
        await conn.execute(_RECOVER, now, *cols)
    await stats.apply(conn, node_id)
    return len(rows), due
