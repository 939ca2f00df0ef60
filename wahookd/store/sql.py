"""The delivery log's SQL: ingest, claims, outcomes, webhooks, queue and stats.

The schema and its migrations are in `schema.py`; listing, manual retries and
pruning in `history.py`.

Each function here is plain and synchronous and takes the `sqlite3.Connection`
first: the `Store` facade in `__init__.py` runs it on aiosqlite's worker thread,
writes inside a group-committed transaction (`apply_batch`), reads on the
reader connection. Nothing here awaits, so one operation is one thread hop.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec

from ..models import CLEARABLE_STATES, Claimed, DueItem, Outcome, State, Webhook
from .types import (
    IDEMPOTENCY_WINDOW_S,
    IngestItem,
    IngestResult,
    SessionStats,
    new_uids,
)

WEBHOOK_GONE = "its webhook was deleted"
# auto-disable: failures further apart than this do not make one failing period
FAILING_GAP_S = 24 * 3600.0

# after a secret changes, deliveries are signed with the previous one too for this long
SECRET_OVERLAP_S = 24 * 3600.0


_QUEUED = f"('{State.PENDING}', '{State.RETRYING}')"
_CLEARABLE = "(" + ", ".join(f"'{s}'" for s in CLEARABLE_STATES) + ")"
_WEBHOOK_SELECT = (
    "SELECT id, kind, session_id, url, events, secret, headers, is_active, created_at,"
    " updated_at, static_key, previous_secret, previous_secret_until FROM webhooks"
)


@dataclass(slots=True)
class Ids:
    """The next free event and delivery row ids; only the writer thread takes from it."""

    next_event: int
    next_delivery: int

    def take_event(self) -> int:
        """Hand out the next event id."""
        event_id = self.next_event
        self.next_event += 1
        return event_id

    def take_delivery(self) -> int:
        """Hand out the next delivery id."""
        delivery_id = self.next_delivery
        self.next_delivery += 1
        return delivery_id


# ------------------------------------------------------------ connection setup
def max_ids(conn: sqlite3.Connection) -> tuple[int, int]:
    """The highest event and delivery ids in use (0 when none)."""
    (events,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
    (deliveries,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()
    return int(events), int(deliveries)


def ping(conn: sqlite3.Connection) -> None:
    """Raise unless the database answers a read."""
    conn.execute("SELECT 1").fetchone()


# ---------------------------------------------------------------- group commit
def is_storage_fault(exc: BaseException) -> bool:
    """True when exc means the database cannot take writes, not that one operation is wrong."""
    # OperationalError covers "database is locked", "disk I/O error" and
    # "database or disk is full"; DatabaseError covers a corrupt or vanished file.
    return isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError
    )


def apply_batch(
    conn: sqlite3.Connection, fns: Iterable[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run every operation in one transaction; one op's bug does not sink the others."""
    fns = list(fns)
    if len(fns) == 1:
        return [_apply_one(conn, fns[0])]
    results: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn in fns:
            conn.execute("SAVEPOINT op")
            try:
                value = fn(conn)
            except Exception as exc:
                if is_storage_fault(exc):
                    raise
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((False, exc))
            else:
                conn.execute("RELEASE op")
                results.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _apply_one(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]
) -> tuple[bool, Any]:
    """apply_batch for a lone operation (the usual case): no savepoint needed.

    Every statement is a GIL round trip for this thread, and two fewer per commit
    shorten each commit while the event loop is busy.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        value = fn(conn)
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if is_storage_fault(exc):
            raise
        return (False, exc)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return (True, value)


# ---------------------------------------------------------------------- ingest
def ingest(
    conn: sqlite3.Connection, ids: Ids, items: Sequence[IngestItem], now: float
) -> list[IngestResult]:
    """Insert events and their deliveries; duplicates (same session and id, 24 h) are skipped."""
    results: list[IngestResult] = []
    event_rows: list[tuple[Any, ...]] = []
    delivery_rows: list[tuple[Any, ...]] = []
    recent = _recent_events(conn, items, now - IDEMPOTENCY_WINDOW_S)
    seen: set[tuple[str, str]] = set()
    # ids drawn for the whole request at once: one clock reading, one urandom call
    event_uids = iter(new_uids("evt", len(items)))
    delivery_uids = iter(new_uids("dlv", sum(len(item.webhook_ids) for item in items)))
    pending = State.PENDING.value
    for item in items:
        ev = item.event
        client_id = ev.event_id
        if client_id is None:
            uid = next(event_uids)
        else:
            key = (ev.session_id, client_id)
            if key in seen or key in recent:
                results.append(IngestResult(client_id, True, ()))
                continue
            seen.add(key)
            uid = client_id
        event_id = ids.take_event()
        event_rows.append(
            (event_id, uid, client_id is not None, ev.session_id, ev.type, ev.body, now)
        )
        due: list[DueItem] = []
        for webhook_id in item.webhook_ids:
            delivery_id = ids.take_delivery()
            delivery_rows.append(
                (
                    delivery_id,
                    next(delivery_uids),
                    event_id,
                    webhook_id,
                    ev.session_id,
                    ev.type,
                    pending,
                    now,
                    now,
                    now,
                )
            )
            due.append(DueItem(now, delivery_id, webhook_id))
        results.append(IngestResult(uid, False, tuple(due)))
    _insert_rows(conn, "INSERT INTO events", event_rows)
    _insert_rows(
        conn,
        "INSERT INTO deliveries (id, uid, event_id, webhook_id, session_id, event_type,"
        " state, next_attempt_at, created_at, updated_at)",
        delivery_rows,
    )
    return results


# rows per multi-row statement at most: 64 deliveries bind 640 parameters
_ROWS_PER_STATEMENT = 64


def _padded_statements(
    conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]], sql: Callable[[int], str]
) -> None:
    """Run `sql(size)` once per 64 rows, its VALUES padded with NULL rows to `size`.

    One statement runs as one sqlite3_step, so the writer thread gives the GIL up and
    takes it back once per statement rather than once per row (executemany, which
    waits on the busy event loop every time). Sizes are powers of two, so a handful of
    statements serve every batch from the statement cache; the statements skip the
    NULL rows.
    """
    for lo in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[lo : lo + _ROWS_PER_STATEMENT]
        size = 1 << (len(chunk) - 1).bit_length()
        params = list(chain.from_iterable(chunk))
        params += [None] * (len(chunk[0]) * (size - len(chunk)))
        conn.execute(sql(size), params)


def _insert_rows(conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`insert` (INSERT INTO table [(columns)]) of rows whose first value is never NULL."""
    if rows:
        width = len(rows[0])
        _padded_statements(conn, rows, lambda size: _insert_sql(insert, width, size))


