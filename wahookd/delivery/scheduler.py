"""Decides which delivery goes next, within the concurrency limits.

Memory holds a bounded window of the soonest-due deliveries; SQLite holds
all of them. The window is kept by one rule: every queued delivery whose
(next_attempt_at, id) is at or before the horizon is in memory (or in
flight), except for webhooks in *overflow*. The horizon is the key of the last
row the refill loaded, or infinity when the refill found no more rows.

A webhook gets its own lane. When a lane holds `lane_cap` deliveries (a dead
receiver behind a long backlog), it overflows: it keeps only its soonest
`lane_keep` (a few rounds of attempts), stops taking new ones, the global
refill skips it, and it reloads its own soonest deliveries from the index as
it drains. So a webhook's backlog costs at most `lane_cap` items of memory,
`lane_keep` once it overflows, and never pushes other webhooks' deliveries out
of the window.

Due deliveries wait in their lane ordered by id (older events first). A freed
slot goes to the lane with the fewest attempts in flight, then to the one with
the oldest due delivery; each lane is limited to `per_webhook_concurrency`
attempts in flight, all together to `concurrency`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from .. import audit as audit_by
from ..audit import audit
from ..clock import Clock
from ..config import DeliveryConfig
from ..models import AttemptResult, Claimed, DueItem, Outcome, OutcomeKind, Webhook
from ..registry import Registry
from ..store import StorageUnavailable, Store
from ..units import format_duration
from . import retry
from .sender import Sender

# the name operators filter attempt lines by; kept when the module moved to delivery/
log = logging.getLogger("wahookd.scheduler")

Key = tuple[float, int]
RECORD_GRACE_S = 10.0  # at shutdown, how long finished attempts' outcomes may take to commit
INFINITY: Key = (math.inf, 0)


@dataclass
class Lane:
    """One webhook's deliveries in memory."""

    webhook_id: int
    ready: list[int] = field(default_factory=list)  # heap of due delivery ids
    ids: set[int] = field(default_factory=set)  # in memory (due or not), not in flight
    inflight: int = 0
    overflow: bool = False
    reloading: bool = False

    @property
    def count(self) -> int:
        """Deliveries of this webhook in memory."""
        return len(self.ids)


