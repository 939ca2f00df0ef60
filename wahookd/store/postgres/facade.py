"""The PostgreSQL store: one asyncpg pool per node, one transaction per call.

Any number of nodes (wahookd processes) share one database (SPEC §10). Every write is
one transaction on a pooled connection, committed before the call returns (a 202 means
committed in PostgreSQL); concurrent calls run on their own connections and the
server's group commit shares their WAL flushes. Reads take a connection of their own.

The SQL lives in async functions taking a connection, one module per concern
(`ingest`, `claims`, `outcomes`, `webhooks`, `queue`, `stats`, `history`,
`activity`, `nodes`, `schema`), mirroring store/sqlite/; this class routes each call
and keeps what is this node's own: its id, and the fencing token of each delivery it
holds in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
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
from . import claims, history, ingest, nodes, outcomes, queue, schema, stats, webhooks
from .connection import connect, create_pool, is_storage_fault, redact_dsn

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LEASE_S = 30.0
CLOSE_TIMEOUT_S = 10.0

Conn = Any  # an asyncpg connection (asyncpg ships no type hints)


def new_node_id() -> str:
    """A node id: the host name and a random part (a restarted process is a new node)."""
    return f"{socket.gethostname()}-{secrets.token_hex(4)}"


class PgStore:
    """The delivery log in PostgreSQL. Create with `await PgStore.open(dsn, ...)`."""

    def __init__(
        self,
        pool: Any,
        node_id: str,
        lease_s: float,
        dsn: str | None = None,
    ) -> None:
        self._pool = pool
        self._dsn = dsn  # for the node's LISTEN connection (listener.py); never logged
        self.node_id = node_id
        self.lease_s = lease_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # delivery id -> the fencing token this node claimed it with
        self._leases: dict[int, int] = {}
        self._closing = False
        self.commits = 0  # transactions committed
        self.faults = 0  # refused writes and failed reads (metrics)
        # fault injection (tests, drills), as SqliteStore's: while set, each call raises
        # what it returns instead of reaching the database
        self.write_fault: Callable[[], BaseException] | None = None
        self.read_fault: Callable[[], BaseException] | None = None
        # told, after their commit, of deliveries an ordering key's turn made due
        self.on_due: Callable[[Sequence[DueItem]], None] | None = None
        # called after each commit that made deliveries due now (ingest, retry, a key's
        # turn, reclaim): the listener tells the other nodes (listener.py)
        self.after_due: Callable[[], None] | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls,
        dsn: str,
        synchronous: Literal["full", "normal"] = "full",
        *,
        lease_s: float = DEFAULT_LEASE_S,
        node_id: str | None = None,
    ) -> PgStore:
        """Connect a pool and migrate the schema (once per database, under an advisory lock).

        Raises StorageError when the server cannot be reached or the schema is newer;
        the message shows the DSN without its password.
        """
        try:
            pool = await create_pool(dsn, synchronous)
        except Exception as exc:
            raise StorageError(f"{redact_dsn(dsn)}: cannot connect: {_safe(exc, dsn)}") from None
        try:
            async with pool.acquire() as conn:
                await schema.migrate(conn)
        except StorageError:
            await pool.close()
            raise
        except Exception as exc:
            await pool.close()
            raise StorageError(f"{redact_dsn(dsn)}: {_safe(exc, dsn)}") from None
        return cls(pool, node_id or new_node_id(), lease_s, dsn)

    async def close(self) -> None:
        """Let the calls under way finish, then close the pool."""
        self._closing = True
        try:
            await _close(self._pool)
        finally:
            self._leases.clear()

    async def connect(self) -> Conn:
        """A new connection of its own, outside the pool (the node's LISTEN connection).

        Raises StorageUnavailable when the server cannot be reached.
        """
        if self._dsn is None or self._closing:
            raise StorageUnavailable("the store is closing")
        try:
            return await connect(self._dsn)
        except Exception as exc:
            if is_storage_fault(exc):
                raise StorageUnavailable(_safe(exc, self._dsn)) from None
            raise

    # ---------------------------------------------- the paths to the database

    async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run fn(conn) in one transaction; committed when this returns."""
        if self._closing:
            raise StorageUnavailable("the store is closing")
        try:
            if self.write_fault is not None:
                raise self.write_fault()
            async with self._pool.acquire() as conn:
                result = await _in_transaction(conn, fn)
        except Exception as exc:
            if is_storage_fault(exc):
                self.faults += 1
                log.warning("storage write failed: %s", exc)
                raise StorageUnavailable(str(exc)) from exc
            raise
        self.commits += 1
        return result

    async def _write_waking(
        self, fn: Callable[[Conn], Awaitable[T]], woke: Callable[[T], bool]
    ) -> T:
        """`_write(fn)`; when `woke(result)`, `after_due` hears of it once committed.

        Not a NOTIFY in the transaction itself: PostgreSQL serializes the commits of
        notifying transactions (one global lock held through the WAL flush), which would
        undo the group commit of concurrent ingests; the listener sends one coalesced
        signal after the commits instead.
        """
        result = await self._write(fn)
        if self.after_due is not None and woke(result):
            self.after_due()
        return result

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            if self.read_fault is not None:
                raise self.read_fault()
            async with self._pool.acquire() as conn:
                return await _dropping_broken(conn, fn(conn))
        except Exception as exc:
            if is_storage_fault(exc):
                # a read that fails on the connection or a busy server is a 503, not a bug
                self.faults += 1
                raise StorageUnavailable(str(exc)) from exc
            raise

    # ------------------------------------------------- raw access (tests, tools)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run a query outside any transaction; its rows as tuples."""
        return await self._read(lambda c: _tuples(c.fetch(sql, *args)))

    async def execute(self, sql: str, *args: Any) -> None:
        """Run a statement in a transaction of its own."""
        await self._write(lambda c: c.execute(sql, *args))

    # ---------------------------------------------------- the Store protocol
    # (docstrings with the invariants: wahookd/store/protocol.py)

    async def ping(self) -> None:
        """Raise unless the database answers a read."""
        await self._read(lambda c: c.fetchval("SELECT 1"))

    async def ingest(self, items: Sequence[IngestItem], now: float) -> list[IngestResult]:
        """Commit events and their deliveries, skipping duplicates (same session and id, 24 h)."""
        return await self._write_waking(
            lambda c: ingest.ingest(c, items, now),
            lambda results: any(r.deliveries for r in results),
        )

    async def load_due(
        self, after: tuple[float, int] | None, limit: int, exclude_webhooks: Collection[int]
    ) -> list[DueItem]:
        """The next `limit` queued deliveries after the key `after`, soonest first."""
        return await self._read(lambda c: claims.load_due(c, after, limit, exclude_webhooks))

    async def load_webhook_due(self, webhook_id: int, limit: int) -> list[DueItem]:
        """One webhook's soonest `limit` queued deliveries."""
        return await self._read(lambda c: claims.load_webhook_due(c, webhook_id, limit))

    def _announce(self, woken: Sequence[DueItem]) -> None:
        """Tell `on_due` of the deliveries a committed write woke (ordering.py)."""
        if woken and self.on_due is not None:
            self.on_due(woken)

    async def claim(
        self, ids: Sequence[int], now: float, limits: ClaimLimits | None = None
    ) -> list[Claimed]:
        """Move queued deliveries to `processing` under this node's lease; those claimed.

        With `limits`, no more than the webhooks' cluster-wide limits allow (limits.py).
        """
        if not ids:
            return []
        woken: list[DueItem] = []
        lease_until = now + self.lease_s
        claimed, tokens = await self._write_waking(
            lambda c: claims.claim(c, ids, now, self.node_id, lease_until, woken, limits),
            lambda _: bool(woken),
        )
        self._leases.update(tokens)
        self._announce(woken)
        return claimed

    async def record(
        self, outcomes: Sequence[Outcome], now: float, disable_after_s: float | None = None
    ) -> list[int]:
        """Log attempts and move their deliveries on (fenced by lease); webhooks auto-disabled."""
        woken: list[DueItem] = []
        disabled = await self._write_waking(
            lambda c: self._record(c, outcomes, now, disable_after_s, woken),
            lambda _: bool(woken),
        )
        self._forget(outcomes)
        self._announce(woken)
        return disabled

    async def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        claim: Sequence[int],
        now: float,
        disable_after_s: float | None = None,
        limits: ClaimLimits | None = None,
    ) -> tuple[list[int], list[Claimed]]:
        """`record()` and `claim()` in one transaction: (auto-disabled webhooks, claimed)."""

        woken: list[DueItem] = []

        async def both(c: Conn) -> tuple[list[int], list[Claimed], dict[int, int]]:
            disabled = await self._record(c, outcomes, now, disable_after_s, woken)
            if not claim:
                return disabled, [], {}
            lease_until = now + self.lease_s
            claimed, tokens = await claims.claim(
                c, claim, now, self.node_id, lease_until, woken, limits
            )
            return disabled, claimed, tokens

        disabled, claimed, tokens = await self._write_waking(both, lambda _: bool(woken))
        self._forget(outcomes)
        self._leases.update(tokens)
        self._announce(woken)
        return disabled, claimed

    def _record(
        self,
        c: Conn,
        done: Sequence[Outcome],
        now: float,
        disable_after_s: float | None,
        woken: list[DueItem],
    ) -> Awaitable[list[int]]:
        return outcomes.record(c, done, now, disable_after_s, self.node_id, self._leases, woken)

    def _forget(self, done: Sequence[Outcome]) -> None:
        for o in done:
            self._leases.pop(o.claimed.id, None)

    async def recover(self, now: float) -> int:
        """Return this node's leases and every expired one to the queue; how many.

        Never a live node's: its leases are its attempts in flight.
        """
        count, _ = await self._write_waking(
            lambda c: outcomes.recover(c, now, self.node_id, own=True), lambda r: bool(r[1])
        )
        self._leases.clear()
        return count

    # ------------------------------------------------------------------- nodes

    async def heartbeat(self, now: float) -> list[DueItem]:
        """Beat: renew this node's leases, reclaim expired ones; the deliveries now due."""
        return await self._write_waking(
            lambda c: nodes.heartbeat(
                c, self.node_id, self.host, self.pid, now, self.lease_s, list(self._leases.values())
            ),
            bool,
        )

    async def leave(self, now: float) -> list[DueItem]:
        """Hand this node's leases back at once and leave the node list (graceful stop)."""
        due = await self._write_waking(lambda c: nodes.leave(c, self.node_id, now), bool)
        self._leases.clear()
        return due

    async def cluster(self) -> list[nodes.NodeInfo]:
        """Every node, its last heartbeat and the attempts it holds."""
        return await self._read(nodes.nodes)

    # ----------------------------------------------------------------- webhooks

    async def webhooks(self) -> list[Webhook]:
        """Every webhook, session and static."""
        return await self._read(webhooks.webhooks)

    async def webhook(self, webhook_id: int) -> Webhook | None:
        """One webhook as committed, None when gone (a change another node told of)."""
        return await self._read(lambda c: webhooks.webhook(c, webhook_id))

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
        return await self._write(
            lambda c: webhooks.put_session_webhook(
                c, session_id, url, events, secret, is_active, headers, now
            )
        )

    async def delete_session_webhook(self, session_id: str) -> Webhook | None:
        """Delete a session's webhook and drop its queued deliveries."""
        return await self._write(lambda c: webhooks.delete_session_webhook(c, session_id))

    async def set_webhook_active(self, webhook_id: int, active: bool, now: float) -> None:
        """Activate or deactivate a webhook; its queued deliveries park or wake up with it."""
        await self._write(lambda c: webhooks.set_webhook_active(c, webhook_id, active, now))

    async def sync_static_webhooks(self, statics: Sequence[StaticRow], now: float) -> list[Webhook]:
        """Make the static webhooks those of the config; every webhook as committed."""
        return await self._write(lambda c: webhooks.sync_static_webhooks(c, statics, now))

    async def create_webhook(
        self,
        session_id: str,
        fields: WebhookFields,
        now: float,
        max_extra: int = MAX_EXTRA_WEBHOOKS,
    ) -> Webhook:
        """Add an extra webhook to a session (WebhookLimitReached past `max_extra`)."""
        return await self._write(
            lambda c: webhooks.create_webhook(c, session_id, fields, now, max_extra)
        )

    async def update_webhook(
        self, webhook_id: int, fields: WebhookFields, now: float
    ) -> tuple[Webhook, bool] | None:
        """Write every field of a default or extra webhook; (it, whether activated), or None."""
        return await self._write(lambda c: webhooks.update_webhook(c, webhook_id, fields, now))

    async def delete_webhook(self, webhook_id: int) -> Webhook | None:
        """Delete a default or extra webhook and its queued deliveries; it, or None."""
        return await self._write(lambda c: webhooks.delete_webhook(c, webhook_id))

    async def webhook_health(self, webhook_ids: Sequence[int]) -> dict[int, WebhookHealth]:
        """Each webhook's failing clock and newest attempt."""
        return await self._read(lambda c: webhooks.webhook_health(c, webhook_ids))

    # ------------------------------------------------------------- delivery log

    async def list_deliveries(
        self,
        session_id: str,
        state: State | None,
        event_type: str | None,
        before_id: int | None,
        limit: int,
        webhook_id: int | None = None,
    ) -> list[DeliveryRow]:
        """A session's deliveries newest first, with attempts; page with `before_id`."""
        return await self._read(
            lambda c: history.list_deliveries(
                c, session_id, state, event_type, before_id, limit, webhook_id
            )
        )

    async def get_delivery(self, session_id: str, uid: str) -> tuple[DeliveryRow, bytes] | None:
        """One delivery with its attempts and the event body; None when unknown."""
        return await self._read(lambda c: history.get_delivery(c, session_id, uid))

    async def retry_failed(
        self,
        session_id: str,
        now: float,
        uid: str | None = None,
        finished_since: float | None = None,
        webhook_id: int | None = None,
    ) -> RetryResult:
        """Failed deliveries back to pending for a new ladder run; how many, which are due."""
        return await self._write_waking(
            lambda c: history.retry_failed(
                c, session_id, now, self.node_id, uid, finished_since, webhook_id
            ),
            lambda result: bool(result.due),
        )

    async def prune_finished(self, before: float, limit: int) -> tuple[int, list[int]]:
        """Delete up to `limit` deliveries finished before `before`; (count, their event ids)."""
        return await self._write(lambda c: history.prune_finished(c, before, limit))

    async def prune_events(
        self, before: float, event_ids: Sequence[int], after_id: int, limit: int
    ) -> tuple[int, int]:
        """Delete unreferenced events received before `before`; (count, last id swept)."""
        return await self._write(
            lambda c: history.prune_events(c, before, event_ids, after_id, limit)
        )

    # ------------------------------------------------------------ queue & stats

    async def queue_counts(self, sessions: Collection[str] | None) -> dict[str, int]:
        """Queued deliveries by state, over every session or the given ones."""
        return await self._read(lambda c: queue.queue_counts(c, sessions))

    async def oldest_due_at(self) -> float | None:
        """The earliest next-attempt time of the queued deliveries (None: nothing waits)."""
        return await self._read(queue.oldest_due_at)

    async def queue_counts_by_session(self) -> dict[str, dict[str, int]]:
        """Queued deliveries by session and state (sessions with none queued are absent)."""
        return await self._read(queue.queue_counts_by_session)

    async def clear_queue(
        self, session_id: str, states: Collection[State], now: float
    ) -> dict[str, int]:
        """Delete a session's queued deliveries in the given states (never those in flight)."""
        woken: list[DueItem] = []
        removed = await self._write_waking(
            lambda c: queue.clear_queue(c, session_id, states, now, woken), lambda _: bool(woken)
        )
        self._announce(woken)
        return removed

    async def session_stats(self, session_id: str) -> SessionStats | None:
        """All-time stats of a session, None when it never finished a delivery."""
        return await self._read(lambda c: stats.session_stats(c, session_id))

    async def sessions_stats(self, sessions: Collection[str]) -> dict[str, SessionStats]:
        """All-time stats of these sessions; those that never finished a delivery are absent."""
        return await self._read(lambda c: stats.sessions_stats(c, sessions))

    async def activity(
        self, since: float, sessions: Collection[str] | None
    ) -> list[MinuteActivity]:
        """Deliveries finished per minute since `since` (all sessions, or these)."""
        return await self._read(lambda c: activity_sql.activity(c, since, sessions))


async def _in_transaction(conn: Conn, fn: Callable[[Conn], Awaitable[T]]) -> T:
    async def run() -> T:
        async with conn.transaction():
            return await fn(conn)

    return await _dropping_broken(conn, run())


async def _dropping_broken(conn: Conn, call: Awaitable[T]) -> T:
    """Await call on conn; a connection that failed with a storage fault is closed, so the
    pool opens a new one instead of handing the broken one out again."""
    try:
        return await call
    except Exception as exc:
        if is_storage_fault(exc):
            conn.terminate()
        raise


async def _tuples(rows: Awaitable[list[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await rows]


async def _close(pool: Any) -> None:
    """Close the pool gracefully, or terminate it when calls hang past CLOSE_TIMEOUT_S."""
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        pool.terminate()


def _safe(exc: BaseException, dsn: str) -> str:
    """exc's message, with the DSN's password masked should the driver have echoed it."""
    text = str(exc) or type(exc).__name__
    return text.replace(dsn, redact_dsn(dsn))