@functools.cache
def _insert_sql(insert: str, width: int, count: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return f"{insert} SELECT * FROM (VALUES {','.join([row] * count)}) WHERE column1 IS NOT NULL"


# event ids looked up per query; far below SQLite's limit on bound parameters
_LOOKUP_CHUNK = 500


def _recent_events(
    conn: sqlite3.Connection, items: Sequence[IngestItem], since: float
) -> set[tuple[str, str]]:
    """The (session, client id) pairs of these items already ingested after `since`."""
    by_session: dict[str, set[str]] = {}
    for item in items:
        if item.event.event_id is not None:
            by_session.setdefault(item.event.session_id, set()).add(item.event.event_id)
    found: set[tuple[str, str]] = set()
    for session_id, client_ids in by_session.items():
        wanted = sorted(client_ids)
        for lo in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[lo : lo + _LOOKUP_CHUNK]
            rows = conn.execute(
                "SELECT uid FROM events WHERE session_id = ? AND client_id = 1"
                f" AND uid IN ({','.join('?' * len(chunk))}) AND created_at > ?",
                (session_id, *chunk, since),
            )
            found.update((session_id, uid) for (uid,) in rows)
    return found


# ------------------------------------------------------------------ scheduling
def load_due(
    conn: sqlite3.Connection,
    after: tuple[float, int] | None,
    limit: int,
    exclude_webhooks: Collection[int],
) -> list[DueItem]:
    """The next `limit` queued deliveries after the key `after`, soonest first."""
    sql = "SELECT next_attempt_at, id, webhook_id FROM deliveries INDEXED BY deliveries_due"
    sql += " WHERE next_attempt_at IS NOT NULL"
    params: list[Any] = []
    if after is not None:
        sql += " AND (next_attempt_at, id) > (?, ?)"
        params += after
    if exclude_webhooks:
        sql += f" AND webhook_id NOT IN ({','.join('?' * len(exclude_webhooks))})"
        params += exclude_webhooks
    sql += " ORDER BY next_attempt_at, id LIMIT ?"
    params.append(limit)
    return [DueItem(*row) for row in conn.execute(sql, params)]


def load_webhook_due(conn: sqlite3.Connection, webhook_id: int, limit: int) -> list[DueItem]:
    """One webhook's soonest `limit` queued deliveries."""
    rows = conn.execute(
        "SELECT next_attempt_at, id, webhook_id FROM deliveries"
        " INDEXED BY deliveries_webhook_due"
        " WHERE webhook_id = ? AND next_attempt_at IS NOT NULL"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (webhook_id, limit),
    )
    return [DueItem(*row) for row in rows]


def claim(conn: sqlite3.Connection, ids: Sequence[int], now: float) -> list[Claimed]:
    """Move queued deliveries to `processing`; returns those still claimable, with bodies."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    # next_attempt_at IS NOT NULL: still queued and not parked, so a row deleted,
    # parked or already claimed since the scheduler saw it is skipped. Read as one
    # JSON row, then moved by one UPDATE (the writer holds the lock throughout):
    # UPDATE ... RETURNING would cost a GIL round trip per row.
    (found,) = conn.execute(
        "SELECT json_group_array(json_array(id, uid, webhook_id, session_id, event_type,"
        " attempts + 1, event_id, attempts + 1 - cycle_base)) FROM deliveries"
        f" WHERE id IN ({marks}) AND next_attempt_at IS NOT NULL",
        ids,
    ).fetchone()
    claimed: list[list[Any]] = msgspec.json.decode(found)
    if not claimed:
        return []
    conn.execute(
        f"UPDATE deliveries SET state = '{State.PROCESSING}', attempts = attempts + 1,"
        f" next_attempt_at = NULL, updated_at = ?"
        f" WHERE id IN ({','.join('?' * len(claimed))})",
        (now, *(row[0] for row in claimed)),
    )
    bodies = _bodies(conn, sorted({row[6] for row in claimed}))
    return [
        Claimed(id_, uid, webhook_id, session_id, event_type, attempt, bodies[event_id], cycle)
        for id_, uid, webhook_id, session_id, event_type, attempt, event_id, cycle in claimed
    ]


# bodies read as one joined row at most this large together; larger ones row by row
_JOINED_BODIES_MAX = 4 * 1024 * 1024


def _bodies(conn: sqlite3.Connection, event_ids: Sequence[int]) -> dict[int, bytes]:
    """The events' bodies, as one joined row per query when they are small together.

    Each row fetched is a round trip of the GIL between this thread and the event
    loop's, which costs far more than the hex under load. Large bodies (up to
    server.max_body each) come row by row, so the joined value stays small.
    """
    bodies: dict[int, bytes] = {}
    for lo in range(0, len(event_ids), _IN_CHUNK):
        chunk = event_ids[lo : lo + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        (total,) = conn.execute(
            f"SELECT sum(length(body)) FROM events WHERE id IN ({marks})", chunk
        ).fetchone()
        if (total or 0) > _JOINED_BODIES_MAX:
            rows = conn.execute(f"SELECT id, body FROM events WHERE id IN ({marks})", chunk)
            bodies.update(rows)
            continue
        (joined,) = conn.execute(
            f"SELECT group_concat(id || ':' || hex(body)) FROM events WHERE id IN ({marks})",
            chunk,
        ).fetchone()
        if not joined:
            continue
        for pair in joined.split(","):
            event_id, _, hexed = pair.partition(":")
            bodies[int(event_id)] = bytes.fromhex(hexed)
    return bodies


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
    _update_rows(conn, updates)
    for webhook_id in gone:
        # after the updates, so this batch's retries to it are parked as well
        conn.execute(
            "UPDATE webhooks SET is_active = 0, updated_at = ? WHERE id = ?", (now, webhook_id)
        )
        set_parked(conn, webhook_id, parked=True, now=now)
    _insert_rows(
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


# ids per `IN (...)` query; far below SQLite's limit on bound parameters
_IN_CHUNK = 500


def _processing(conn: sqlite3.Connection, ids: Sequence[int]) -> set[int]:
    """Those of ids whose deliveries are `processing` (in flight).

    One row per query (group_concat): each row fetched is a GIL round trip.
    """
    found: set[int] = set()
    for lo in range(0, len(ids), _IN_CHUNK):
        chunk = ids[lo : lo + _IN_CHUNK]
        (joined,) = conn.execute(
            f"SELECT group_concat(id) FROM deliveries WHERE id IN ({','.join('?' * len(chunk))})"
            f" AND state = '{State.PROCESSING}'",
            chunk,
        ).fetchone()
        if joined:
            found.update(int(i) for i in joined.split(","))
    return found


# the columns record() sets, in the order of its update rows (then the delivery id)
_UPDATE_SQL = (
    "UPDATE deliveries SET state = v.column1, next_attempt_at = v.column2,"
    " finished_at = v.column3, updated_at = v.column4, last_status = v.column5,"
    " last_error = v.column6 FROM (VALUES {rows}) AS v"
    f" WHERE deliveries.id = v.column7 AND deliveries.state = '{State.PROCESSING}'"
)


def _update_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Apply record()'s row updates; the padding rows match no delivery (id NULL)."""
    _padded_statements(conn, rows, _update_sql)


