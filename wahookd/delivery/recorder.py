"""Commits finished attempts' outcomes in batches and holds their slots until then.

A finished attempt's slot stays taken until its outcome is committed, so the
deliveries `processing` at a crash never number more than `concurrency`: a crash
repeats at most that many attempts. `reserved` counts those slots, in one place.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from ..clock import Clock
from ..config import DeliveryConfig
from ..logs import direct_handler
from ..models import AttemptResult, Claimed, DueItem, Outcome, Webhook
from ..registry import Registry
from ..store import StorageUnavailable, Store
from ..store.protocol import ClaimLimits
from ..units import format_duration
from ..webhooks import WebhookService
from .transition import Attempted, Delivery, Recorded, transition
from .window import Window

# the name operators filter attempt lines by; kept when the scheduler moved to delivery/
log = logging.getLogger("wahookd.scheduler")


# the outcomes whose transition may queue the delivery again or turn its webhook off
_MAY_REQUEUE = frozenset({"retry", "gone"})


class Host(Protocol):
    """What the recorder needs of the scheduler that owns it."""

    store: Store
    registry: Registry
    config: DeliveryConfig
    clock: Clock
    rng: random.Random
    window: Window
    on_outcome: Callable[[Outcome], None] | None

    @property
    def claiming(self) -> bool:
        """False once shutdown began: start no attempt."""

    def pick_due(self, now: float) -> list[DueItem]:
        """Take the due deliveries the free slots allow out of the window."""

    def release(self, item_id: int, webhook_id: int) -> None:
        """Free a delivery's slot and wake the loop."""

    def claim_limits(self) -> ClaimLimits:
        """The per-webhook limits a claim keeps."""

    def start(
        self,
        picked: list[DueItem],
        claimed: list[Claimed],
        now: float,
        refused: Mapping[int, float | None] | None = None,
    ) -> None:
        """Start the attempts of claimed deliveries; those a limit held back wait."""

    def wake(self) -> None:
        """Wake the loop."""

    @property
    def webhooks(self) -> WebhookService:
        """The one owner of webhook changes (410 and auto-disable go through it)."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run a task that drain() waits for."""


