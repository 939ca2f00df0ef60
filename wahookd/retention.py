"""Retention: prune finished deliveries older than `storage.keep_finished`.

Deliveries that ended `delivered` or `failed` more than keep_finished ago go,
with their attempts; then their events, once nothing refers to them and the
24 h idempotency window has passed. Stats live in their own table and stay.

Each batch is one small operation in the store's group commit, and the pruner
yields between batches, so ingest never waits behind a big delete.
"""

from __future__ import annotations

import asyncio
import logging

from .clock import Clock
from .store import IDEMPOTENCY_WINDOW_S, StorageUnavailable, Store

log = logging.getLogger(__name__)

BATCH = 500  # rows per transaction: a few milliseconds of work
PAUSE_S = 0.01  # between batches, so other writes get their turn
INTERVAL_S = 60.0  # between pruning rounds
REWIND_S = 86400.0  # how often the event sweep starts again from the first event


class Pruner:
    """Deletes what retention no longer keeps; `run()` loops, `prune()` does one round."""

    def __init__(self, store: Store, clock: Clock, keep_finished_s: float) -> None:
        self.store = store
        self.clock = clock
        self.keep_finished_s = keep_finished_s
        self._swept_to = 0  # events up to this id have been swept once
        self._swept_from_start_at = clock.time()

    async def prune(self, max_batches: int = 1_000_000) -> tuple[int, int]:
        """One round: (deliveries deleted, events deleted)."""
        now = self.clock.time()
        if now - self._swept_from_start_at > REWIND_S:
            # events skipped because a delivery still needed them may be free by now
            # (the delivery was cleared, not pruned): sweep them again once a day
            self._swept_to, self._swept_from_start_at = 0, now
        before = now - self.keep_finished_s
        events_before = min(before, now - IDEMPOTENCY_WINDOW_S)
        deliveries = events = 0
        for _ in range(max_batches):
            count, event_ids = await self.store.prune_finished(before, BATCH)
            deliveries += count
            gone, _ = await self.store.prune_events(events_before, event_ids, 0, 0)
            events += gone
            if count < BATCH:
                break
            await asyncio.sleep(PAUSE_S)
        for _ in range(max_batches):
            start = self._swept_to
            gone, self._swept_to = await self.store.prune_events(events_before, (), start, BATCH)
            events += gone
            if self._swept_to == start:
                break
            await asyncio.sleep(PAUSE_S)
        return deliveries, events

    async def run(self, interval_s: float = INTERVAL_S) -> None:
        """Prune every interval until cancelled; storage faults wait for the next round."""
        while True:
            try:
                deliveries, events = await self.prune()
            except StorageUnavailable as exc:
                log.warning("pruning skipped, storage unavailable: %s", exc)
            except Exception:
                # a bug here must not end pruning for good, nor break the shutdown
                log.exception("pruning failed; trying again in %.0fs", interval_s)
            else:
                if deliveries or events:
                    log.info("pruned %d finished deliveries and %d events", deliveries, events)
            await asyncio.sleep(interval_s)
