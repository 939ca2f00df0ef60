"""A node's heartbeat loop: stay listed, keep its leases, take back the dead nodes' work.

Every `lease / 3` (so two beats may be missed before a lease runs out) the node renews
the leases of its attempts in flight and reclaims every expired lease in the cluster;
the reclaimed deliveries are due at once and handed to this node's scheduler
(`on_due`). Between beats, every BACKSTOP_S, it also hands its scheduler the deliveries
due now that no node holds in memory for sure: those another node had queued when it
died, or made due after this node's scheduler last read the index (a bounded poll: one
index range read of at most BACKSTOP_ROWS rows). Claims decide who gets each one, so a
delivery another live node also holds is still attempted once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ...clock import Clock
from ...models import DueItem
from ..types import StorageUnavailable
from .facade import PgStore

log = logging.getLogger(__name__)

BACKSTOP_S = 2.0  # the longest a delivery due now waits for a node that knows it
BACKSTOP_ROWS = 256


class Heartbeat:
    """Beats for one node; `run()` loops until cancelled, `beat()` and `poll()` do one round."""

    def __init__(
        self, store: PgStore, clock: Clock, on_due: Callable[[Sequence[DueItem]], None]
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_due = on_due
        self.beats = 0
        self.reclaimed = 0  # deliveries taken back from expired leases (metrics, tests)

    @property
    def interval_s(self) -> float:
        """Time between beats: a third of the lease."""
        return self.store.lease_s / 3

    async def beat(self) -> int:
        """One beat: renew, reclaim; how many deliveries were reclaimed."""
        due = await self.store.heartbeat(self.clock.time())
        self.beats += 1
        if due:
            self.reclaimed += len(due)
            log.warning(
                "took back %d attempts whose node stopped beating (lease expired)", len(due)
            )
            self.on_due(due)
        return len(due)

    async def poll(self) -> int:
        """Hand the scheduler the deliveries due now (the backstop); how many were read."""
        now = self.clock.time()
        rows = await self.store.load_due(None, BACKSTOP_ROWS, ())
        due = [row for row in rows if row.due_at <= now]
        if due:
            self.on_due(due)
        return len(due)

    async def run(self) -> None:
        """Beat every interval and poll between beats until cancelled."""
        next_beat = self.clock.monotonic()
        while True:
            try:
                if self.clock.monotonic() >= next_beat:
                    next_beat = self.clock.monotonic() + self.interval_s
                    await self.beat()
                await self.poll()
            except StorageUnavailable as exc:
                log.warning("heartbeat failed, storage unavailable: %s", exc)
            except Exception:
                # a bug here must not stop the beats: the node would lose its leases
                log.exception("heartbeat failed; trying again")
            await asyncio.sleep(min(BACKSTOP_S, self.interval_s))