@functools.cache
def _update_sql(count: int) -> str:
    return _UPDATE_SQL.format(rows=",".join(["(?,?,?,?,?,?,?)"] * count))


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
        if row is None or not row[1] or disable_after_s is None:
            continue
        if now - row[0] >= disable_after_s:
            set_webhook_active(conn, webhook_id, False, now)
            disabled.append(webhook_id)
    return disabled


def recover(conn: sqlite3.Connection, now: float) -> int:
    """Return deliveries left `processing` by a crash to the queue; how many."""
    # the interrupted attempt is made again with the same number: it never got an answer
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


_ACTIVE = "(SELECT is_active FROM webhooks w WHERE w.id = deliveries.webhook_id)"


# -------------------------------------------------------------------- webhooks
def webhooks(conn: sqlite3.Connection) -> list[Webhook]:
    """Every webhook, session and static."""
    return [_webhook(r) for r in conn.execute(_WEBHOOK_SELECT)]


def put_session_webhook(
    conn: sqlite3.Connection,
    session_id: str,
    url: str,
    events: Sequence[str],
    secret: str | None,
    is_active: bool,
    headers: Sequence[tuple[str, str]],
    now: float,
) -> tuple[Webhook, bool]:
    """Create or replace a session's webhook; returns it and whether it was just activated."""
    row = conn.execute(
        _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = ?", (session_id,)
    ).fetchone()
    enc = (url, json.dumps(list(events)), secret, _enc_headers(headers), is_active)
    if row is None:
        conn.execute(
            "INSERT INTO webhooks (kind, session_id, url, events, secret, headers,"
            " is_active, created_at, updated_at) VALUES ('session', ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, *enc, now, now),
        )
        webhook_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        was_active = True
    else:
        old = _webhook(row)
        webhook_id, was_active = old.id, old.is_active
        previous, until = old.previous_secret, old.previous_secret_until
        if secret is None:
            previous = until = None  # unsigned from now on: nothing to overlap with
        elif old.secret is not None and secret != old.secret:
            # rotation: receivers still holding the old secret verify for 24 h more
            previous, until = old.secret, now + SECRET_OVERLAP_S
        conn.execute(
            "UPDATE webhooks SET url = ?, events = ?, secret = ?, headers = ?,"
            " is_active = ?, previous_secret = ?, previous_secret_until = ?,"
            # re-enabling (after a 410 or auto-disable) restarts the failing clock
            " failing_since = CASE WHEN is_active THEN failing_since ELSE NULL END,"
            " updated_at = ? WHERE id = ?",
            (*enc, previous, until, now, webhook_id),
        )
    set_parked(conn, webhook_id, parked=not is_active, now=now)
    new = conn.execute(_WEBHOOK_SELECT + " WHERE id = ?", (webhook_id,)).fetchone()
    return _webhook(new), is_active and not was_active


