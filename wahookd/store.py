"""The delivery log: one SQLite file in WAL mode, its schema and every SQL statement.

Writes go through one writer connection and are group-committed: every write
queued while the previous transaction ran is applied in the next one, so
concurrent ingest requests, claims and attempt outcomes share a commit (and an
fsync). Each batch runs as a single call on aiosqlite's worker thread, so a
batch costs one thread hop whatever its size. Reads use a second connection,
which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from .events import Event
from .models import CLEARABLE_STATES, Claimed, DueItem, Outcome, State, Webhook

log = logging.getLogger(__name__)

T = TypeVar("T")

IDEMPOTENCY_WINDOW_S = 24 * 3600
RESPONSE_KEEP_BYTES = 1024

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('session', 'static')),
        session_id TEXT NOT NULL,
        static_key TEXT UNIQUE,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT,
        previous_secret TEXT,
        previous_secret_until REAL,
        headers TEXT,
        is_active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX webhooks_session ON webhooks(session_id) WHERE kind = 'session';

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX events_client_uid ON events(session_id, uid) WHERE client_id = 1;

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        webhook_id INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        last_status INTEGER,
        last_error TEXT
    );
    CREATE UNIQUE INDEX deliveries_uid ON deliveries(uid);
    -- next_attempt_at is set exactly while a delivery waits for an attempt it may get:
    -- the scheduler's window refills from these two partial indexes.
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX deliveries_webhook_due ON deliveries(webhook_id, next_attempt_at, id)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX deliveries_state_session ON deliveries(state, session_id);
    CREATE INDEX deliveries_event ON deliveries(event_id);

    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_at REAL NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        outcome TEXT NOT NULL,
        error TEXT,
        response_body TEXT
    );
    CREATE INDEX attempts_delivery ON attempts(delivery_id, attempt);

    CREATE TABLE session_stats (
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        successful INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        success_ms_total INTEGER NOT NULL DEFAULT 0,
        last_delivery_at REAL,
        PRIMARY KEY (session_id, event_type)
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_QUEUED = f"('{State.PENDING}', '{State.RETRYING}')"


class StorageUnavailable(Exception):
    """The database cannot take writes right now (busy, I/O error, full disk)."""

    retry_after_s = 5


class StorageError(Exception):
    """The database file cannot be opened or is of an unknown schema."""


def new_uid(prefix: str) -> str:
    """A unique id whose leading part grows with time, so its index appends."""
    return f"{prefix}_{time.time_ns() // 1_000_000:011x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One validated event and the webhooks it fans out to."""

    event: Event
    webhook_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ingest did with one event."""

    event_uid: str
    duplicate: bool
    deliveries: tuple[DueItem, ...]


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A session's all-time delivery statistics (SPEC §6)."""

    successful: int
    failed: int
    success_ms_total: int
    last_delivery_at: float | None
    by_event: dict[str, int]


@dataclass(slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


def _is_storage_fault(exc: BaseException) -> bool:
    # OperationalError covers "database is locked", "disk I/O error" and
    # "database or disk is full"; DatabaseError covers a corrupt or vanished file.
    return isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError
    )


