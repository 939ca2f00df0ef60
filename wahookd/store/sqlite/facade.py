"""The SQLite store: one file in WAL mode, a writer and a reader connection, group commit.

Writes go through the writer connection and are group-committed: every write
queued while the previous transaction ran is applied in the next one, so
concurrent ingest requests, claims and attempt outcomes share a commit (and an
fsync). Each batch runs as a single call on the writer's thread, so a batch costs
one thread hop whatever its size. A write that finds the writer idle starts its batch
at once, from `write()` itself, so the thread works while the loop goes on. Reads use
a second connection, which WAL lets run beside the writer.

A third connection checkpoints the WAL (copies its pages into the database file and
syncs it) on its own thread, beside the writer, once the WAL has grown to SQLite's
usual checkpoint size: left to the writer, every 1,000 WAL pages one commit also did
that copy and a second fsync, and a batch's outcomes waited for it. The writer keeps
a far larger automatic checkpoint only as a backstop, so the WAL stays bounded even
when the checkpointer falls behind or cannot run.

The SQL lives in plain synchronous functions, one module per concern (`ingest`,
`claims`, `outcomes`, `webhooks`, `queue`, `stats`, `history`, `schema`); this
class only routes each call to the right connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ...models import Claimed, DueItem, Outcome, State, Webhook
from ..protocol import ClaimLimits
from ..types import (
    MAX_EXTRA_WEBHOOKS,
    DeliveryRow,
    IngestItem,
    IngestResult,
    MinuteActivity,
    RetryResult,
    SessionStats,
    StaticRow,
    StorageError,
    StorageUnavailable,
    WebhookFields,
    WebhookHealth,
)
from . import activity as activity_sql
from . import claims, history, ingest, outcomes, queue, schema, stats, webhooks
from .batching import apply_batch
from .connection import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")

# the writer checkpoints by itself only once the WAL holds this many pages (a backstop:
# the checkpointer thread copies them meanwhile, so the writer's turn finds little left)
WRITER_AUTOCHECKPOINT_PAGES = 4000
# the checkpointer runs at most this often, after a commit (SQLite's PASSIVE mode: it
# never waits for, nor blocks, the writer or the readers)
CHECKPOINT_INTERVAL_S = 0.05
# ... and only once the WAL file has grown to SQLite's own checkpoint size (1,000 pages):
# a light load keeps SQLite's usual WAL (it grows, then the writer checkpoints it), so
# a write that needs new blocks on a full disk is refused as before
CHECKPOINT_FROM_PAGES = 1000


@dataclass(slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


class SqliteStore:
    """The delivery log in SQLite. Create with `await SqliteStore.open(path, synchronous)`."""

    def __init__(
        self,
        path: Path,
        writer: Connection,
        reader: Connection,
        checkpointer: Connection | None = None,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._checkpointer = checkpointer
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpoint_at = 0.0  # loop time the last checkpoint started
        self._checkpoint_from_bytes = CHECKPOINT_FROM_PAGES * 4096  # set from page_size
        self._wal_grown = False  # the WAL file reached _checkpoint_from_bytes
        self._ops: list[_Op] = []  # writes waiting for the next batch
        self._batch: list[_Op] | None = None  # the batch the writer thread runs now
        self._idle = asyncio.Event()  # no batch running and none waiting
        self._idle.set()
        self._closing = False
        # only the writer thread takes ids from it, inside ingest.ingest
        self._ids = ingest.Ids(next_event=0, next_delivery=0)
        self.commits = 0  # transactions committed by the writer (each one fsync)
        self.checkpoints = 0  # WAL checkpoints the checkpointer thread ran
        self.faults = 0  # refused batches and failed reads: busy, I/O error, full disk (metrics)
        # fault injection (tests, drills): while set, each trip to that connection's
        # thread raises what it returns instead of running, as a failing disk would
        # (a sqlite3.Error there is a storage fault: a 503)
        self.write_fault: Callable[[], BaseException] | None = None
        self.read_fault: Callable[[], BaseException] | None = None
        # told, after their commit, of deliveries an ordering key's turn made due
        self.on_due: Callable[[Sequence[DueItem]], None] | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, path: Path, synchronous: Literal["full", "normal"] = "full") -> SqliteStore:
        """Open (creating if needed, mode 0600) and migrate the database, start the writer."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # create the file ourselves so it never exists with a looser mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        writer = await Connection.open(path, "wahookd-store-writer")
        reader = checkpointer = None
        try:
            reader = await Connection.open(path, "wahookd-store-reader")
            # its work is in SQLite, without the GIL: no reason to share the loop's CPU
            checkpointer = await Connection.open(path, "wahookd-store-checkpointer", unpinned=True)
        except BaseException:
            await writer.close()
            if reader is not None:
                await reader.close()
            raise
        store = cls(path, writer, reader, checkpointer)
        try:
            await store._in_writer(lambda c: schema.prepare(c, synchronous))
            await store._in_reader(schema.prepare_reader)
            page_size = await store._in_writer(_writer_autocheckpoint)
            store._checkpoint_from_bytes = CHECKPOINT_FROM_PAGES * page_size
            await checkpointer.run(lambda c: _checkpointer_pragmas(c, synchronous))
            store._ids = await store._in_writer(ingest.next_ids)
        except sqlite3.DatabaseError as exc:
            await store._close_connections()
            raise StorageError(f"{path}: {exc}") from exc
        except BaseException:
            await store._close_connections()
            raise
        return store

    async def close(self) -> None:
        """Finish queued writes, then close both connections."""
        self._closing = True
        await self._idle.wait()  # the batches queued before go on to their commits
        if self._checkpointing is not None:
            await self._checkpointing
        await self._close_connections()

    async def _close_connections(self) -> None:
        try:
            if self._checkpointer is not None:
                await self._checkpointer.close()
        finally:
            try:
                await self._writer.close()
            finally:
                await self._reader.close()

    # the two paths to the connections; write_fault/read_fault inject storage faults
    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.write_fault is not None:
            raise self.write_fault()
        return await self._writer.run(fn)

    async def _in_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self.read_fault is not None:
                raise self.read_fault()
            return await self._reader.run(fn)
        except sqlite3.Error as exc:
            # a read that fails on I/O, a lock or a vanished file is a 503, not a bug
            self.faults += 1
            raise StorageUnavailable(str(exc)) from exc

    # ------------------------------------------------- raw access (tests, tools)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) on the read-only connection's thread; a failure is StorageUnavailable."""
        return await self._in_reader(fn)

    async def on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(conn) on the writer connection's thread, outside any transaction.

        For connection settings (pragmas) in tests and tools; fn must not leave a
        transaction open. Writes belong in `write`.
        """
        return await self._in_writer(fn)

    # ------------------------------------------------------------- group commit

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn inside the next group-committed transaction and return its result.

        fn's changes are committed when this returns; an exception from fn rolls
        back fn's changes only and is raised here; a storage fault refuses the whole
        batch (StorageUnavailable). fn may run twice (apply_batch): it keeps its
        effects to the database and its return value.
        """
        if self._closing:
            raise StorageUnavailable("the store is closing")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(fn, future))
        if self._batch is None:
            self._start_batch()
        return await future

    def _start_batch(self) -> None:
        """Hand every waiting write to the writer thread as one transaction, now.

        Now, not on the loop's next pass: the thread inserts the first request's rows
        while the loop parses the requests that came with it (they make the next batch,
        which starts when this one commits).
        """
        ops, self._ops = self._ops, []
        self._batch = ops
        self._idle.clear()
        fns = [op.fn for op in ops]
        if self.write_fault is not None:
            done: asyncio.Future[list[tuple[bool, Any]]] = (
                asyncio.get_running_loop().create_future()
            )
            done.set_exception(self.write_fault())
        else:
            done = self._writer.submit(lambda c: apply_batch(c, fns))
        done.add_done_callback(self._batch_done)

    def _batch_done(self, done: asyncio.Future[list[tuple[bool, Any]]]) -> None:
        """Settle the batch's writes, then start the next batch if writes wait."""
        ops, self._batch = self._batch or [], None
        exc = None if done.cancelled() else done.exception()
        if done.cancelled() or exc is not None:
            why = "the write was cancelled" if exc is None else str(exc)
            log.warning("storage write failed, %d operations refused: %s", len(ops), why)
            self.faults += 1
            for op in ops:
                if not op.future.done():
                    op.future.set_exception(StorageUnavailable(why))
        else:
            self.commits += 1
            self._checkpoint_soon()
            for op, (ok, value) in zip(ops, done.result(), strict=True):
                if op.future.done():
                    continue
                if ok:
                    op.future.set_result(value)
                else:
                    op.future.set_exception(value)
        if self._ops:
            self._start_batch()
        else:
            self._idle.set()

    def _checkpoint_soon(self) -> None:
        """After a commit: copy the WAL into the database on the checkpointer's thread.

        One checkpoint at a time, at most one per CHECKPOINT_INTERVAL_S; a failed one
        is only logged (the writer's backstop checkpoints the WAL in the end).
        """
        if self._checkpointer is None or self._checkpointing is not None or self._closing:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._checkpoint_at < CHECKPOINT_INTERVAL_S:
            return
        self._checkpoint_at = loop.time()
        if not self._wal_grown:
            # the WAL file never shrinks while the store is open: once grown, checkpoint
            try:
                size = os.stat(f"{self.path}-wal").st_size
            except OSError:
                return
            if size < self._checkpoint_from_bytes:
                return
            self._wal_grown = True
        self._checkpointing = loop.create_task(self._checkpoint(self._checkpointer))

    async def _checkpoint(self, checkpointer: Connection) -> None:
        try:
            await checkpointer.run(_checkpoint_wal)
            self.checkpoints += 1
        except sqlite3.Error as exc:
            log.debug("WAL checkpoint failed (the writer's backstop will do it): %s", exc)
        finally:
            self._checkpointing = None

    # ---------------------------------------------------- the Store protocol
    # (docstrings with the invariants: wahookd/store/protocol.py)

    async def ingest(self, items: Sequence[IngestItem], now: float) -> list[IngestResult]:
        """Commit events and their deliveries, skipping duplicates (same session and id, 24 h)."""
        return await self.write(lambda c: ingest.ingest(c, self._ids, items, now))

    async def load_due(
        self, after: tuple[float, int] | None, limit: int, exclude_webhooks: Collection[int]
    ) -> list[DueItem]:
        """The next `limit` queued deliveries after the key `after`, soonest first."""
        return await self._in_reader(lambda c: claims.load_due(c, after, limit, exclude_webhooks))

    async def load_webhook_due(self, webhook_id: int, limit: int) -> list[DueItem]:
        """One webhook's soonest `limit` queued deliveries."""
        return await self._in_reader(lambda c: claims.load_webhook_due(c, webhook_id, limit))

    async def _write_waking(self, fn: Callable[[sqlite3.Connection, list[DueItem]], T]) -> T:
        """write() of fn(conn, woken); then tell `on_due` of the deliveries it woke.

        `woken` is new for each run of fn: a run that apply_batch rolled back and ran
        again must not announce its deliveries twice.
        """

        def run(c: sqlite3.Connection) -> tuple[T, list[DueItem]]:
            woken: list[DueItem] = []
            return fn(c, woken), woken

        value, woken = await self.write(run)
        if woken and self.on_due is not None:
            self.on_due(woken)
        return value

    async def claim(
        self, ids: Sequence[int], now: float, limits: ClaimLimits | None = None
    ) -> list[Claimed]:
        """Move queued deliveries to `processing`; returns those still claimable, with bodies.

        `limits` are ignored: this process is the only one claiming, and the scheduler's
        window keeps both per-webhook limits in memory.
        """
        return await self._write_waking(lambda c, woken: claims.claim(c, ids, now, woken))

    async def record(
        self, outcomes: Sequence[Outcome], now: float, disable_after_s: float | None = None
    ) -> list[int]:
        """Log attempts and move their deliveries on; the webhooks auto-disabled."""
        return await self._write_waking(
            lambda c, woken: _record(c, outcomes, now, disable_after_s, woken)
        )

    async def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        claim: Sequence[int],
        now: float,
        disable_after_s: float | None = None,
        limits: ClaimLimits | None = None,
    ) -> tuple[list[int], list[Claimed]]:
        """`record()` and `claim()` in one transaction: (auto-disabled webhooks, claimed).

        `limits` are ignored, as in `claim()`.
        """

        def both(c: sqlite3.Connection, woken: list[DueItem]) -> tuple[list[int], list[Claimed]]:
            disabled = _record(c, outcomes, now, disable_after_s, woken)
            return disabled, claims.claim(c, claim, now, woken) if claim else []

        return await self._write_waking(both)

    async def recover(self, now: float) -> int:
        """Return deliveries left `processing` by a crash to the queue; how many."""
        return await self.write(lambda c: outcomes.recover(c, now))

    async def webhooks(self) -> list[Webhook]:
        """Every webhook, session and static."""
        return await self._in_reader(webhooks.webhooks)

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
        return await self.write(
            lambda c: webhooks.put_session_webhook(
                c, session_id, url, events, secret, is_active, headers, now
            )
        )

    async def delete_session_webhook(self, session_id: str) -> Webhook | None:
        """Delete a session's webhook and drop its queued deliveries."""
        return await self.write(lambda c: webhooks.delete_session_webhook(c, session_id))

    async def set_webhook_active(self, webhook_id: int, active: bool, now: float) -> None:
        """Activate or deactivate a webhook; its queued deliveries park or wake up with it."""
        await self.write(lambda c: webhooks.set_webhook_active(c, webhook_id, active, now))

    async def sync_static_webhooks(self, statics: Sequence[StaticRow], now: float) -> list[Webhook]:
        """Make the static webhooks those of the config; every webhook as committed."""
        return await self.write(lambda c: webhooks.sync_static_webhooks(c, statics, now))

    async def list_deliveries(
        self,
        session_id: str,
        state: State | None,
        event_type: str | None,
        before_id: int | None,
        limit: int,
        webhook_id: int | None = None,
    ) -> list[DeliveryRow]:
        """A session's deliveries newest first (only one webhook's: `webhook_id`), with
        attempts; page with `before_id`."""
        return await self._in_reader(
            lambda c: history.list_deliveries(
                c, session_id, state, event_type, before_id, limit, webhook_id
            )
        )

    async def get_delivery(self, session_id: str, uid: str) -> tuple[DeliveryRow, bytes] | None:
        """One delivery with its attempts and the event body; None when unknown."""
        return await self._in_reader(lambda c: history.get_delivery(c, session_id, uid))

    async def retry_failed(
        self,
        session_id: str,
        now: float,
        uid: str | None = None,
        finished_since: float | None = None,
        webhook_id: int | None = None,
    ) -> RetryResult:
        """Failed deliveries back to pending for a new ladder run; how many, which are due."""
        return await self.write(
            lambda c: history.retry_failed(c, session_id, now, uid, finished_since, webhook_id)
        )

    async def prune_finished(self, before: float, limit: int) -> tuple[int, list[int]]:
        """Delete up to `limit` deliveries finished before `before`; (count, their event ids)."""
        return await self.write(lambda c: history.prune_finished(c, before, limit))

    async def prune_events(
        self, before: float, event_ids: Sequence[int], after_id: int, limit: int
    ) -> tuple[int, int]:
        """Delete unreferenced events received before `before`; (count, last id swept)."""
        return await self.write(
            lambda c: history.prune_events(c, before, event_ids, after_id, limit)
        )

    async def queue_counts(self, sessions: Collection[str] | None) -> dict[str, int]:
        """Queued deliveries by state, over every session or the given ones."""
        return await self._in_reader(lambda c: queue.queue_counts(c, sessions))

    async def oldest_due_at(self) -> float | None:
        """The earliest next-attempt time of the queued deliveries (None: nothing waits)."""
        return await self._in_reader(queue.oldest_due_at)

    async def queue_counts_by_session(self) -> dict[str, dict[str, int]]:
        """Queued deliveries by session and state (sessions with none queued are absent)."""
        return await self._in_reader(queue.queue_counts_by_session)

    async def clear_queue(
        self, session_id: str, states: Collection[State], now: float
    ) -> dict[str, int]:
        """Delete a session's queued deliveries in the given states (never those in flight)."""
        return await self._write_waking(
            lambda c, woken: queue.clear_queue(c, session_id, states, now, woken)
        )

    async def session_stats(self, session_id: str) -> SessionStats | None:
        """All-time stats of a session, None when it never finished a delivery."""
        return await self._in_reader(lambda c: stats.session_stats(c, session_id))

    async def sessions_stats(self, sessions: Collection[str]) -> dict[str, SessionStats]:
        """All-time stats of these sessions; those that never finished a delivery are absent."""
        return await self._in_reader(lambda c: stats.sessions_stats(c, sessions))

    async def ping(self) -> None:
        """Raise unless the database answers a read."""
        await self._in_reader(_ping)

    # ------------------------------------------------- the webhook collection (§8)

    async def create_webhook(
        self,
        session_id: str,
        fields: WebhookFields,
        now: float,
        max_extra: int = MAX_EXTRA_WEBHOOKS,
    ) -> Webhook:
        """Add an extra webhook to a session (WebhookLimitReached past `max_extra`)."""
        return await self.write(
            lambda c: webhooks.create_webhook(c, session_id, fields, now, max_extra)
        )

    async def update_webhook(
        self, webhook_id: int, fields: WebhookFields, now: float
    ) -> tuple[Webhook, bool] | None:
        """Write every field of a default or extra webhook; (it, whether activated), or None."""
        return await self.write(lambda c: webhooks.update_webhook(c, webhook_id, fields, now))

    async def delete_webhook(self, webhook_id: int) -> Webhook | None:
        """Delete a default or extra webhook and its queued deliveries; it, or None."""
        return await self.write(lambda c: webhooks.delete_webhook(c, webhook_id))

    async def webhook_health(self, webhook_ids: Sequence[int]) -> dict[int, WebhookHealth]:
        """Each webhook's failing clock and newest attempt."""
        return await self._in_reader(lambda c: webhooks.webhook_health(c, webhook_ids))

    async def activity(
        self, since: float, sessions: Collection[str] | None
    ) -> list[MinuteActivity]:
        """Deliveries finished per minute since `since` (all sessions, or these)."""
        return await self._in_reader(lambda c: activity_sql.activity(c, since, sessions))


# module-level aliases: the methods' parameters shadow these modules' names
_record = outcomes.record


def _writer_autocheckpoint(conn: sqlite3.Connection) -> int:
    """Raise the writer's automatic checkpoint to the backstop; the page size."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    return int(page_size)


def _checkpointer_pragmas(conn: sqlite3.Connection, synchronous: str) -> None:
    # a checkpoint syncs the database file as `synchronous` says; it never checkpoints
    # on its own (it writes nothing), and waits for no lock
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")


def _checkpoint_wal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()
