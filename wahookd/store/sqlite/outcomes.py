"""Outcomes: attempts recorded and their deliveries moved on; auto-disable; crash recovery.

`record` and `recover` (with `history.retry_failed`, the three places a delivery
changes state after its claim) decide nothing themselves: they read what
`transition()` (wahookd/delivery/transition.py) needs, call it, and store what it
returns, a few statements per batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import zip_longest

from ...delivery.transition import (
    WEBHOOK_GONE,
    Delivery,
    Interrupted,
    Recorded,
    WebhookState,
    transition,
)
from ...models import DueItem, Outcome, State
from . import ordering
from .batching import IN_CHUNK, insert_rows, padded_in, update_rows
from .rows import webhook_state
from .stats import StatsDelta
from .webhooks import set_parked, set_webhook_active

__all__ = ["FAILING_GAP_S", "WEBHOOK_GONE", "record", "recover"]

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


def record(
    conn: sqlite3.Connection,
    outcomes: Sequence[Outcome],
    now: float,
    disable_after_s: float | None = None,
    woken: list[DueItem] | None = None,
) -> list[int]:
    """Log attempts and move their deliveries on as `transition()` decides.

    For each outcome whose delivery is still `processing`: `transition(Delivery.of
    (claimed), Recorded.of(outcome), its webhook as it is now, now)` gives the row's
    state, next_attempt_at, finished_at and last_error, and the session's stats
    change. One not in flight any more (cleared, or recorded already) is only
    logged; its webhook still goes off when the transition says so (a 410 Gone).

    A delivery with an ordering key that finished (delivered or failed) wakes its
    key's next delivery (ordering.py), appended to `woken`.

    Returns the webhooks this batch turned inactive because nothing was delivered
    to them for `disable_after_s` while attempts kept failing (auto-disable).
    A few statements per batch, not per outcome: a batch is every attempt that
    ended while the previous commit ran.
    """
    attempt_rows = []
    updates = []
    gone: set[int] = set()
    finished_keys: list[ordering.Key] = []
    processing, webhooks = _lookup(
        conn, [o.claimed.id for o in outcomes], list({o.claimed.webhook_id: 0 for o in outcomes})
    )
    stats = StatsDelta()
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
        t = transition(Delivery.of(c), Recorded.of(o), webhooks.get(c.webhook_id), now)
        if t.disables_webhook:
            gone.add(c.webhook_id)
        if c.id not in processing:
            continue  # no longer in flight (cleared, or recorded already): only logged
        updates.append(
            (t.state.value, t.next_attempt_at, t.finished_at, now, r.status_code, t.error, c.id)
        )
        if t.stats is not None:
            stats.add(c.session_id, c.event_type, t.stats, now, r.duration_ms)
        if c.order_key is not None and t.finished_at is not None:
            finished_keys.append((c.webhook_id, c.order_key))
    update_rows(conn, _UPDATE_SQL, updates)
    for webhook_id in gone:
        # after the updates, so this batch's retries to it are parked as well
        conn.execute(
            "UPDATE webhooks SET is_active = 0, updated_at = ? WHERE id = ?", (now, webhook_id)
        )
        set_parked(conn, webhook_id, parked=True, now=now)
    if finished_keys:  # after a 410's parking: a head behind an inactive webhook stays parked
        next_up = ordering.wake_heads(conn, finished_keys, now)
        if woken is not None:
            woken += next_up
    insert_rows(
        conn,
        "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms,"
        " status_code, outcome, error, response_body)",
        attempt_rows,
    )
    # one upsert per (session, event type) of the batch, not one per finished delivery
    stats.apply(conn)
    return _track_failing(conn, outcomes, now, disable_after_s)


def _lookup(
    conn: sqlite3.Connection, ids: Sequence[int], webhook_ids: Sequence[int]
) -> tuple[set[int], dict[int, WebhookState | None]]:
    """Those of ids whose deliveries are `processing` (in flight), and the webhooks' states.

    A deleted webhook is absent from the map (`.get` gives None). One statement and
    one row per 500 ids (group_concat): each row fetched is a GIL round trip. Both
    lists are padded to a power of two, so few statements serve every batch.
    """
    found: set[int] = set()
    states: dict[int, WebhookState | None] = {}
    chunks = zip_longest(
        [ids[lo : lo + IN_CHUNK] for lo in range(0, len(ids), IN_CHUNK)],
        [webhook_ids[lo : lo + IN_CHUNK] for lo in range(0, len(webhook_ids), IN_CHUNK)],
        fillvalue=(),
    )
    for chunk, hooks in chunks:
        id_marks, id_params = padded_in(chunk) if chunk else ("", [])
        hook_marks, hook_params = padded_in(hooks) if hooks else ("", [])
        (joined, active) = conn.execute(
            "SELECT (SELECT group_concat(id) FROM deliveries"
            f" WHERE id IN ({id_marks}) AND state = '{State.PROCESSING}'),"
            " (SELECT group_concat(id || ':' || is_active) FROM webhooks"
            f" WHERE id IN ({hook_marks}))",
            [*id_params, *hook_params],
        ).fetchone()
        if joined:
            found.update(int(i) for i in joined.split(","))
        if active:
            for pair in active.split(","):
                webhook_id, _, is_active = pair.partition(":")
                states[int(webhook_id)] = webhook_state(int(is_active))
    return found, states


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
    # one statement for every webhook the batch delivered to (padded to a power of two,
    # so few statements serve every batch), not one per webhook
    hooks = sorted(succeeded)
    for lo in range(0, len(hooks), IN_CHUNK):
        marks, params = padded_in(hooks[lo : lo + IN_CHUNK])
        conn.execute(
            "UPDATE webhooks SET failing_since = NULL, last_failure_at = NULL"
            f" WHERE id IN ({marks}) AND failing_since IS NOT NULL",
            params,
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


_RECOVER_SQL = (
    "UPDATE deliveries SET attempts = v.column1, cycle_base = v.column2, state = v.column3,"
    " next_attempt_at = v.column4, finished_at = v.column5, last_error = v.column6,"
    " updated_at = v.column7 FROM (VALUES {rows}) AS v"
    f" WHERE deliveries.id = v.column8 AND deliveries.state = '{State.PROCESSING}'"
)


def recover(conn: sqlite3.Connection, now: float) -> int:
    """Return deliveries left `processing` by a crash to the queue; how many.

    Each one as `transition(..., Interrupted(), its webhook, now)` decides: the
    interrupted attempt is made again with the same number (attempts - 1), due now,
    parked behind an inactive webhook, failed when the webhook was deleted. Read and
    written back in the caller's one transaction, with one batched update.
    """
    updates = []
    stats = StatsDelta()
    for (
        delivery_id,
        attempts,
        cycle_base,
        last_error,
        finished_at,
        active,
        session,
        event,
    ) in conn.execute(
        "SELECT d.id, d.attempts, d.cycle_base, d.last_error, d.finished_at, w.is_active,"
        " d.session_id, d.event_type FROM deliveries d"
        f" LEFT JOIN webhooks w ON w.id = d.webhook_id WHERE d.state = '{State.PROCESSING}'"
    ).fetchall():
        delivery = Delivery(attempts, cycle_base, State.PROCESSING, last_error, finished_at)
        t = transition(delivery, Interrupted(), webhook_state(active), now)
        updates.append(
            (
                t.attempts,
                t.cycle_base,
                t.state.value,
                t.next_attempt_at,
                t.finished_at,
                t.error,
                now,
                delivery_id,
            )
        )
        if t.stats is not None:
            stats.add(session, event, t.stats, now)
    update_rows(conn, _RECOVER_SQL, updates)
    stats.apply(conn)
    return len(updates)