def delete_session_webhook(conn: sqlite3.Connection, session_id: str) -> Webhook | None:
    """Delete a session's webhook and drop its queued deliveries."""
    row = conn.execute(
        _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    hook = _webhook(row)
    conn.execute("DELETE FROM webhooks WHERE id = ?", (hook.id,))
    conn.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
        f" WHERE webhook_id = ? AND state IN {_CLEARABLE})",
        (hook.id,),
    )
    conn.execute(
        f"DELETE FROM deliveries WHERE webhook_id = ? AND state IN {_CLEARABLE}",
        (hook.id,),
    )
    return hook


def set_webhook_active(conn: sqlite3.Connection, webhook_id: int, active: bool, now: float) -> None:
    """Activate or deactivate a webhook; its queued deliveries park or wake up with it."""
    conn.execute(
        "UPDATE webhooks SET is_active = ?, updated_at = ?,"
        " failing_since = CASE WHEN ? THEN NULL ELSE failing_since END WHERE id = ?",
        (active, now, active, webhook_id),
    )
    set_parked(conn, webhook_id, parked=not active, now=now)


def sync_static_webhooks(
    conn: sqlite3.Connection,
    statics: Sequence[tuple[str, str, str, Sequence[str], str | None, Any]],
    now: float,
) -> None:
    """Make the static webhooks those of the config; see `Store.sync_static_webhooks`."""
    keys = [s[0] for s in statics]
    for key, session, url, events, secret, headers in statics:
        conn.execute(
            "INSERT INTO webhooks (kind, session_id, static_key, url, events, secret,"
            " headers, is_active, created_at, updated_at)"
            " VALUES ('static', ?, ?, ?, ?, ?, ?, 1, ?, ?)"
            " ON CONFLICT (static_key) DO UPDATE SET url = excluded.url,"
            " events = excluded.events, secret = excluded.secret,"
            # a changed secret keeps the old one valid for the overlap, as for the API
            " previous_secret = CASE WHEN excluded.secret IS NULL THEN NULL"
            "  WHEN webhooks.secret IS NOT excluded.secret AND webhooks.secret IS NOT NULL"
            "  THEN webhooks.secret ELSE webhooks.previous_secret END,"
            " previous_secret_until = CASE WHEN excluded.secret IS NULL THEN NULL"
            "  WHEN webhooks.secret IS NOT excluded.secret AND webhooks.secret IS NOT NULL"
            "  THEN ? ELSE webhooks.previous_secret_until END,"
            " failing_since = CASE WHEN webhooks.is_active THEN webhooks.failing_since END,"
            " headers = excluded.headers, is_active = 1, updated_at = excluded.updated_at",
            (
                session,
                key,
                url,
                json.dumps(list(events)),
                secret,
                _enc_headers(headers),
                now,
                now,
                now + SECRET_OVERLAP_S,
            ),
        )
        (webhook_id,) = conn.execute(
            "SELECT id FROM webhooks WHERE static_key = ?", (key,)
        ).fetchone()
        set_parked(conn, webhook_id, parked=False, now=now)
    gone = [
        r[0]
        for r in conn.execute("SELECT id, static_key FROM webhooks WHERE kind = 'static'")
        if r[1] not in keys
    ]
    for webhook_id in gone:
        conn.execute(
            f"UPDATE deliveries SET state = '{State.FAILED}', next_attempt_at = NULL,"
            " finished_at = ?, updated_at = ?,"
            " last_error = 'static webhook removed from the config file'"
            f" WHERE webhook_id = ? AND state IN {_QUEUED}",
            (now, now, webhook_id),
        )
        conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))


