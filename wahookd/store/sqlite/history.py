"""The delivery log's history: listing deliveries with their attempts, manual
retries of failed ones, and retention (pruning what is finished and old).

`retry_failed` is one of the three places a delivery changes state after its
claim (with `outcomes.record` and `outcomes.recover`); `transition()` decides it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ...delivery.transition import Delivery, ManualRetry, NotAllowed, transition
from ...models import DueItem, State
from ..columns import deliveries_of
from ..types import DeliveryRow, RetryResult
from . import ordering
from .batching import update_rows
from .rows import named, webhook_state
from .stats import StatsDelta

# ---------------------------------------------------------------- delivery log
_DELIVERY_SELECT = (
    "SELECT d.id, d.uid, e.uid AS event_uid, d.session_id, d.event_type, d.state, d.attempts,"
    " d.created_at, d.updated_at, d.next_attempt_at, d.finished_at, d.last_status,"
    " d.last_error, d.webhook_id FROM deliveries d JOIN events e ON e.id = d.event_id"
)


def list_deliveries(
    conn: sqlite3.Connection,
    session_id: str,
    state: State | None,
    event_type: str | None,
    before_id: int | None,
    limit: int,
    webhook_id: int | None = None,
) -> list[DeliveryRow]:
    """A session's deliveries newest first, with their attempts; `before_id` pages on.

    With `webhook_id`, only those to that webhook (`?webhookId=`, SPEC §8), found
    through the index deliveries_webhook.
    """
    where = ["d.session_id = ?"]
    params: list[Any] = [session_id]
    if webhook_id is not None:
        where.insert(0, "d.webhook_id = ?")
        params.insert(0, webhook_id)
    if state is not None:
        where.append("d.state = ?")
        params.append(state.value)
    if event_type is not None:
        where.append("d.event_type = ?")
        params.append(event_type)
    if before_id is not None:
        where.append("d.id < ?")
        params.append(before_id)
    rows = named(
        conn,
        f"{_DELIVERY_SELECT} WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return _with_attempts(conn, rows)


def get_delivery(
    conn: sqlite3.Connection, session_id: str, uid: str
) -> tuple[DeliveryRow, bytes] | None:
    """One delivery of a session by its id (`dlv_...`), with attempts and the event body."""
    row = named(
        conn, f"{_DELIVERY_SELECT} WHERE d.uid = ? AND d.session_id = ?", (uid, session_id)
    ).fetchone()
    if row is None:
        return None
    (body,) = conn.execute(
        "SELECT e.body FROM events e JOIN deliveries d ON d.event_id = e.id WHERE d.id = ?",
        (row["id"],),
    ).fetchone()
    return _with_attempts(conn, [row])[0], bytes(body)


def _with_attempts(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[DeliveryRow]:
    """DeliveryRows from rows of `_DELIVERY_SELECT`, each with its attempts, by column name."""
    attempts: list[sqlite3.Row] = []
    if rows:
        marks = ",".join("?" * len(rows))
        attempts = named(
            conn,
            "SELECT delivery_id, attempt, started_at, duration_ms, status_code, outcome,"
            f" error, response_body FROM attempts WHERE delivery_id IN ({marks})"
            " ORDER BY delivery_id, id",
            [row["id"] for row in rows],
        ).fetchall()
    return deliveries_of(rows, attempts)


_RETRY_SQL = (
    "UPDATE deliveries SET state = v.column1, cycle_base = v.column2,"
    " next_attempt_at = v.column3, finished_at = v.column4, last_error = v.column5,"
    " updated_at = v.column6 FROM (VALUES {rows}) AS v"
    f" WHERE deliveries.id = v.column7 AND deliveries.state = '{State.FAILED}'"
)


def retry_failed(
    conn: sqlite3.Connection,
    session_id: str,
    now: float,
    uid: str | None = None,
    finished_since: float | None = None,
    webhook_id: int | None = None,
) -> RetryResult:
    """Put failed deliveries back in the queue for a new run of the retry ladder.

    One delivery by `uid`, or all of the session's failed ones (finished at or after
    `finished_since` when given), each as `transition(..., ManualRetry(), its
    webhook, now)` decides: due now, or parked behind an inactive webhook; counted
    as failed no longer in the stats until it ends again. One whose webhook was
    deleted is skipped (`NotAllowed`). One batched update, not one per delivery.
    An ordered one becomes its key's head again; it waits (held) while another
    delivery of its key is in flight, and the key's later ones wait behind it
    (`ordering.settle_keys`).
    """
    where = f"d.session_id = ? AND d.state = '{State.FAILED}'"
    params: list[Any] = [session_id]
    if uid is not None:
        where += " AND d.uid = ?"
        params.append(uid)
    if finished_since is not None:
        where += " AND d.finished_at >= ?"
        params.append(finished_since)
    if webhook_id is not None:
        where += " AND d.webhook_id = ?"
        params.append(webhook_id)
    rows = conn.execute(
        "SELECT d.id, d.webhook_id, d.event_type, d.attempts, d.cycle_base, d.last_error,"
        " d.finished_at, w.is_active, d.order_key FROM deliveries d"
        f" LEFT JOIN webhooks w ON w.id = d.webhook_id WHERE {where}",
        params,
    ).fetchall()
    due: list[DueItem] = []
    parked = 0  # behind an inactive webhook
    updates = []
    stats = StatsDelta()
    keys: set[ordering.Key] = set()
    for delivery_id, webhook_id, event_type, attempts, base, error, finished, active, key in rows:
        delivery = Delivery(attempts, base, State.FAILED, error, finished)
        try:
            t = transition(delivery, ManualRetry(), webhook_state(active), now)
        except NotAllowed:
            continue  # its webhook was deleted: nothing to retry onto
        updates.append(
            (
                t.state.value,
                t.cycle_base,
                t.next_attempt_at,
                t.finished_at,
                t.error,
                now,
                delivery_id,
            )
        )
        if t.stats is not None:
            stats.add(session_id, event_type, t.stats, now)
        if t.next_attempt_at is not None:
            due.append(DueItem(t.next_attempt_at, delivery_id, webhook_id))
        else:
            parked += 1
        if key is not None:
            keys.add((webhook_id, key))
    update_rows(conn, _RETRY_SQL, updates)
    stats.apply(conn)
    if keys:
        held, woken = ordering.settle_keys(conn, keys, now)
        due = [item for item in due if item.id not in held] + woken
    return RetryResult(due, retried=len(updates), parked=parked)


# ------------------------------------------------------------------- retention
_FINISHED = f"('{State.DELIVERED}', '{State.FAILED}')"


def prune_finished(conn: sqlite3.Connection, before: float, limit: int) -> tuple[int, list[int]]:
    """Delete up to `limit` deliveries finished before `before`, with their attempts.

    Returns how many went and the ids of their events, which `prune_events` may
    delete once no delivery needs them. Stats live in session_stats: untouched.
    """
    # the partial index on finished_at, not the state index plus a sort of every row
    rows = conn.execute(
        "SELECT id, event_id FROM deliveries INDEXED BY deliveries_finished"
        f" WHERE finished_at < ? AND state IN {_FINISHED} ORDER BY finished_at LIMIT ?",
        (before, limit),
    ).fetchall()
    if not rows:
        return 0, []
    ids = [(delivery_id,) for delivery_id, _ in rows]
    conn.executemany("DELETE FROM attempts WHERE delivery_id = ?", ids)
    conn.executemany("DELETE FROM deliveries WHERE id = ?", ids)
    return len(rows), sorted({event_id for _, event_id in rows})


def prune_events(
    conn: sqlite3.Connection,
    before: float,
    event_ids: Iterable[int] = (),
    after_id: int = 0,
    limit: int = 0,
) -> tuple[int, int]:
    """Delete events received before `before` that no delivery refers to any more.

    Checks `event_ids` (the events of just-pruned deliveries), then sweeps up to
    `limit` events by id after `after_id`, which catches events that never had a
    delivery or whose deliveries a queue clear removed. Returns (deleted, last id
    swept); the caller passes the last id back to resume the sweep. Ids grow with
    time, so the sweep stops at the first event that is too young.
    """
    candidates = list(event_ids)
    last = after_id
    if limit:
        for event_id, created_at in conn.execute(
            "SELECT id, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall():
            if created_at >= before:
                break
            candidates.append(event_id)
            last = event_id
    deleted = 0
    for event_id in candidates:
        cur = conn.execute(
            "DELETE FROM events WHERE id = ? AND created_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?)",
            (event_id, before, event_id),
        )
        deleted += cur.rowcount
    return deleted, last
