"""The scheduler loop: refill the window, claim due deliveries, start their attempts.

Thin: what is in memory and what goes next is the window's (`window.py`, pure); what
a finished attempt does to its delivery is `transition.py`'s; committing outcomes and
holding their slots until then is the recorder's (`recorder.py`). At most
`concurrency` attempts are in flight, at most `per_webhook_concurrency` to one webhook.
Every claim hands the store the per-webhook limits (`ClaimLimits`): with several nodes
the store keeps them cluster-wide, and the ids it held back go back to the window, their
lane waiting (`Window.defer`) instead of being picked again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from typing import Any

from ..clock import Clock
from ..config import DeliveryConfig
from ..models import AttemptResult, Claimed, DueItem, Outcome, Webhook
from ..registry import Registry
from ..store import StorageUnavailable, Store
from ..store.protocol import ClaimLimits
from ..webhooks import WebhookService
from .recorder import Recorder
from .sender import Sender, internal_error
from .window import Window

# the name operators filter attempt lines by; kept when the module moved to delivery/
log = logging.getLogger("wahookd.scheduler")

RECORD_GRACE_S = 10.0  # at shutdown, how long finished attempts' outcomes may take to commit


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
        webhooks: WebhookService | None = None,
    ) -> None:
        self.store = store
        # deliveries an ordering key's turn made due (a head finished) come back here
        store.on_due = self.push
        self.registry = registry
        # webhook changes go through the one owner; the scheduler hears of each one
        self.webhooks = webhooks or WebhookService(store, registry)
        self.webhooks.notify = self.webhook_changed
        self.sender = sender
        self._config = config
        self.clock = clock
        self.claim_batch = claim_batch
        self.rng = rng or random.Random()
        self.on_outcome = on_outcome
        # called with each claimed delivery's lag: how late its attempt starts (metrics)
        self.on_claimed = on_claimed
        self.window = Window(window, lane_cap, config.per_webhook_concurrency, self._rate_of)
        self.recorder = Recorder(self)
        self.running = False
        self.backoffs = 0  # rounds that backed off because storage was unavailable (metrics)
        self._tasks: set[asyncio.Task[None]] = set()
        # attempts on pooled connections, running on callbacks (Sender.begin): no task
        self._answers: dict[int, asyncio.Future[AttemptResult]] = {}
        self._wake = asyncio.Event()
        self._claiming = True
        self._stopped = asyncio.Event()
        self.started = asyncio.Event()
        self._backoff_s = 0.0

    # ----------------------------------------------------------------- inputs

    @property
    def config(self) -> DeliveryConfig:
        """The delivery policy; a reload (SIGHUP) sets a new one."""
        return self._config

    @config.setter
    def config(self, config: DeliveryConfig) -> None:
        self._config = config
        self.window.per_lane = config.per_webhook_concurrency

    @property
    def inflight(self) -> int:
        """Attempts in flight."""
        return self.window.inflight

    @property
    def in_memory(self) -> int:
        """Queued deliveries held in memory."""
        return self.window.in_memory

    @property
    def auto_disabled(self) -> int:
        """Webhooks turned off for failing too long (metrics)."""
        return self.recorder.auto_disabled

    @property
    def claiming(self) -> bool:
        """False once shutdown began: no attempt starts."""
        return self._claiming

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The attempts in flight and the recorder's task (a copy)."""
        return set(self._tasks)

    def _rate_of(self, webhook_id: int) -> int | None:
        """The webhook's rate limit (attempts/s), None when it has none."""
        hook = self.registry.get(webhook_id)
        return None if hook is None else hook.rate_limit

    def throttled_seconds(self) -> dict[str, float]:
        """Seconds each webhook's due deliveries waited for a token, by public id (metrics)."""
        out: dict[str, float] = {}
        for webhook_id, seconds in self.window.throttled_s.items():
            hook = self.registry.get(webhook_id)
            if hook is not None:
                out[hook.public_id] = seconds
        return out

    def push(self, items: Iterable[DueItem]) -> None:
        """Tell the scheduler about deliveries just committed as queued."""
        self.window.push(items)
        self._wake.set()

    def webhook_changed(self, webhook: Webhook | None, webhook_id: int) -> None:
        """A webhook was edited, deactivated, activated or deleted: resync its lane."""
        self.window.webhook_changed(webhook_id, active=webhook is not None and webhook.is_active)
        self._wake.set()

    def stop_claiming(self) -> None:
        """Stop starting attempts (shutdown); those in flight go on."""
        self._claiming = False
        self._wake.set()

    def wake(self) -> None:
        """Wake the loop: something may be due or a slot free."""
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
            if attempts := self.attempts_in_flight():
                remaining = deadline - loop.time()
                if remaining > 0:
                    await asyncio.wait(attempts, timeout=remaining)
                    continue
                for attempt in attempts:
                    attempt.cancel()
                await asyncio.wait(attempts)
                cancelled += len(attempts)
            elif (recording := self.recorder.task) is not None:
                await asyncio.wait({recording}, timeout=RECORD_GRACE_S)
                if self.recorder.task is not None and loop.time() > deadline + RECORD_GRACE_S:
                    recording.cancel()  # storage hangs: recover() will queue them again
                    await asyncio.wait({recording})
            else:
                return cancelled

    def attempts_in_flight(self) -> set[asyncio.Future[Any]]:
        """The attempts running now, tasks or callbacks (not the recorder's task)."""
        recording = self.recorder.task
        attempts: set[asyncio.Future[Any]] = {t for t in self._tasks if t is not recording}
        return attempts | set(self._answers.values())

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
            if self.recorder.has_unrecorded:
                await self.recorder.record_unrecorded()
            loaded = await self.refill()
            started = await self._claim_due()
        except StorageUnavailable as exc:
            self._backoff_s = min(max(self._backoff_s * 2, 0.5), 30.0)
            self.backoffs += 1
            log.warning("storage unavailable, scheduler backs off %.1fs: %s", self._backoff_s, exc)
            await self._sleep(self._backoff_s)
            return False
        except Exception:
            # a bug in a round must not end delivery silently: say it, back off, go on
            # (what was picked went back to the window; outcomes wait in the recorder)
            self._backoff_s = min(max(self._backoff_s * 2, 0.5), 30.0)
            self.backoffs += 1
            log.exception("scheduler round failed, it backs off %.1fs", self._backoff_s)
            await self._sleep(self._backoff_s)
            return False
        self._backoff_s = 0.0
        return loaded or started

    async def run_until_idle(self, max_rounds: int = 10_000) -> None:
        """Test entry point: step and await attempts until nothing is due now."""
        for _ in range(max_rounds):
            progressed = await self.step()
            if self._tasks or self._answers:
                await asyncio.wait(set(self._tasks) | set(self._answers.values()))
                continue
            if not progressed:
                return
        raise RuntimeError("scheduler did not become idle")

    @property
    def free_slots(self) -> int:
        """Attempts that may start now."""
        return self.config.concurrency - self.window.inflight - self.recorder.reserved

    def _next_wake(self) -> float | None:
        if self.free_slots <= 0:
            return None  # nothing can start before a slot frees, and that wakes the loop
        due_at = self.window.next_due_at()
        return None if due_at is None else max(0.0, due_at - self.clock.time())

    async def _sleep(self, timeout_s: float | None) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    async def refill(self) -> bool:
        """Load rows from the index into the window: overflowed lanes, then the global refill."""
        window = self.window
        window.compact_timers()
        loaded = False
        for lane in window.lanes_to_reload():
            if window.wants_reload(lane):
                lane_limit = window.begin_lane_reload(lane)
                lane_rows = None
                try:
                    lane_rows = await self.store.load_webhook_due(lane.webhook_id, lane_limit)
                finally:
                    loaded |= window.end_lane_reload(lane, lane_rows, lane_limit)
        limit = window.refill_limit()
        if limit is None:
            return loaded
        window.begin_refill()
        rows = None
        try:
            rows = await self.store.load_due(window.cursor, limit, window.overflowed())
        finally:
            window.end_refill(rows, limit)
        return bool(rows)

    # --------------------------------------------------------------- claiming

    def pick_due(self, now: float) -> list[DueItem]:
        """Take the due deliveries the free slots allow out of the window."""
        self.window.promote(now)
        return self.window.pick(min(self.free_slots, self.claim_batch), now)

    async def _claim_due(self) -> bool:
        if not self._claiming or self.free_slots <= 0:
            return False
        now = self.clock.time()
        picked = self.pick_due(now)
        if not picked:
            return False
        limits = self.claim_limits()
        commits = self.recorder.commits
        try:
            claimed = await self.store.claim([item.id for item in picked], now, limits=limits)
        except BaseException:
            self.window.unpick(picked)
            self._wake.set()
            raise
        # outcomes committed meanwhile: the claim may have counted their rows in flight
        done = self.recorder.committed
        stale = {w for w in limits.refused if done.get(w, 0) > commits}
        self.start(picked, claimed, now, limits.refused, stale=stale)
        return True

    def claim_limits(self) -> ClaimLimits:
        """The per-webhook limits a claim keeps (cluster-wide on PostgreSQL)."""
        return ClaimLimits(self.config.per_webhook_concurrency)

    def start(
        self,
        picked: list[DueItem],
        claimed: list[Claimed],
        now: float,
        refused: Mapping[int, float | None] | None = None,
        *,
        stale: Collection[int] = (),
    ) -> None:
        """Start the attempts of the claimed deliveries; free the slots of the others.

        Those a cluster-wide limit held back (`refused`: their webhooks) go back to the
        window, and their lanes wait (Window.defer); not at the concurrency limit for
        webhooks in `stale` (outcomes of theirs committed while the claim ran: it may
        have counted them in flight). A commit still under way lifts the wait when in.
        """
        got = {c.id for c in claimed}
        held_back: list[DueItem] = []
        for item in picked:
            if item.id not in got:
                if refused and item.webhook_id in refused:
                    held_back.append(item)
                else:  # deleted, parked or claimed elsewhere meanwhile
                    self.release(item.id, item.webhook_id)
            else:
                if not refused or item.webhook_id not in refused:
                    self.window.claimed(item.webhook_id)  # got all it asked: no backoff
                if self.on_claimed is not None:
                    self.on_claimed(max(0.0, now - item.due_at))
        if held_back:
            assert refused is not None
            self.window.unpick(held_back)
            for webhook_id in {item.webhook_id for item in held_back}:
                if refused[webhook_id] is not None or webhook_id not in stale:
                    self.window.defer(webhook_id, refused[webhook_id], now)
            self._wake.set()
        for c in claimed:
            # on an idle pooled connection the attempt runs on callbacks: no task
            if not self._begin(c):
                self.spawn(self._attempt(c), f"wahookd-attempt-{c.id}")

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run a task that drain() waits for."""
        task = asyncio.create_task(coro, name=name)
        # keep a hard reference or the task may be garbage-collected mid-attempt
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def release(self, item_id: int, webhook_id: int) -> None:
        """A delivery is no longer in flight: free its slot and wake the loop."""
        self.window.release(item_id, webhook_id)
        self._wake.set()

    # ---------------------------------------------------------------- attempts

    def _begin(self, claimed: Claimed) -> bool:
        """Start the attempt on a pooled connection; False when it needs a task (attempt())."""
        webhook = self.registry.get(claimed.webhook_id)
        if webhook is None:
            return False
        started_at = self.clock.time()
        try:
            answer = self.sender.begin(webhook, claimed, started_at)
        except Exception:
            # e.g. building the request failed: a failed attempt, never a stranded claim
            log.exception("attempt %s #%d crashed", claimed.uid, claimed.attempt)
            self.recorder.conclude(claimed, webhook, internal_error(), started_at)
            return True
        if answer is None:
            return False
        self._answers[claimed.id] = answer
        answer.add_done_callback(functools.partial(self._answered, claimed, webhook, started_at))
        return True

    def _answered(
        self,
        claimed: Claimed,
        webhook: Webhook,
        started_at: float,
        answer: asyncio.Future[AttemptResult],
    ) -> None:
        """An attempt started by Sender.begin() ended."""
        self._answers.pop(claimed.id, None)
        if answer.cancelled():
            # cancelled at shutdown: the row stays `processing`, Store.recover() requeues it
            self.release(claimed.id, claimed.webhook_id)
            return
        exc = answer.exception()
        if exc is not None:
            log.error("attempt %s #%d crashed", claimed.uid, claimed.attempt, exc_info=exc)
            result = internal_error()
        else:
            result = answer.result()
        self.recorder.conclude(claimed, webhook, result, started_at)

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
            self.release(claimed.id, claimed.webhook_id)
            raise
        self.recorder.conclude(claimed, webhook, result, started_at)

    async def _send(self, webhook: Webhook, claimed: Claimed, started_at: float) -> AttemptResult:
        """The attempt; a bug in it is a failed attempt, not a delivery stuck `processing`."""
        try:
            return await self.sender.attempt(webhook, claimed, started_at)
        except Exception:
            log.exception("attempt %s #%d crashed", claimed.uid, claimed.attempt)
            return internal_error()
