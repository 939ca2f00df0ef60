"""The delivery log's history: listing deliveries with their attempts, manual retries
of failed ones, and retention (pruning what is finished and old).

`retry_failed` is one of the three places a delivery changes state after its claim
(with `outcomes.record` and `outcomes.recover`); `transition()` decides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from ...delivery.transition import Delivery, ManualRetry, NotAllowed, transition
from ...models import DueItem, State
from ..columns import deliveries_of
from ..types import DeliveryRow, RetryResult
from . import ordering
from .outcomes import webhook_state
from .stats import StatsDelta

_DELIVERY_SELECT = (
    "SELECT d.id, d.uid, e.uid AS event_uid, d.session_id, d.event_type, d.state, d.attempts,"
    " d.created_at, d.updated_at, d.next_attempt_at, d.finished_at, d.last_status,"
    " d.last_error, d.webhook_id FROM deliveries d JOIN events e ON e.id = d.event_id"
)


async def list_deliveries(
    conn: asyncpg.Connection,
    session_id: str,
    state: State | None,
    event_type: str | None,
    before_id: int | None,
    limit: int,
    webhook_id: int | None = None,
) -> list[DeliveryRow]:
    """A session's deliveries newest first, with their attempts; `before_id` pages on."""
    where = ["d.session_id = $1"]
    params: list[Any] = [session_id]
    for column, value in (
        ("d.webhook_id", webhook_id),
        ("d.state", None if state is None else state.value),
        ("d.event_type", event_type),
    ):
        if value is not None:
            params.append(value)
            where.append(f"{column} = ${len(params)}")
    if before_id is not None:
        params.append(before_id)
        where.append(f"d.id < ${len(params)}")
    params.append(limit)
    rows = await conn.fetch(
        f"{_DELIVERY_SELECT} WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT ${len(params)}",
        *params,
    )
    return await _with_attempts(conn, rows)


async def get_delivery(
    conn: asyncpg.Connection, session_id: str, uid: str
) -> tuple[DeliveryRow, bytes] | None:
    """One delivery of a session by its id (`dlv_...`), with attempts and the event body."""
    row = await conn.fetchrow(
        f"{_DELIVERY_SELECT.replace(' FROM', ', e.body FROM', 1)}"
        " WHERE d.uid = $1 AND d.session_id = $2",
        uid,
        session_id,
    )
    if row is None:
        return None
    return (await _with_attempts(conn, [row]))[0], bytes(row["body"])


async def _with_attempts(conn: asyncpg.Connection, rows: Sequence[Any]) -> list[DeliveryRow]:
    """DeliveryRows from rows of `_DELIVERY_SELECT`, each with its attempts."""
    attempts: list[Any] = []
    if rows:
        attempts = await conn.fetch(
            "SELECT delivery_id, attempt, started_at, duration_ms, status_code, outcome,"
            " error, response_body FROM attempts WHERE delivery_id = ANY($1::bigint[])"
            " ORDER BY delivery_id, id",
            [row["id"] for row in rows],
        )
    return deliveries_of(rows, attempts)


_RETRY = (
    "UPDATE deliveries d SET state = v.state, cycle_base = v.cycle_base,"
    " next_attempt_at = v.next_at, finished_at = v.finished_at, last_error = v.error,"
    " updated_at = $1"
    " FROM unnest($2::bigint[], $3::text[], $4::int[], $5::float8[], $6::float8[], $7::text[])"
    " AS v(id, state, cycle_base, next_at, finished_at, error)"
    f" WHERE d.id = v.id AND d.state = '{State.FAILED}'"
)