class Scheduler:
    """Claims due deliveries and runs their attempts. `await run()` until `stop()`."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        sender: Sender,
        config: DeliveryConfig,
        clock: Clock,
        *,
        window: int = 10_000,
        lane_cap: int = 2_000,
        claim_batch: int = 256,
        rng: random.Random | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_claimed: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.sender = sender
        self.config = config
        self.clock = clock
        self.window = window
        self.lane_cap = lane_cap
        self.claim_batch = claim_batch
        self.rng = rng or random.Random()
        self.on_outcome = on_outcome
        # called with each claimed delivery's lag: how late its attempt starts (metrics)
        self.on_claimed = on_claimed
        self.running = False
        self._items: dict[int, DueItem] = {}  # queued deliveries in memory
        self._ready_ids: set[int] = set()  # of those, the ones already due
        self._inflight: set[int] = set()
        # slots of finished attempts whose outcomes are being committed and which no
        # new delivery took over: free only once the commit is in
        self._reserved = 0
        self._timers: list[tuple[float, int]] = []  # heap of (due_at, id)
        self._lanes: dict[int, Lane] = {}
        self._cursor: Key | None = None  # last key the global refill loaded
        self._exhausted = False  # the last global refill found every row
        self._refilling = False
        self._deferred: list[DueItem] = []  # pushes that arrived during a refill
        self._tasks: set[asyncio.Task[object]] = set()
        self.auto_disabled = 0  # webhooks turned off for failing too long (metrics)
        self.backoffs = 0  # rounds that backed off because storage was unavailable (metrics)
        self._wake = asyncio.Event()
        self._claiming = True
        self._stopped = asyncio.Event()
        self.started = asyncio.Event()
        self._unrecorded: list[Outcome] = []  # refused by storage: the loop retries them
        self._outcomes: list[Outcome] = []  # finished attempts waiting for _record_outcomes
        self._recorder: asyncio.Task[None] | None = None
        self._backoff_s = 0.0

    # ----------------------------------------------------------------- inputs

    @property
    def horizon(self) -> Key:
        """Every queued delivery with a key at or before this is in memory."""
        if self._exhausted:
            return INFINITY
        return self._cursor if self._cursor is not None else (-math.inf, 0)

    @property
    def inflight(self) -> int:
        """Attempts in flight."""
        return len(self._inflight)

    @property
    def in_memory(self) -> int:
        """Queued deliveries held in memory."""
        return len(self._items)

    def push(self, items: Iterable[DueItem]) -> None:
        """Tell the scheduler about deliveries just committed as queued."""
        for item in items:
            self._add(item, from_refill=False)
        self._wake.set()

    def webhook_changed(self, webhook: Webhook | None, webhook_id: int) -> None:
        """A webhook was edited, deactivated, activated or deleted: resync its lane."""
        lane = self._lanes.get(webhook_id)
        if lane is not None:
            self._drop_lane_items(lane)
        if webhook is not None and webhook.is_active:
            # its queued deliveries are reloaded from the index by the lane itself
            self._lane(webhook_id).overflow = True
        elif lane is not None:
            self._drop_if_idle(lane)
        self._wake.set()

    def stop_claiming(self) -> None:
        """Stop starting attempts (shutdown); those in flight go on."""
        self._claiming = False
        self._wake.set()

    async def drain(self, grace_s: float) -> int:
        """Wait up to grace_s for attempts in flight, cancel the rest; how many were cancelled.

        Then wait for the outcomes of the finished ones to be committed (Store.recover()
        would otherwise queue those deliveries again).
        """
        self.stop_claiming()
        if self.running:
            await self._stopped.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        cancelled = 0
        while True:
            if attempts := self._attempts_in_flight():
                remaining = deadline - loop.time()
                if remaining > 0:
                    await asyncio.wait(attempts, timeout=remaining)
                    continue
                for attempt in attempts:
                    attempt.cancel()
                await asyncio.wait(attempts)
                cancelled += len(attempts)
            elif self._recorder is not None:
                await asyncio.wait({self._recorder}, timeout=RECORD_GRACE_S)
                if self._recorder is not None and loop.time() > deadline + RECORD_GRACE_S:
                    self._recorder.cancel()  # storage hangs: recover() will queue them again
                    await asyncio.wait({self._recorder})
            else:
                return cancelled

    def _attempts_in_flight(self) -> set[asyncio.Future[Any]]:
        return {task for task in self._tasks if task is not self._recorder}

    # ------------------------------------------------------------------- loop

    async def run(self) -> None:
        """Run until stop_claiming(): refill, claim due deliveries, start attempts."""
        self.running = True
        self.started.set()
        try:
            while self._claiming:
                progressed = await self.step()
                # a failed round already slept its backoff: try again, as nothing
                # else may ever wake the loop (an outcome left to record, say)
                if progressed or self._backoff_s or not self._claiming:
                    continue
                await self._sleep(self._next_wake())
        finally:
            self.running = False
            self._stopped.set()

    async def step(self) -> bool:
        """One round of the loop; True when it started attempts or loaded rows."""
        try:
            if self._unrecorded:
                outcomes, self._unrecorded = self._unrecorded, []
                try:
                    await self._record(outcomes)
                except StorageUnavailable:
                    # still unwritten: keep them (ahead of any failed since) for the next round
                    self._unrecorded[:0] = outcomes
                    raise
                # their rows are no longer `processing`: the slots they held are free
                self._reserved -= len(outcomes)
            loaded = await self._refill()
            started = await self._claim_due()
        except StorageUnavailable as exc:
            self._backoff_s = min(max(self._backoff_s * 2, 0.5), 30.0)
            self.backoffs += 1
            log.warning("storage unavailable, scheduler backs off %.1fs: %s", self._backoff_s, exc)
            await self._sleep(self._backoff_s)
            return False
        self._backoff_s = 0.0
        return loaded or started

    async def run_until_idle(self, max_rounds: int = 10_000) -> None:
        """Test entry point: step and await attempts until nothing is due now."""
        for _ in range(max_rounds):
            progressed = await self.step()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
                continue
            if not progressed:
                return
        raise RuntimeError("scheduler did not become idle")

    @property
    def _free_slots(self) -> int:
        return self.config.concurrency - len(self._inflight) - self._reserved

    def _next_wake(self) -> float | None:
        if self._free_slots <= 0:
            return None  # nothing can start before a slot frees, and that wakes the loop
        while self._timers and self._timers[0][1] not in self._items:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - self.clock.time())

    async def _sleep(self, timeout_s: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    # ----------------------------------------------------------------- window

    def _lane(self, webhook_id: int) -> Lane:
        lane = self._lanes.get(webhook_id)
        if lane is None:
            lane = self._lanes[webhook_id] = Lane(webhook_id)
        return lane

    def _add(self, item: DueItem, *, from_refill: bool) -> None:
        if item.id in self._items or item.id in self._inflight:
            return
        if not from_refill and self._refilling:
            # a refill or lane reload is reading the index: its read may predate this
            # commit, so the item waits and is added once the read is in
            self._deferred.append(item)
            return
        lane = self._lane(item.webhook_id)
        if lane.overflow:
            return  # the lane reloads it from the index
        if not from_refill and (item.due_at, item.id) > self.horizon:
            return  # the global refill will load it in its turn
        if lane.count >= self.lane_cap:
            self._overflow(lane)
            return
        self._items[item.id] = item
        lane.ids.add(item.id)
        heapq.heappush(self._timers, (item.due_at, item.id))

    @property
    def lane_keep(self) -> int:
        """How many deliveries an overflowed lane keeps: enough for a few rounds of attempts."""
        return min(self.lane_cap, max(64, 4 * self.config.per_webhook_concurrency))

    def _overflow(self, lane: Lane) -> None:
        """Stop a lane taking deliveries; it keeps its soonest `lane_keep` and reloads later.

        So many webhooks with long backlogs cost `lane_keep` entries each, not `lane_cap`.
        """
        lane.overflow = True
        if lane.count <= self.lane_keep:
            return
        soonest = sorted((self._items[i].due_at, i) for i in lane.ids)
        for _, item_id in soonest[self.lane_keep :]:
            self._forget(item_id)
        lane.ids = set(lane.ids)  # a set never shrinks its table by itself

    def _forget(self, item_id: int) -> DueItem | None:
        item = self._items.pop(item_id, None)
        if item is not None:
            self._ready_ids.discard(item_id)
            self._lanes[item.webhook_id].ids.discard(item_id)
        return item

    def _drop_lane_items(self, lane: Lane) -> None:
        for item_id in list(lane.ids):
            self._forget(item_id)
        lane.ready.clear()
        lane.overflow = False

    async def _refill(self) -> bool:
        self._compact_timers()
        loaded = False
        for lane in [ln for ln in self._lanes.values() if ln.overflow and not ln.reloading]:
            if lane.count < self.lane_keep // 2:
                loaded |= await self._reload_lane(lane)
        windowed = len(self._items) - sum(ln.count for ln in self._lanes.values() if ln.overflow)
        if self._exhausted or windowed >= self.window // 2:
            self._trim()
            return loaded
        limit = self.window - windowed
        overflowed = [ln.webhook_id for ln in self._lanes.values() if ln.overflow]
        self._refilling = True
        try:
            rows = await self.store.load_due(self._cursor, limit, overflowed)
        finally:
            self._refilling = False
        for row in rows:
            self._add(row, from_refill=True)
        if rows:
            self._cursor = (rows[-1].due_at, rows[-1].id)
        self._exhausted = len(rows) < limit
        self._replay_deferred()
        return bool(rows)

    async def _reload_lane(self, lane: Lane) -> bool:
        lane.reloading = True
        self._refilling = True
        try:
            limit = lane.count + self.lane_keep
            rows = await self.store.load_webhook_due(lane.webhook_id, limit)
        finally:
            lane.reloading = False
            self._refilling = False
        if not lane.overflow:  # resynced while we were loading: start again later
            self._replay_deferred()
            return False
        lane.overflow = False
        for row in rows:
            self._add(row, from_refill=True)
        if len(rows) >= limit:
            self._overflow(lane)
        self._replay_deferred()
        return bool(rows)

    def _replay_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for item in deferred:
            self._add(item, from_refill=False)

    def _compact_timers(self) -> None:
        """Drop timer entries of forgotten deliveries once they outnumber the live ones."""
        if len(self._timers) <= 2 * len(self._items) + 1024:
            return
        self._timers = [
            (it.due_at, it.id) for it in self._items.values() if it.id not in self._ready_ids
        ]
        heapq.heapify(self._timers)

    def _trim(self) -> None:
        """Keep the window bounded when pushes grew it past twice its size."""
        overflowed = sum(ln.count for ln in self._lanes.values() if ln.overflow)
        if len(self._items) - overflowed <= 2 * self.window:
            return
        windowed = [it for it in self._items.values() if not self._lanes[it.webhook_id].overflow]
        windowed.sort(key=lambda it: (it.due_at, it.id))
        for item in windowed[self.window :]:
            if item.id not in self._ready_ids:
                self._forget(item.id)
        kept = [it for it in windowed[: self.window]]
        if kept:
            self._cursor = (kept[-1].due_at, kept[-1].id)
            self._exhausted = False

    # --------------------------------------------------------------- claiming

    def _promote(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            due, item_id = heapq.heappop(self._timers)
            item = self._items.get(item_id)
            # a stale entry: forgotten since, or re-added with another due time
            if item is None or item.due_at != due or item_id in self._ready_ids:
                continue
            self._ready_ids.add(item_id)
            heapq.heappush(self._lanes[item.webhook_id].ready, item_id)

    def _pick(self) -> list[DueItem]:
        free = min(self._free_slots, self.claim_batch)
        per_lane = self.config.per_webhook_concurrency
        # Fewest attempts in flight first, then the oldest due delivery: a freed slot
        # goes to a webhook that has none running before another backlogged one, so
        # many webhooks with due retries cannot hold every slot against a healthy one.
        heads: list[tuple[int, int, int]] = []
        for lane in self._lanes.values():
            self._clean_head(lane)
            if lane.ready and lane.inflight < per_lane:
                heads.append((lane.inflight, lane.ready[0], lane.webhook_id))
        heapq.heapify(heads)
        picked: list[DueItem] = []
        while heads and len(picked) < free:
            _, _, webhook_id = heapq.heappop(heads)
            lane = self._lanes[webhook_id]
            item = self._forget(heapq.heappop(lane.ready))
            assert item is not None
            lane.inflight += 1
            self._inflight.add(item.id)
            picked.append(item)
            self._clean_head(lane)
            if lane.ready and lane.inflight < per_lane:
                heapq.heappush(heads, (lane.inflight, lane.ready[0], webhook_id))
        return picked

    def _clean_head(self, lane: Lane) -> None:
        while lane.ready and lane.ready[0] not in self._ready_ids:
            heapq.heappop(lane.ready)

    async def _claim_due(self) -> bool:
        if not self._claiming or self._free_slots <= 0:
            return False
        now = self.clock.time()
        self._promote(now)
        picked = self._pick()
        if not picked:
            return False
        try:
            claimed = await self.store.claim([item.id for item in picked], now)
        except BaseException:
            self._unpick(picked)
            raise
        self._start(picked, claimed, now)
        return True

    def _unpick(self, picked: list[DueItem]) -> None:
        """Picked deliveries whose claim did not commit go back to the window."""
        for item in picked:
            self._release(item.id, item.webhook_id)
            self._add(item, from_refill=True)

    def _start(self, picked: list[DueItem], claimed: list[Claimed], now: float) -> None:
        """Start the attempts of the claimed deliveries; free the slots of the others."""
        got = {c.id for c in claimed}
        for item in picked:
            if item.id not in got:  # deleted, parked or claimed elsewhere meanwhile
                self._release(item.id, item.webhook_id)
            elif self.on_claimed is not None:
                self.on_claimed(max(0.0, now - item.due_at))
        for c in claimed:
            task = asyncio.create_task(self._attempt(c), name=f"wahookd-attempt-{c.id}")
            # keep a hard reference or the task may be garbage-collected mid-attempt
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _release(self, item_id: int, webhook_id: int) -> None:
        self._inflight.discard(item_id)
        lane = self._lanes.get(webhook_id)
        if lane is not None:
            lane.inflight -= 1
            self._drop_if_idle(lane)
        self._wake.set()

    def _drop_if_idle(self, lane: Lane) -> None:
        if lane.inflight == 0 and lane.count == 0 and not lane.overflow and not lane.reloading:
            del self._lanes[lane.webhook_id]

    # ---------------------------------------------------------------- attempts

    async def _attempt(self, claimed: Claimed) -> None:
        webhook = self.registry.get(claimed.webhook_id)
        started_at = self.clock.time()
        try:
            if webhook is None:
                result = AttemptResult(None, "webhook no longer exists", 0, "", None, "refused")
            else:
                result = await self._send(webhook, claimed, started_at)
        except BaseException:
            # Cancelled mid-attempt (shutdown): the row stays `processing` and
            # Store.recover() queues it again.
            self._release(claimed.id, claimed.webhook_id)
            raise
        self._conclude(claimed, webhook, result, started_at)

    def _conclude(
        self, claimed: Claimed, webhook: Webhook | None, result: AttemptResult, started_at: float
    ) -> None:
        outcome = self.decide(claimed, result, started_at, self.clock.time())
        if webhook is None:
            outcome = msgspec.structs.replace(outcome, kind="failed", next_attempt_at=None)
        # The slot stays taken until the outcome is committed, so the deliveries
        # `processing` at a crash never number more than `concurrency`: a crash
        # repeats at most that many attempts.
        self._outcomes.append(outcome)
        if self._recorder is None:
            self._recorder = task = asyncio.create_task(
                self._record_outcomes(), name="wahookd-outcomes"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _record_outcomes(self) -> None:
        """Commit finished attempts, all that finished meanwhile in one write; reuse their slots.

        The same transaction claims the due deliveries that take the freed slots over,
        so a slot goes from one attempt to the next in one commit, and the deliveries
        `processing` never number more than `concurrency`.
        """
        try:
            while self._outcomes:
                batch, self._outcomes = self._outcomes, []
                await self._record_and_claim(batch)
        finally:
            self._recorder = None
            if self._outcomes:  # cancelled (shutdown) with some left: the loop may record them
                for outcome in self._outcomes:
                    self._release(outcome.claimed.id, outcome.claimed.webhook_id)
                self._hold_unrecorded(self._outcomes)
                self._outcomes = []

    async def _record_and_claim(self, batch: list[Outcome]) -> None:
        # the batch's slots pass to the deliveries picked here; the rest stay reserved
        # until the commit is in
        for outcome in batch:
            self._release(outcome.claimed.id, outcome.claimed.webhook_id)
        now = self.clock.time()
        picked: list[DueItem] = []
        if self._claiming:
            self._promote(now)
            picked = self._pick()
        reserved = len(batch) - len(picked)
        self._reserved += reserved
        try:
            disabled, claimed = await self._commit(batch, [item.id for item in picked], now)
        except StorageUnavailable:
            self._unpick(picked)
            self._hold_unrecorded(batch)  # their rows stay `processing`: slots stay taken
            return
        except Exception:
            # a bug: the rows stay `processing` until Store.recover() at the next start
            log.exception("recording %d attempt outcomes failed", len(batch))
            self._unpick(picked)
            return
        finally:
            self._reserved -= reserved
            self._wake.set()
        self._after_commit(batch, disabled, now)
        for outcome in batch:
            self._requeue(outcome, now)
        if self._claiming:
            self._start(picked, claimed, now)
        else:
            # stopped meanwhile (shutdown): start nothing; the claimed rows stay
            # `processing` and Store.recover() queues them again, attempt number unchanged
            for item in picked:
                self._release(item.id, item.webhook_id)

    def _hold_unrecorded(self, outcomes: list[Outcome]) -> None:
        """Outcomes storage refused, their slots released: the loop records them later.

        Until then their rows stay `processing`, so their slots stay taken (reserved),
        or a crash meanwhile could repeat more than `concurrency` attempts.
        """
        self._reserved += len(outcomes)
        self._unrecorded.extend(outcomes)
        self._wake.set()

    async def _commit(
        self, outcomes: list[Outcome], claim: list[int], now: float
    ) -> tuple[list[int], list[Claimed]]:
        """Commit outcomes, and claim these ids in the same transaction."""
        disable_after = self.config.disable_after_s or None  # "0s": never auto-disable
        if claim:
            return await self.store.record_and_claim(outcomes, claim, now, disable_after)
        return await self.store.record(outcomes, now, disable_after), []

    def _after_commit(self, outcomes: list[Outcome], disabled: list[int], now: float) -> None:
        """Auto-disable, log and count committed outcomes; a bug here loses no delivery."""
        try:
            for webhook_id in disabled:
                self._auto_disabled(webhook_id, now)
            for outcome in outcomes:
                _log_attempt(outcome)
                if self.on_outcome is not None:
                    self.on_outcome(outcome)
        except Exception:
            log.exception("after recording %d attempt outcomes", len(outcomes))

    async def _send(self, webhook: Webhook, claimed: Claimed, started_at: float) -> AttemptResult:
        """The attempt; a bug in it is a failed attempt, not a delivery stuck `processing`."""
        try:
            return await self.sender.attempt(webhook, claimed, started_at)
        except Exception:
            log.exception("attempt %s #%d crashed", claimed.uid, claimed.attempt)
            return AttemptResult(None, "internal error in wahookd", 0, "", None, "network")

    def decide(
        self, claimed: Claimed, result: AttemptResult, started_at: float, now: float
    ) -> Outcome:
        """Map an attempt's result to what happens to the delivery next."""
        kind: OutcomeKind
        next_at: float | None = None
        if result.ok:
            kind = "delivered"
        elif result.status_code == 410:
            kind = "gone"
        else:
            next_at = retry.next_attempt_at(
                attempts_made=claimed.ladder_position,
                schedule_s=self.config.retry_schedule_s,
                now=now,
                retry_after_s=result.retry_after_s,
                jitter=self.config.retry_jitter,
                rng=self.rng,
            )
            kind = "retry" if next_at is not None else "failed"
        return Outcome(claimed, started_at, result, kind, next_at)

    async def _record(self, outcomes: list[Outcome]) -> None:
        """Commit outcomes the recorder could not (storage was down) and requeue retries."""
        now = self.clock.time()
        disabled, _ = await self._commit(outcomes, [], now)
        self._after_commit(outcomes, disabled, now)
        for outcome in outcomes:
            self._requeue(outcome, now)
        self._wake.set()

    def _auto_disabled(self, webhook_id: int, now: float) -> None:
        self.auto_disabled += 1
        hook = self.registry.get(webhook_id)
        if hook is None:
            return
        # updated_at as the store set it in the same commit: it shows when it was disabled
        self.registry.put(replace(hook, is_active=False, updated_at=now))
        self.webhook_changed(None, webhook_id)
        failing_for = format_duration(self.config.disable_after_s)
        log.warning(
            "webhook for session %s disabled: attempts failed with no success for %s;"
            " its deliveries wait until it is re-enabled",
            hook.session,
            failing_for,
        )
        audit(
            "webhook.disable",
            by=audit_by.SYSTEM,
            session=hook.session,
            webhook=webhook_id,
            details=f"auto-disabled: attempts failed with no success for {failing_for}",
        )

    def _requeue(self, outcome: Outcome, now: float) -> None:
        c = outcome.claimed
        hook = self.registry.get(c.webhook_id)
        if outcome.kind == "retry" and outcome.next_attempt_at is not None:
            if hook is not None and hook.is_active:  # else the store parked it
                self._add(DueItem(outcome.next_attempt_at, c.id, c.webhook_id), from_refill=False)
        elif outcome.kind == "gone" and hook is not None:
            if hook.is_active:  # the first 410 of a batch turned it off
                audit(
                    "webhook.disable",
                    by=audit_by.SYSTEM,
                    session=hook.session,
                    webhook=c.webhook_id,
                    details=f"the receiver answered 410 Gone to {c.uid}",
                )
            self.registry.put(replace(hook, is_active=False, updated_at=now))
            self.webhook_changed(None, c.webhook_id)
        self._wake.set()


def _log_attempt(outcome: Outcome) -> None:
    """One info line per finished attempt; never the URL, headers or bodies (secrets).

    It names the answer ("HTTP 503") or why there was none ("connection refused"), with the
    text the attempt log stores (attempt_errors.py), so the two always agree.
    """
    c, r = outcome.claimed, outcome.result
    if r.error is not None:
        result = r.error
    elif r.status_code is not None:
        result = f"HTTP {r.status_code}"
    else:
        result = r.error_class
    log.info(
        "attempt %s #%d %s %s: %s in %dms, %s",
        c.uid,
        c.attempt,
        c.session_id,
        c.event_type,
        result,
        r.duration_ms,
        outcome.kind,
        extra={
            "delivery": c.uid,
            "session": c.session_id,
            "event": c.event_type,
            "attempt": c.attempt,
            "status": r.status_code,
            "ms": r.duration_ms,
            "outcome": outcome.kind,
            "error_class": r.error_class,
            "error": r.error,
        },
    )
