"""Outcomes: attempts recorded and their deliveries moved on; auto-disable; crash recovery.

`record` and `recover` decide delivery states in SQL (with `history.retry_failed`,
the three places a delivery changes state after its claim).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...models import Outcome, State
from .batching import IN_CHUNK, insert_rows, update_rows
from .webhooks import set_parked, set_webhook_active

WEBHOOK_GONE = "its webhook was deleted"
# auto-disable: failures further apart than this do not make one failing period
FAILING_GAP_S = 24 * 3600.0

# the columns record() sets, in the order of its update rows (then the delivery id);
# the padding rows (id NULL) match no delivery
_UPDATE_SQL = (
    "UPDATE deliveries SET state = v.column1, next_attempt_at = v.column2,"
    " finished_at = v.column3, updated_at = v.column4, last_status = v.column5,"
    " last_error = v.column6 FROM (VALUES {rows}) AS v"
    f" WHERE deliveries.id = v.column7 AND deliveries.state = '{State.PROCESSING}'"
)

_ACTIVE = "(SELECT is_active FROM webhooks w WHERE w.id = deliveries.webhook_id)"


def record(
    conn: sqlite3.Connection,
    outcomes: Sequence[Outcome],
    now: float,
    disable_after_s: float | None = None,
) -> list[int]:
    """Log attempts and move their deliveries on; count finished ones in the stats.

    Returns the webhooks this batch turned inactive because nothing was delivered
    to them for `disable_after_s` while attempts kept failing (auto-disable).
    A few statements per batch, not per outcome: a batch is every attempt that
    ended while the previous commit ran.
    """
    attempt_rows = []
    updates = []
    active: dict[int, bool | None] = {}
    gone: set[int] = set()
    processing = _processing(conn, [o.claimed.id for o in outcomes])
    # (session, event type) -> [successful, failed, success_ms_total, last_delivery_at]
    stats: dict[tuple[str, str], list[Any]] = {}
    for o in outcomes:
        c, r = o.claimed, o.result
        attempt_rows.append(
            (
                c.id,
                c.attempt,
                o.started_at,
                r.duration_ms,
                r.status_code,
                o.kind,
                r.error,
                r.response_body,
            )
        )
        if o.kind == "gone":
            gone.add(c.webhook_id)
        if c.id not in processing:
            continue  # no longer in flight (cleared, or recorded already): only logged
        error = r.error
        status = _webhook_status(conn, c.webhook_id, active) if o.kind == "retry" else True
        if status is None:
            # deleted while the attempt ran: nothing left to retry with
            state, next_at, finished = State.FAILED, None, now
            error = f"{r.error}; then its webhook was deleted" if r.error else WEBHOOK_GONE
        elif not status:
            # the webhook was turned off meanwhile (410, auto-disable, PUT): park it
            state, next_at, finished = State.PENDING, None, None
        elif o.kind == "retry":
            state, next_at, finished = State.RETRYING, o.next_attempt_at, None
        elif o.kind == "delivered":
            state, next_at, finished = State.DELIVERED, None, now
        else:
            state, next_at, finished = State.FAILED, None, now
        updates.append((state.value, next_at, finished, now, r.status_code, error, c.id))
        if finished is not None:
            row = stats.get((c.session_id, c.event_type))
            if row is None:
                row = stats[(c.session_id, c.event_type)] = [0, 0, 0, None]
            if state == State.DELIVERED:
                row[0] += 1
                row[2] += r.duration_ms
                row[3] = now
            else:
                row[1] += 1
    update_rows(conn, _UPDATE_SQL, updates)
    for webhook_id in gone:
        # after the updates, so this batch's retries to it are parked as well
        conn.execute(
            "UPDATE webhooks SET is_active = 0, updated_at = ? WHERE id = ?", (now, webhook_id)
        )
        set_parked(conn, webhook_id, parked=True, now=now)
    insert_rows(
        conn,
        "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms,"
        " status_code, outcome, error, response_body)",
        attempt_rows,
    )
    # one upsert per (session, event type) of the batch, not one per finished delivery
    conn.executemany(
        "INSERT INTO session_stats (session_id, event_type, successful, failed,"
        " success_ms_total, last_delivery_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET successful = successful + excluded.successful,"
        " failed = failed + excluded.failed,"
        " success_ms_total = success_ms_total + excluded.success_ms_total,"
        " last_delivery_at = MAX(COALESCE(last_delivery_at, 0),"
        " COALESCE(excluded.last_delivery_at, 0))",
        [(session, event, *counts) for (session, event), counts in stats.items()],
    )
    return _track_failing(conn, outcomes, now, disable_after_s)


def _processing(conn: sqlite3.Connection, ids: Sequence[int]) -> set[int]:
    """Those of ids whose deliveries are `processing` (in flight).

    One row per query (group_concat): each row fetched is a GIL round trip.
    """
    found: set[int] = set()
    for lo in range(0, len(ids), IN_CHUNK):
        chunk = ids[lo : lo + IN_CHUNK]
        (joined,) = conn.execute(
            f"SELECT group_concat(id) FROM deliveries WHERE id IN ({','.join('?' * len(chunk))})"
            f" AND state = '{State.PROCESSING}'",
            chunk,
        ).fetchone()
        if joined:
            found.update(int(i) for i in joined.split(","))
    return found


def _webhook_status(
    conn: sqlite3.Connection, webhook_id: int, cache: dict[int, bool | None]
) -> bool | None:
    """Whether the webhook is active; None when it no longer exists."""
    if webhook_id not in cache:
        row = conn.execute("SELECT is_active FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
        cache[webhook_id] = None if row is None else bool(row[0])
    return cache[webhook_id]


def _track_failing(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], now: float, disable_after_s: float | None
) -> list[int]:
    """Keep webhooks.failing_since (first failure since the last success); auto-disable."""
    succeeded: set[int] = set()
    failing: set[int] = set()
    for o in outcomes:
        if o.kind == "delivered":
            succeeded.add(o.claimed.webhook_id)
        elif o.kind in ("retry", "failed"):
            failing.add(o.claimed.webhook_id)
    for webhook_id in succeeded:
        conn.execute(
            "UPDATE webhooks SET failing_since = NULL, last_failure_at = NULL"
            " WHERE id = ? AND failing_since IS NOT NULL",
            (webhook_id,),
        )
    disabled = []
    for webhook_id in failing - succeeded:
        # a failure after a quiet spell starts a new failing period: an idle webhook
        # that failed once long ago is not "failing for days"
        row = conn.execute(
            "UPDATE webhooks SET failing_since = CASE WHEN failing_since IS NULL"
            " OR last_failure_at IS NULL OR ? - last_failure_at > ? THEN ?"
            " ELSE failing_since END, last_failure_at = ? WHERE id = ?"
            " RETURNING failing_since, is_active",
            (now, FAILING_GAP_S, now, now, webhook_id),
        ).fetchone()
        if row is None or disable_after_s is None:
            continue
        failing_since, is_active = row
        if not is_active:
            continue
        if now - failing_since >= disable_after_s:
            set_webhook_active(conn, webhook_id, False, now)
            disabled.append(webhook_id)
    return disabled


def recover(conn: sqlite3.Connection, now: float) -> int:
    """Return deliveries left `processing` by a crash to the queue; how many.

    The interrupted attempt is made again with the same number (attempts - 1): it
    never got an answer. Webhook active: due now, `retrying` when it was not the
    first attempt, else `pending`. Inactive: parked `pending` (next_attempt_at
    NULL). Gone: `failed`, finished now.
    """
    cur = conn.execute(
        "UPDATE deliveries SET attempts = attempts - 1,"
        # parked (inactive webhook) counts as pending (SPEC §6); a deleted one fails it
        f" state = CASE WHEN {_ACTIVE} IS NULL THEN '{State.FAILED}'"
        f" WHEN {_ACTIVE} AND attempts > 1 THEN '{State.RETRYING}'"
        f" ELSE '{State.PENDING}' END,"
        f" finished_at = CASE WHEN {_ACTIVE} IS NULL THEN ? ELSE finished_at END,"
        f" last_error = CASE WHEN {_ACTIVE} IS NULL THEN ? ELSE last_error END,"
        f" next_attempt_at = CASE WHEN {_ACTIVE} THEN ? ELSE NULL END, updated_at = ?"
        f" WHERE state = '{State.PROCESSING}'",
        (now, WEBHOOK_GONE, now, now),
    )
    return cur.rowcount