class Recorder:
    """Outcome batches: one commit per batch, which also claims the deliveries taking over."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.auto_disabled = 0  # webhooks turned off for failing too long (metrics)
        # outcome commits so far, and each webhook's latest: a claim that ran beside one
        # may have counted its rows as still in flight (PostgreSQL), so the scheduler
        # does not back off on that
        self.commits = 0
        self.committed: dict[int, int] = {}
        self.task: asyncio.Task[None] | None = None  # commits `_outcomes` while any wait
        self._outcomes: list[Outcome] = []  # finished attempts waiting for the task
        self._unrecorded: list[Outcome] = []  # refused by storage: the loop retries them
        # slots of a committing batch that no new delivery took over
        self._handover = 0

    @property
    def reserved(self) -> int:
        """Slots of finished attempts whose outcomes are not committed (and not handed over).

        Their rows are still `processing`: the slots are free only once the commit is in.
        """
        return len(self._unrecorded) + self._handover

    @property
    def has_unrecorded(self) -> bool:
        """True while outcomes storage refused wait for the loop to write them."""
        return bool(self._unrecorded)

    def conclude(
        self, claimed: Claimed, webhook: Webhook | None, result: AttemptResult, started_at: float
    ) -> None:
        """An attempt ended: decide what happens to its delivery and queue the outcome."""
        host = self.host
        config = host.config
        attempted = Attempted(result, config.retry_schedule_s, config.retry_jitter, host.rng)
        t = transition(Delivery.of(claimed), attempted, webhook, host.clock.time())
        assert t.kind is not None
        self._outcomes.append(Outcome(claimed, started_at, result, t.kind, t.retry_at))
        if self.task is None:
            self.task = host.spawn(self._record_outcomes(), "wahookd-outcomes")

    async def record_unrecorded(self) -> None:
        """Commit the outcomes storage refused (the loop calls this); raise if still refused."""
        outcomes = list(self._unrecorded)
        now = self.host.clock.time()
        # still unwritten while this runs: they keep their slots (ahead of any refused since)
        disabled, _ = await self._commit(outcomes, [], now)
        self._committed(outcomes)
        # their rows are no longer `processing`: the slots they held are free
        del self._unrecorded[: len(outcomes)]
        self._after_commit(outcomes, disabled, now)
        for outcome in outcomes:
            self._requeue(outcome, now)
        self.host.wake()

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
            self.task = None
            if self._outcomes:  # cancelled (shutdown) with some left: the loop may record them
                for outcome in self._outcomes:
                    self.host.release(outcome.claimed.id, outcome.claimed.webhook_id)
                self._hold_unrecorded(self._outcomes)
                self._outcomes = []

    async def _record_and_claim(self, batch: list[Outcome]) -> None:
        host = self.host
        # the batch's slots pass to the deliveries picked here; the rest stay reserved
        # until the commit is in
        for outcome in batch:
            host.release(outcome.claimed.id, outcome.claimed.webhook_id)
        now = host.clock.time()
        picked = host.pick_due(now) if host.claiming else []
        # slots of the batch no pick took over stay reserved until the commit; a pick
        # larger than the batch took genuinely free slots, which reserve nothing more
        # (a negative count here would free phantom slots while the commit runs)
        handover = max(0, len(batch) - len(picked))
        self._handover += handover
        limits = host.claim_limits()
        try:
            disabled, claimed = await self._commit(batch, [item.id for item in picked], now, limits)
        except StorageUnavailable:
            host.window.unpick(picked)
            self._hold_unrecorded(batch)  # their rows stay `processing`: slots stay taken
            return
        except Exception:
            # a bug: the rows stay `processing` until Store.recover() at the next start
            log.exception("recording %d attempt outcomes failed", len(batch))
            host.window.unpick(picked)
            return
        finally:
            self._handover -= handover
            host.wake()
        self._committed(batch)
        self._after_commit(batch, disabled, now)
        for outcome in batch:
            self._requeue(outcome, now)
        if host.claiming:
            host.start(picked, claimed, now, limits.refused)
        else:
            # stopped meanwhile (shutdown): start nothing; the claimed rows stay
            # `processing` and Store.recover() queues them again, attempt number unchanged
            for item in picked:
                host.release(item.id, item.webhook_id)

    def _committed(self, outcomes: list[Outcome]) -> None:
        """Outcomes are in: their webhooks' slots are free in the database too."""
        self.commits += 1
        hooks = {o.claimed.webhook_id for o in outcomes}
        for webhook_id in hooks:
            self.committed[webhook_id] = self.commits
        self.host.window.lift(hooks)

    def _hold_unrecorded(self, outcomes: list[Outcome]) -> None:
        """Outcomes storage refused, their slots released: the loop records them later.

        Until then their rows stay `processing`, so their slots stay taken (reserved),
        or a crash meanwhile could repeat more than `concurrency` attempts.
        """
        self._unrecorded.extend(outcomes)
        self.host.wake()

    async def _commit(
        self,
        outcomes: list[Outcome],
        claim: list[int],
        now: float,
        limits: ClaimLimits | None = None,
    ) -> tuple[list[int], list[Claimed]]:
        """Commit outcomes, and claim these ids in the same transaction."""
        store = self.host.store
        disable_after = self.host.config.disable_after_s or None  # "0s": never auto-disable
        if claim:
            return await store.record_and_claim(outcomes, claim, now, disable_after, limits=limits)
        return await store.record(outcomes, now, disable_after), []

    def _after_commit(self, outcomes: list[Outcome], disabled: list[int], now: float) -> None:
        """Auto-disable, log and count committed outcomes; a bug here loses no delivery."""
        on_outcome = self.host.on_outcome
        try:
            for webhook_id in disabled:
                self._auto_disabled(webhook_id, now)
            log_attempts(outcomes)
            if on_outcome is not None:
                for outcome in outcomes:
                    on_outcome(outcome)
        except Exception:
            log.exception("after recording %d attempt outcomes", len(outcomes))

    def _auto_disabled(self, webhook_id: int, now: float) -> None:
        self.auto_disabled += 1
        failing_for = format_duration(self.host.config.disable_after_s)
        hook = self.host.webhooks.turned_off(
            webhook_id,
            now=now,
            reason=f"auto-disabled: attempts failed with no success for {failing_for}",
        )
        if hook is not None:
            log.warning(
                "webhook for session %s disabled: attempts failed with no success for %s;"
                " its deliveries wait until it is re-enabled",
                hook.session,
                failing_for,
            )

    def _requeue(self, outcome: Outcome, now: float) -> None:
        """Mirror a committed outcome in memory: the same transition the store applied."""
        if outcome.kind not in _MAY_REQUEUE:
            return  # delivered or failed: nothing goes back into memory (the callers wake)
        host = self.host
        c = outcome.claimed
        hook = host.registry.get(c.webhook_id)
        t = transition(Delivery.of(c), Recorded.of(outcome), hook, now)
        if t.next_attempt_at is not None:
            host.window.add(DueItem(t.next_attempt_at, c.id, c.webhook_id), from_refill=False)
        elif t.disables_webhook:
            # the commit turned it off; the first 410 of a batch mirrors it
            host.webhooks.turned_off(
                c.webhook_id, now=now, reason=f"the receiver answered 410 Gone to {c.uid}"
            )
        host.wake()


def log_attempts(outcomes: list[Outcome]) -> None:
    """log_attempt() for each; the whole batch at once when logs.direct_handler() allows."""
    handler = direct_handler(log)
    if handler is None:
        for outcome in outcomes:
            log_attempt(outcome)
        return
    handler.info_lines(log.name, [_attempt_line(outcome) for outcome in outcomes])


def log_attempt(outcome: Outcome) -> None:
    """One info line per finished attempt; never the URL, headers or bodies (secrets).

    It names the answer ("HTTP 503") or why there was none ("connection refused"), with the
    text the attempt log stores (attempt_errors.py), so the two always agree.
    """
    message, fields = _attempt_line(outcome)
    log.info(message, extra=fields)  # no args: a "%" in an error text stays as it is


def _attempt_line(outcome: Outcome) -> tuple[str, dict[str, Any]]:
    """The attempt line's message and its `extra` fields (the JSON format shows them)."""
    c, r = outcome.claimed, outcome.result
    if r.error is not None:
        result = r.error
    elif r.status_code is not None:
        result = f"HTTP {r.status_code}"
    else:
        result = r.error_class
    message = (
        f"attempt {c.uid} #{c.attempt} {c.session_id} {c.event_type}: {result}"
        f" in {r.duration_ms}ms, {outcome.kind}"
    )
    fields = {
        "delivery": c.uid,
        "session": c.session_id,
        "event": c.event_type,
        "attempt": c.attempt,
        "status": r.status_code,
        "ms": r.duration_ms,
        "outcome": outcome.kind,
        "error_class": r.error_class,
        "error": r.error,
    }
    return message, fields