class Store:
    """The delivery log. Create with `await Store.open(path, synchronous)`."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._next_event_id = 0
        self._next_delivery_id = 0
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, path: Path, synchronous: Literal["full", "normal"] = "full") -> Store:
        """Open (creating if needed, mode 0600) and migrate the database, start the writer."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # create the file ourselves so it never exists with a looser mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        writer = await aiosqlite.connect(path, isolation_level=None)
        reader = await aiosqlite.connect(path, isolation_level=None)
        store = cls(path, writer, reader)
        try:
            await store._in_writer(lambda c: _prepare(c, synchronous))
            await store._in_reader(lambda c: c.execute("PRAGMA query_only = ON"))
            ids = await store._in_writer(_max_ids)
        except sqlite3.DatabaseError as exc:
            await store._close_connections()
            raise StorageError(f"{path}: {exc}") from exc
        except BaseException:
            await store._close_connections()
            raise
        store._next_event_id, store._next_delivery_id = ids[0] + 1, ids[1] + 1
        store._task = asyncio.create_task(store._write_loop(), name="wahookd-store-writer")
        return store

    async def close(self) -> None:
        """Finish queued writes, then close both connections."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._close_connections()

    async def _close_connections(self) -> None:
        await self._writer.close()
        await self._reader.close()

    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # one call on aiosqlite's worker thread: the whole function is one thread hop
        return await self._writer._execute(fn, self._writer._conn)  # type: ignore[no-any-return]

    async def _in_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._reader._execute(fn, self._reader._conn)  # type: ignore[no-any-return]

    # ------------------------------------------------------------- group commit

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn inside the next group-committed transaction and return its result."""
        if self._closing:
            raise StorageUnavailable("the store is closing")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(fn, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops, self._ops = self._ops, []
            if ops:
                await self._run_batch(ops)
            if self._closing and not self._ops:
                return

    async def _run_batch(self, ops: list[_Op]) -> None:
        try:
            results = await self._in_writer(lambda c: _apply_batch(c, [op.fn for op in ops]))
        except Exception as exc:
            log.warning("storage write failed, %d operations refused: %s", len(ops), exc)
            for op in ops:
                if not op.future.done():
                    op.future.set_exception(StorageUnavailable(str(exc)))
            return
        for op, (ok, value) in zip(ops, results, strict=True):
            if op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)

    # ------------------------------------------------------------------- ingest

    async def ingest(self, items: Sequence[IngestItem], now: float) -> list[IngestResult]:
        """Commit events and their deliveries; duplicates (same session and id, 24 h) are skipped."""
        return await self.write(lambda c: self._ingest(c, items, now))

    def _ingest(
        self, conn: sqlite3.Connection, items: Sequence[IngestItem], now: float
    ) -> list[IngestResult]:
        results: list[IngestResult] = []
        event_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        seen: dict[tuple[str, str], str] = {}
        since = now - IDEMPOTENCY_WINDOW_S
        for item in items:
            ev = item.event
            if ev.event_id is not None:
                key = (ev.session_id, ev.event_id)
                if key in seen or _recent_event(conn, key, since):
                    results.append(IngestResult(ev.event_id, True, ()))
                    continue
                seen[key] = ev.event_id
            event_id = self._next_event_id
            self._next_event_id += 1
            uid = ev.event_id if ev.event_id is not None else new_uid("evt")
            event_rows.append(
                (event_id, uid, ev.event_id is not None, ev.session_id, ev.type, ev.body, now)
            )
            due: list[DueItem] = []
            for webhook_id in item.webhook_ids:
                delivery_id = self._next_delivery_id
                self._next_delivery_id += 1
                delivery_rows.append(
                    (
                        delivery_id,
                        new_uid("dlv"),
                        event_id,
                        webhook_id,
                        ev.session_id,
                        ev.type,
                        State.PENDING.value,
                        now,
                        now,
                        now,
                    )
                )
                due.append(DueItem(now, delivery_id, webhook_id))
            results.append(IngestResult(uid, False, tuple(due)))
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", event_rows)
        conn.executemany(
            "INSERT INTO deliveries (id, uid, event_id, webhook_id, session_id, event_type,"
            " state, next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            delivery_rows,
        )
        return results

    # --------------------------------------------------------------- scheduling

    async def load_due(
        self, after: tuple[float, int] | None, limit: int, exclude_webhooks: Collection[int]
    ) -> list[DueItem]:
        """The next `limit` queued deliveries after the key `after`, soonest first."""

        def run(conn: sqlite3.Connection) -> list[DueItem]:
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

        return await self._in_reader(run)

    async def load_webhook_due(self, webhook_id: int, limit: int) -> list[DueItem]:
        """One webhook's soonest `limit` queued deliveries."""

        def run(conn: sqlite3.Connection) -> list[DueItem]:
            rows = conn.execute(
                "SELECT next_attempt_at, id, webhook_id FROM deliveries"
                " INDEXED BY deliveries_webhook_due"
                " WHERE webhook_id = ? AND next_attempt_at IS NOT NULL"
                " ORDER BY next_attempt_at, id LIMIT ?",
                (webhook_id, limit),
            )
            return [DueItem(*row) for row in rows]

        return await self._in_reader(run)

    async def claim(self, ids: Sequence[int], now: float) -> list[Claimed]:
        """Move queued deliveries to `processing`; returns those still claimable, with bodies."""
        return await self.write(lambda c: _claim(c, ids, now))

    async def record(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Log attempts and move their deliveries on; count finished ones in the stats."""
        await self.write(lambda c: _record(c, outcomes, now))

    async def recover(self, now: float) -> int:
        """Return deliveries left `processing` by a crash to the queue; how many."""
        return await self.write(lambda c: _recover(c, now))

    # ----------------------------------------------------------------- webhooks

    async def webhooks(self) -> list[Webhook]:
        """Every webhook, session and static."""
        return await self._in_reader(lambda c: [_webhook(r) for r in c.execute(_WEBHOOK_SELECT)])

    async def put_session_webhook(
        self,
        session_id: str,
        url: str,
        events: Sequence[str],
        secret: str | None,
        is_active: bool,
        headers: Sequence[tuple[str, str]],
        now: float,
    ) -> tuple[Webhook, bool]:
        """Create or replace a session's webhook; returns it and whether it was just activated."""

        def run(conn: sqlite3.Connection) -> tuple[Webhook, bool]:
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
                conn.execute(
                    "UPDATE webhooks SET url = ?, events = ?, secret = ?, headers = ?,"
                    " is_active = ?, updated_at = ? WHERE id = ?",
                    (*enc, now, webhook_id),
                )
            _set_parked(conn, webhook_id, parked=not is_active, now=now)
            new = conn.execute(_WEBHOOK_SELECT + " WHERE id = ?", (webhook_id,)).fetchone()
            return _webhook(new), is_active and not was_active

        return await self.write(run)

    async def delete_session_webhook(self, session_id: str) -> Webhook | None:
        """Delete a session's webhook and drop its queued deliveries."""

        def run(conn: sqlite3.Connection) -> Webhook | None:
            row = conn.execute(
                _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            hook = _webhook(row)
            conn.execute("DELETE FROM webhooks WHERE id = ?", (hook.id,))
            conn.execute(
                f"DELETE FROM deliveries WHERE webhook_id = ? AND state IN {_CLEARABLE}",
                (hook.id,),
            )
            return hook

        return await self.write(run)

    async def set_webhook_active(self, webhook_id: int, active: bool, now: float) -> None:
        """Activate or deactivate a webhook; its queued deliveries park or wake up with it."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE webhooks SET is_active = ?, updated_at = ? WHERE id = ?",
                (active, now, webhook_id),
            )
            _set_parked(conn, webhook_id, parked=not active, now=now)

        await self.write(run)

    async def sync_static_webhooks(
        self, statics: Sequence[tuple[str, str, str, Sequence[str], str | None, Any]], now: float
    ) -> None:
        """Make the static webhooks those of the config: (key, session, url, events, secret, headers).

        A static webhook that left the config is removed and its queued deliveries
        fail with a clear error, so nothing silently disappears from the queue.
        """

        def run(conn: sqlite3.Connection) -> None:
            keys = [s[0] for s in statics]
            for key, session, url, events, secret, headers in statics:
                conn.execute(
                    "INSERT INTO webhooks (kind, session_id, static_key, url, events, secret,"
                    " headers, is_active, created_at, updated_at)"
                    " VALUES ('static', ?, ?, ?, ?, ?, ?, 1, ?, ?)"
                    " ON CONFLICT (static_key) DO UPDATE SET url = excluded.url,"
                    " events = excluded.events, secret = excluded.secret,"
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
                    ),
                )
                (webhook_id,) = conn.execute(
                    "SELECT id FROM webhooks WHERE static_key = ?", (key,)
                ).fetchone()
                _set_parked(conn, webhook_id, parked=False, now=now)
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

        await self.write(run)

    # ------------------------------------------------------------ queue & stats

    async def queue_counts(self, sessions: Collection[str] | None) -> dict[str, int]:
        """Queued deliveries by state, over every session or the given ones."""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            counts = {
                state.value: 0
                for state in (State.PENDING, State.PROCESSING, State.FAILED, State.RETRYING)
            }
            sql = "SELECT state, COUNT(*) FROM deliveries WHERE state IN (?, ?, ?, ?)"
            params: list[Any] = list(counts)
            if sessions is not None:
                sql += f" AND session_id IN ({','.join('?' * len(sessions))})"
                params += sessions
            for state, n in conn.execute(sql + " GROUP BY state", params):
                counts[state] = n
            return counts

        return await self._in_reader(run)

    async def clear_queue(self, session_id: str, states: Collection[State]) -> dict[str, int]:
        """Delete a session's queued deliveries in the given states (never those in flight)."""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            removed = {state.value: 0 for state in CLEARABLE_STATES}
            for state in states:
                cur = conn.execute(
                    "DELETE FROM deliveries WHERE state = ? AND session_id = ?",
                    (state.value, session_id),
                )
                removed[state.value] = cur.rowcount
            return removed

        return await self.write(run)

    async def session_stats(self, session_id: str) -> SessionStats | None:
        """All-time stats of a session, None when it never finished a delivery."""

        def run(conn: sqlite3.Connection) -> SessionStats | None:
            rows = conn.execute(
                "SELECT event_type, successful, failed, success_ms_total, last_delivery_at"
                " FROM session_stats WHERE session_id = ? ORDER BY event_type",
                (session_id,),
            ).fetchall()
            if not rows:
                return None
            last = [r[4] for r in rows if r[4] is not None]
            return SessionStats(
                successful=sum(r[1] for r in rows),
                failed=sum(r[2] for r in rows),
                success_ms_total=sum(r[3] for r in rows),
                last_delivery_at=max(last) if last else None,
                by_event={r[0]: r[1] for r in rows if r[1]},
            )

        return await self._in_reader(run)

    async def ping(self) -> None:
        """Raise unless the database answers a read."""
        await self._in_reader(lambda c: c.execute("SELECT 1").fetchone())


# --------------------------------------------------------------------- helpers

_CLEARABLE = "(" + ", ".join(f"'{s}'" for s in CLEARABLE_STATES) + ")"
_WEBHOOK_SELECT = (
    "SELECT id, kind, session_id, url, events, secret, headers, is_active, created_at,"
    " updated_at, static_key, previous_secret, previous_secret_until FROM webhooks"
)


def _prepare(conn: sqlite3.Connection, synchronous: str) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    # a writer blocked by another process waits this long before SQLITE_BUSY
    conn.execute("PRAGMA busy_timeout = 5000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"database schema version {version} is newer than this wahookd ({SCHEMA_VERSION})"
        )
    for index in range(version, SCHEMA_VERSION):
        conn.executescript(
            f"BEGIN; {MIGRATIONS[index]}; PRAGMA user_version = {index + 1}; COMMIT;"
        )


def _max_ids(conn: sqlite3.Connection) -> tuple[int, int]:
    (events,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
    (deliveries,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()
    return int(events), int(deliveries)


def _apply_batch(
    conn: sqlite3.Connection, fns: Iterable[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run every operation in one transaction; one op's bug does not sink the others."""
    results: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn in fns:
            conn.execute("SAVEPOINT op")
            try:
                value = fn(conn)
            except Exception as exc:
                if _is_storage_fault(exc):
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


def _recent_event(conn: sqlite3.Connection, key: tuple[str, str], since: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM events WHERE session_id = ? AND uid = ? AND client_id = 1"
        " AND created_at > ? LIMIT 1",
        (*key, since),
    ).fetchone()
    return row is not None


def _claim(conn: sqlite3.Connection, ids: Sequence[int], now: float) -> list[Claimed]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    # next_attempt_at IS NOT NULL: still queued and not parked, so a row deleted,
    # parked or already claimed since the scheduler saw it is skipped
    claimed = conn.execute(
        f"UPDATE deliveries SET state = '{State.PROCESSING}', attempts = attempts + 1,"
        f" next_attempt_at = NULL, updated_at = ? WHERE id IN ({marks})"
        " AND next_attempt_at IS NOT NULL"
        " RETURNING id, uid, webhook_id, session_id, event_type, attempts, event_id",
        (now, *ids),
    ).fetchall()
    if not claimed:
        return []
    event_ids = sorted({row[6] for row in claimed})
    bodies = dict(
        conn.execute(
            f"SELECT id, body FROM events WHERE id IN ({','.join('?' * len(event_ids))})",
            event_ids,
        ).fetchall()
    )
    return [Claimed(*row[:6], body=bodies[row[6]]) for row in claimed]


def _record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], now: float) -> None:
    attempt_rows = []
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
        if o.kind == "retry":
            state, next_at, finished = State.RETRYING, o.next_attempt_at, None
        elif o.kind == "delivered":
            state, next_at, finished = State.DELIVERED, None, now
        else:
            state, next_at, finished = State.FAILED, None, now
        cur = conn.execute(
            "UPDATE deliveries SET state = ?, next_attempt_at = ?, finished_at = ?,"
            " updated_at = ?, last_status = ?, last_error = ?"
            f" WHERE id = ? AND state = '{State.PROCESSING}'",
            (state.value, next_at, finished, now, r.status_code, r.error, c.id),
        )
        if cur.rowcount and finished is not None:
            ok = o.kind == "delivered"
            conn.execute(
                "INSERT INTO session_stats (session_id, event_type, successful, failed,"
                " success_ms_total, last_delivery_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET successful = successful + excluded.successful,"
                " failed = failed + excluded.failed,"
                " success_ms_total = success_ms_total + excluded.success_ms_total,"
                " last_delivery_at = MAX(COALESCE(last_delivery_at, 0),"
                " COALESCE(excluded.last_delivery_at, 0))",
                (
                    c.session_id,
                    c.event_type,
                    int(ok),
                    int(not ok),
                    r.duration_ms if ok else 0,
                    now if ok else None,
                ),
            )
        if o.kind == "gone":
            conn.execute(
                "UPDATE webhooks SET is_active = 0, updated_at = ? WHERE id = ?",
                (now, c.webhook_id),
            )
            _set_parked(conn, c.webhook_id, parked=True, now=now)
    conn.executemany(
        "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms,"
        " status_code, outcome, error, response_body) VALUES (?,?,?,?,?,?,?,?)",
        attempt_rows,
    )


def _recover(conn: sqlite3.Connection, now: float) -> int:
    # the interrupted attempt is made again with the same number: it never got an answer
    cur = conn.execute(
        "UPDATE deliveries SET attempts = attempts - 1,"
        f" state = CASE WHEN attempts > 1 THEN '{State.RETRYING}' ELSE '{State.PENDING}' END,"
        " next_attempt_at = CASE WHEN (SELECT is_active FROM webhooks w"
        " WHERE w.id = deliveries.webhook_id) THEN ? ELSE NULL END, updated_at = ?"
        f" WHERE state = '{State.PROCESSING}'",
        (now, now),
    )
    # parked deliveries count as pending (SPEC §6)
    conn.execute(
        f"UPDATE deliveries SET state = '{State.PENDING}' WHERE state = '{State.RETRYING}'"
        " AND next_attempt_at IS NULL"
    )
    return cur.rowcount


def _set_parked(conn: sqlite3.Connection, webhook_id: int, *, parked: bool, now: float) -> None:
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