def set_parked(conn: sqlite3.Connection, webhook_id: int, *, parked: bool, now: float) -> None:
    """Park (inactive webhook) or wake the webhook's queued deliveries."""
    if parked:
        conn.execute(
            f"UPDATE deliveries SET state = '{State.PENDING}', next_attempt_at = NULL"
            f" WHERE webhook_id = ? AND state IN {_QUEUED} AND next_attempt_at IS NOT NULL",
            (webhook_id,),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?"
            f" WHERE webhook_id = ? AND state IN {_QUEUED} AND next_attempt_at IS NULL",
            (now, webhook_id),
        )


# --------------------------------------------------------------- queue & stats
def queue_counts(conn: sqlite3.Connection, sessions: Collection[str] | None) -> dict[str, int]:
    """Queued deliveries by state, over every session or the given ones."""
    counts = {
        state.value: 0 for state in (State.PENDING, State.PROCESSING, State.FAILED, State.RETRYING)
    }
    sql = "SELECT state, COUNT(*) FROM deliveries WHERE state IN (?, ?, ?, ?)"
    params: list[Any] = list(counts)
    if sessions is not None:
        sql += f" AND session_id IN ({','.join('?' * len(sessions))})"
        params += sessions
    for state, n in conn.execute(sql + " GROUP BY state", params):
        counts[state] = n
    return counts


