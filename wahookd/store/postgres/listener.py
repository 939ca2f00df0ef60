"""A node's LISTEN connection: other nodes' webhook changes and due work, told at once.

One dedicated connection per node (outside the pool) listens on the two channels of
notify.py. What it hears is handled by one worker task, in order:

- a webhook changed (`wahookd_webhooks`): the webhook is read again from the database
  and handed to `on_webhook(id, webhook or None)` (WebhookService.mirror). Reading it
  back, after the notification, means the node always ends on what is committed, however
  notifications and its own changes interleave; the payload carries no field.
- `*` (static webhooks synced), and every (re)connection: every webhook is read again
  and handed to `on_resync` (WebhookService.mirror_all): while the connection was down a
  change may have been missed.
- A read during which this node changed a webhook itself (`local_version`, the
  registry's count of changes, moved) is thrown away and made again: it may predate
  that change, and mirroring it would undo it for a moment (a webhook just created
  gone from the registry, and the events posted meanwhile fanned out to nothing).
- deliveries due (`wahookd_due`, from another node): one bounded poll of the due index
  (`poll`, the heartbeat's backstop poll), at most one per MIN_POLL_S however many
  signals arrive; the 2 s backstop stays the safety net.

It also sends this node's own `wahookd_due` signal: the store calls `signal_due()` after
each commit that made deliveries due (`PgStore.after_due`), and the connection sends one
NOTIFY for all the commits since its last one, at most one per MIN_SIGNAL_S.

A dropped connection (the server restarting, a network cut; a ping every PING_S finds a
half-open one) is reconnected with a growing delay, up to MAX_BACKOFF_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ...models import Webhook
from ..types import StorageUnavailable
from . import notify
from .facade import PgStore

log = logging.getLogger(__name__)

PING_S = 5.0  # how often an idle LISTEN connection is checked
PING_TIMEOUT_S = 5.0
MIN_POLL_S = 0.05  # wake-up polls, at most one per this
MIN_SIGNAL_S = 0.01  # this node's own wake-up signals, at most one per this
RETRY_READ_S = 1.0  # a failed re-read is tried again after this
MIN_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


class Listener:
    """Listens for one node; `run()` until cancelled."""

    def __init__(
        self,
        store: PgStore,
        *,
        on_webhook: Callable[[int, Webhook | None], None],
        on_resync: Callable[[Sequence[Webhook]], None],
        poll: Callable[[], Awaitable[int]],
        local_version: Callable[[], int] = lambda: 0,
    ) -> None:
        self.store = store
        self.local_version = local_version
        self.on_webhook = on_webhook
        self.on_resync = on_resync
        self.poll = poll
        self.connections = 0  # connections made (1 + reconnects; metrics, tests)
        self.connected = asyncio.Event()
        self.mirrored = 0  # webhooks read again after a notification
        self.polls = 0  # wake-up polls run
        self.signals = 0  # wake-up signals sent
        self._changed: set[int] = set()
        self._resync = False
        self._wake = False
        self._work = asyncio.Event()
        self._to_signal = False
        self._poke = asyncio.Event()  # a signal to send, or the connection lost
        store.after_due = self.signal_due

    def signal_due(self) -> None:
        """This node committed deliveries due now: tell the others (coalesced)."""
        self._to_signal = True
        self._poke.set()

    # --------------------------------------------------- notification callbacks

    def _heard_webhook(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        webhook_id = notify.webhook_id_of(payload)
        if webhook_id is None:
            self._resync = True
        else:
            self._changed.add(webhook_id)
        self._work.set()

    def _heard_due(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload != self.store.node_id:  # this node holds its own in memory already
            self._wake = True
            self._work.set()

    # --------------------------------------------------------------- the loops

    async def run(self) -> None:
        """Stay connected and listening; the worker handles what is heard."""
        worker = asyncio.create_task(self._worker(), name="wahookd-listener-worker")
        backoff = MIN_BACKOFF_S
        try:
            while True:
                try:
                    await self._listen()
                    backoff = MIN_BACKOFF_S  # it was up: reconnect at once
                except (StorageUnavailable, OSError, TimeoutError) as exc:
                    log.warning("LISTEN connection unavailable: %s", _first_line(exc))
                except Exception as exc:
                    # asyncpg's own errors (the server shutting down, a lost connection)
                    log.warning("LISTEN connection lost: %s", _first_line(exc))
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _listen(self) -> None:
        """One connection's life: listen, resync, ping until it is lost."""
        conn = await self.store.connect()
        lost = asyncio.Event()

        def on_lost(_conn: Any) -> None:
            lost.set()
            self._poke.set()

        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(notify.WEBHOOKS, self._heard_webhook)
            await conn.add_listener(notify.DUE, self._heard_due)
            self.connections += 1
            if self.connections > 1:
                log.info("LISTEN connection back; reading every webhook again")
            # whatever changed before LISTEN began (or while it was down) was not heard
            self._resync = self._wake = True
            self._work.set()
            self.connected.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), PING_S)
                self._poke.clear()
                if lost.is_set():
                    break
                if self._to_signal:
                    # one statement of its own for every commit since the last one
                    self._to_signal = False
                    async with asyncio.timeout(PING_TIMEOUT_S):
                        await notify.due(conn, self.store.node_id)
                    self.signals += 1
                    await asyncio.sleep(MIN_SIGNAL_S)
                else:
                    await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)  # still there?
            log.warning("LISTEN connection closed by the server")
        finally:
            conn.terminate()

    async def _worker(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            try:
                await self._handle()
            except StorageUnavailable as exc:
                log.info("reading what another node changed failed, trying again: %s", exc)
                self._work.set()
                await asyncio.sleep(RETRY_READ_S)
            except Exception:
                log.exception("handling a notification failed")
                await asyncio.sleep(RETRY_READ_S)

    async def _handle(self) -> None:
        """Mirror the webhooks heard of, then poll once if woken (failures keep them due)."""
        # each read begins after what it answers was heard: a change heard during a read
        # is read again, so the node always ends on the newest commit
        if self._resync:
            self._resync = False
            self._changed.clear()  # all of them are read again
            before = self.local_version()
            try:
                hooks = await self.store.webhooks()
            except BaseException:
                self._resync = True
                raise
            if self.local_version() != before:
                self._resync = True  # may predate a change of this node's: read again
                self._work.set()
                return
            self.on_resync(hooks)
        while self._changed:
            webhook_id = min(self._changed)
            self._changed.discard(webhook_id)
            before = self.local_version()
            try:
                hook = await self.store.webhook(webhook_id)
            except BaseException:
                self._changed.add(webhook_id)
                raise
            if self.local_version() != before:
                self._changed.add(webhook_id)  # may predate a change of this node's
                continue
            self.mirrored += 1
            self.on_webhook(webhook_id, hook)
        if self._wake:
            self._wake = False
            try:
                await self.poll()
            except BaseException:
                self._wake = True
                raise
            self.polls += 1
            await asyncio.sleep(MIN_POLL_S)  # signals arriving meanwhile: one poll for all


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