async def retry_failed(
    conn: asyncpg.Connection,
    session_id: str,
    now: float,
    node_id: str,
    uid: str | None = None,
    finished_since: float | None = None,
    webhook_id: int | None = None,
) -> RetryResult:
    """Put failed deliveries back in the queue for a new run of the retry ladder.

    Each as `transition(..., ManualRetry(), its webhook, now)` decides; the rows are
    locked first, so two nodes retrying the same deliveries at once retry each once,
    then their webhooks (`FOR SHARE`: one re-enabled meanwhile by another node is seen
    enabled, or its wake-up sees these rows). An ordered one becomes its key's head
    again, under the key's lock (`ordering.settle_keys`).
    """
    where = f"d.session_id = $1 AND d.state = '{State.FAILED}'"
    params: list[Any] = [session_id]
    if uid is not None:
        params.append(uid)
        where += f" AND d.uid = ${len(params)}"
    if finished_since is not None:
        params.append(finished_since)
        where += f" AND d.finished_at >= ${len(params)}"
    if webhook_id is not None:
        params.append(webhook_id)
        where += f" AND d.webhook_id = ${len(params)}"
    locked = await conn.fetch(
        f"SELECT d.id, d.webhook_id FROM deliveries d WHERE {where} ORDER BY d.id FOR UPDATE",
        *params,
    )
    hooks = await conn.fetch(
        "SELECT id, is_active FROM webhooks WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE",
        sorted({r[1] for r in locked}),
    )
    active = {r[0]: r[1] for r in hooks}
    rows = await conn.fetch(
        "SELECT id, webhook_id, event_type, attempts, cycle_base, last_error, finished_at,"
        " order_key FROM deliveries WHERE id = ANY($1::bigint[]) ORDER BY id",
        [r[0] for r in locked],
    )
    due: list[DueItem] = []
    parked = 0  # behind an inactive webhook
    keys: set[ordering.Key] = set()
    cols: list[list[Any]] = [[] for _ in range(6)]
    stats = StatsDelta()
    for delivery_id, hook, event_type, attempts, base, error, finished, key in rows:
        delivery = Delivery(attempts, base, State.FAILED, error, finished)
        try:
            t = transition(delivery, ManualRetry(), webhook_state(active.get(hook)), now)
        except NotAllowed:
            continue  # its webhook was deleted: nothing to retry onto
        update = (
            delivery_id,
            t.state.value,
            t.cycle_base,
            t.next_attempt_at,
            t.finished_at,
            t.error,
        )
        for col, value in zip(cols, update, strict=True):
            col.append(value)
        if t.stats is not None:
            stats.add(session_id, event_type, t.stats, now)
        if t.next_attempt_at is not None:
            due.append(DueItem(t.next_attempt_at, delivery_id, hook))
        else:
            parked += 1
        if key is not None:
            keys.add((hook, key))
    if cols[0]:
        await conn.execute(_RETRY, now, *cols)
    await stats.apply(conn, node_id)
    if keys:
        await ordering.lock_keys(conn, keys)
        held, woken = await ordering.settle_keys(conn, keys, now)
        due = [item for item in due if item.id not in held] + woken
    return RetryResult(due, retried=len(cols[0]), parked=parked)


_FINISHED = [State.DELIVERED.value, State.FAILED.value]


async def prune_finished(
    conn: asyncpg.Connection, before: float, limit: int
) -> tuple[int, list[int]]:
    """Delete up to `limit` deliveries finished before `before`, with their attempts."""
    rows = await conn.fetch(
        "WITH old AS (SELECT id FROM deliveries WHERE finished_at < $1"
        " AND state = ANY($2::text[]) ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED),"
        " gone AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM old)"
        " RETURNING id, event_id),"
        " attempts_gone AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone))"
        " SELECT id, event_id FROM gone",
        before,
        _FINISHED,
        limit,
    )
    return len(rows), sorted({r[1] for r in rows})


async def prune_events(
    conn: asyncpg.Connection,
    before: float,
    event_ids: Sequence[int],
    after_id: int,
    limit: int,
) -> tuple[int, int]:
    """Delete events received before `before` that no delivery refers to any more.

    Checks `event_ids`, then sweeps up to `limit` events by id after `after_id`;
    returns (deleted, last id swept). The sweep stops at the first event too young.
    """
    candidates = list(event_ids)
    last = after_id
    if limit:
        for event_id, created_at in await conn.fetch(
            "SELECT id, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            after_id,
            limit,
        ):
            if created_at >= before:
                break
            candidates.append(event_id)
            last = event_id
    if not candidates:
        return 0, last
    deleted = await conn.fetchval(
        "WITH gone AS (DELETE FROM events e WHERE e.id = ANY($1::bigint[]) AND e.created_at < $2"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) RETURNING 1)"
        " SELECT count(*) FROM gone",
        sorted(set(candidates)),
        before,
    )
    return int(deleted), last