def oldest_due_at(conn: sqlite3.Connection) -> float | None:
    """The earliest next-attempt time of the queued deliveries, None when none waits."""
    # one step down the partial index, whatever the backlog
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FROM deliveries INDEXED BY deliveries_due"
        " WHERE next_attempt_at IS NOT NULL"
    ).fetchone()
    return None if row[0] is None else float(row[0])


def queue_counts_by_session(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Queued deliveries by session and state (sessions with none queued are absent)."""
    states = [s.value for s in (State.PENDING, State.PROCESSING, State.FAILED, State.RETRYING)]
    out: dict[str, dict[str, int]] = {}
    for session_id, state, n in conn.execute(
        "SELECT session_id, state, COUNT(*) FROM deliveries WHERE state IN (?, ?, ?, ?)"
        " GROUP BY state, session_id",
        states,
    ):
        out.setdefault(session_id, dict.fromkeys(states, 0))[state] = n
    return out


def clear_queue(
    conn: sqlite3.Connection, session_id: str, states: Collection[State]
) -> dict[str, int]:
    """Delete a session's queued deliveries in the given states (never those in flight)."""
    removed = {state.value: 0 for state in CLEARABLE_STATES}
    for state in states:
        conn.execute(
            "DELETE FROM attempts WHERE delivery_id IN"
            " (SELECT id FROM deliveries WHERE state = ? AND session_id = ?)",
            (state.value, session_id),
        )
        cur = conn.execute(
            "DELETE FROM deliveries WHERE state = ? AND session_id = ?",
            (state.value, session_id),
        )
        removed[state.value] = cur.rowcount
    return removed


def session_stats(conn: sqlite3.Connection, session_id: str) -> SessionStats | None:
    """All-time stats of a session, None when it never finished a delivery."""
    rows = conn.execute(
        "SELECT event_type, successful, failed, success_ms_total, last_delivery_at"
        " FROM session_stats WHERE session_id = ? ORDER BY event_type",
        (session_id,),
    ).fetchall()
    return _stats(rows) if rows else None


def sessions_stats(conn: sqlite3.Connection, sessions: Collection[str]) -> dict[str, SessionStats]:
    """All-time stats of these sessions; those that never finished a delivery are absent."""
    by_session: dict[str, list[Any]] = {}
    wanted = sorted(set(sessions))
    for i in range(0, len(wanted), 500):  # far below SQLite's limit of bound parameters
        chunk = wanted[i : i + 500]
        for row in conn.execute(
            "SELECT session_id, event_type, successful, failed, success_ms_total,"
            " last_delivery_at FROM session_stats"
            f" WHERE session_id IN ({','.join('?' * len(chunk))}) ORDER BY session_id, event_type",
            chunk,
        ):
            by_session.setdefault(row[0], []).append(row[1:])
    return {session_id: _stats(rows) for session_id, rows in by_session.items()}


def _stats(rows: Sequence[Any]) -> SessionStats:
    """Sum (event_type, successful, failed, success_ms_total, last_delivery_at) rows."""
    last = [r[4] for r in rows if r[4] is not None]
    return SessionStats(
        successful=sum(r[1] for r in rows),
        failed=sum(r[2] for r in rows),
        success_ms_total=sum(r[3] for r in rows),
        last_delivery_at=max(last) if last else None,
        by_event={r[0]: r[1] for r in rows if r[1]},
    )


# ------------------------------------------------------------------ row helpers
def _enc_headers(headers: Sequence[tuple[str, str]] | None) -> str | None:
    return json.dumps(dict(headers)) if headers else None


def _webhook(row: sqlite3.Row | tuple[Any, ...]) -> Webhook:
    headers = tuple(json.loads(row[6]).items()) if row[6] else ()
    return Webhook(
        id=row[0],
        kind=row[1],
        session=row[2],
        url=row[3],
        events=tuple(json.loads(row[4])),
        secret=row[5],
        headers=headers,
        is_active=bool(row[7]),
        created_at=row[8],
        updated_at=row[9],
        static_key=row[10],
        previous_secret=row[11],
        previous_secret_until=row[12],
    )
