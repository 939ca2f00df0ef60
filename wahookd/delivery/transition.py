"""A delivery's state machine (SPEC §5-§6): one pure function for every way it moves.

`transition(delivery, outcome, webhook, now)` takes plain values and returns what
the delivery becomes; nothing here reads a clock, the database or the network.
The outcomes:

- `Attempted`: an attempt ended (the scheduler, as it ends). It decides the
  attempt's kind and, for a failure, the retry time from the ladder (retry.py,
  with Retry-After and jitter; the RNG is passed in).
- `Recorded`: that decision meets the webhook as it is when the outcome is
  committed: deleted meanwhile fails a retry ("... then its webhook was
  deleted"), inactive parks it (pending, no due time). The recorder uses it to
  requeue; the store's `record` to write the row.
- `Interrupted`: an attempt was in flight at a crash (startup recovery): the same
  attempt number again, pending or retrying, parked when the webhook is
  inactive, failed when it was deleted.
- `ManualRetry`: a failed delivery goes back for a new ladder run
  (`cycle_base = attempts`), due now or parked behind an inactive webhook, and
  counts as failed no longer.

The store functions that call it (the SQL only stores what it decides;
tests/store/test_store_transitions.py checks each against it):

- `store.sqlite.outcomes.record` (and `record_and_claim`): for each outcome,
  `transition(Delivery.of(o.claimed), Recorded.of(o), webhook_state, now)` where
  webhook_state is `WebhookState(is_active)` or None for a deleted webhook; for a
  row still `processing` it stores state, next_attempt_at, finished_at, error
  (last_error) and adds `stats` to session_stats; `disables_webhook` turns the
  webhook off (then parks its queue), also when the delivery is no longer in
  flight (only logged). `_track_failing` counts kinds "retry"/"failed" as
  failures, "delivered" as success.
- `store.sqlite.outcomes.recover`: for each `processing` row, `transition(Delivery(attempts,
  cycle_base, PROCESSING, last_error, finished_at), Interrupted(), webhook_state,
  now)`; store attempts, state, next_attempt_at, finished_at, error.
- `store.sqlite.history.retry_failed`: for each failed row, `transition(Delivery(attempts,
  cycle_base, FAILED, ...), ManualRetry(), webhook_state, now)`; rows whose
  webhook was deleted raise `NotAllowed` and are skipped (as an inner JOIN
  skipped them before); store state, cycle_base, next_attempt_at, finished_at, error and apply
  `stats == "unfailed"` (failed - 1).

`WEBHOOK_GONE` is defined here only (`store.sqlite.outcomes` re-exports it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from ..models import AttemptResult, Claimed, Outcome, OutcomeKind, State
from . import retry

# last_error of a delivery whose webhook was deleted while it waited or was in flight
WEBHOOK_GONE = "its webhook was deleted"

# how a transition changes the session's stats: a delivery counted as delivered, as
# failed, or a failed one no longer counted (manual retry)
StatsChange = Literal["successful", "failed", "unfailed"]


class NotAllowed(ValueError):
    """The outcome cannot apply to the delivery in its state (say, retrying one not failed)."""


class HasActive(Protocol):
    """What transition() needs of a webhook: whether it is active (a `Webhook` will do)."""

    @property
    def is_active(self) -> bool: ...


class WebhookState(msgspec.Struct, frozen=True, gc=False):
    """A webhook as the SQL sees it: just whether it is active."""

    is_active: bool


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """The stored fields of a delivery that its transitions read."""

    attempts: int  # attempts made; while one is in flight, that one included
    cycle_base: int = 0  # attempts made before the current ladder run (manual retry)
    state: State = State.PROCESSING
    last_error: str | None = None
    finished_at: float | None = None

    @classmethod
    def of(cls, claimed: Claimed) -> Delivery:
        """The delivery of a claimed (in-flight) attempt."""
        return cls(claimed.attempt, claimed.attempt - claimed.ladder_position)

    @property
    def ladder_position(self) -> int:
        """Attempts made in this ladder run."""
        return self.attempts - self.cycle_base


class Attempted(msgspec.Struct, frozen=True, gc=False):
    """An attempt ended with this result; failures wait the ladder's next step."""

    result: AttemptResult
    schedule_s: Sequence[float]
    jitter: float = 0.0
    rng: random.Random | None = None


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """An attempt's outcome as decided when it ended, at the time it is committed."""

    kind: OutcomeKind
    next_attempt_at: float | None
    error: str | None  # the attempt's own error text

    @classmethod
    def of(cls, outcome: Outcome) -> Recorded:
        """The recorded form of a scheduler outcome."""
        return cls(outcome.kind, outcome.next_attempt_at, outcome.result.error)


class Interrupted(msgspec.Struct, frozen=True, gc=False):
    """The attempt in flight never got an answer: the daemon stopped (crash, kill -9)."""


class ManualRetry(msgspec.Struct, frozen=True, gc=False):
    """An operator retries a failed delivery (POST .../retry)."""


DeliveryOutcome = Attempted | Recorded | Interrupted | ManualRetry


class Transition(msgspec.Struct, frozen=True, gc=False):
    """What a delivery becomes."""

    state: State
    next_attempt_at: float | None  # when it is due; None: parked, in flight or finished
    finished_at: float | None
    error: str | None  # the delivery's last_error
    attempts: int
    cycle_base: int
    kind: OutcomeKind | None = None  # the attempt's outcome (attempt log); None: no attempt
    # the ladder's retry time even when the delivery parks, so a webhook re-enabled
    # before the outcome is committed finds it due
    retry_at: float | None = None
    stats: StatsChange | None = None
    disables_webhook: bool = False  # a 410 Gone turns the webhook off

    @property
    def queued(self) -> bool:
        """True when the delivery waits with a due time (the scheduler may take it)."""
        return self.next_attempt_at is not None


def transition(
    delivery: Delivery, outcome: DeliveryOutcome, webhook: HasActive | None, now: float
) -> Transition:
    """What `outcome` makes of `delivery`, given its webhook (None: deleted) at `now`."""
    if isinstance(outcome, Attempted):
        return _attempted(delivery, outcome, webhook, now)
    if isinstance(outcome, Recorded):
        return _settle(delivery, outcome.kind, outcome.next_attempt_at, outcome.error, webhook, now)
    if isinstance(outcome, Interrupted):
        return _interrupted(delivery, webhook, now)
    return _manual_retry(delivery, webhook, now)


def _attempted_kind(
    delivery: Delivery, attempt: Attempted, webhook: HasActive | None, now: float
) -> tuple[OutcomeKind, float | None]:
    """The attempt's kind and, for "retry", its ladder time."""
    result = attempt.result
    if webhook is None:
        return "failed", None  # deleted before the attempt: nothing left to send to
    if result.ok:
        return "delivered", None
    if result.status_code == 410:
        return "gone", None
    next_at = retry.next_attempt_at(
        attempts_made=delivery.ladder_position,
        schedule_s=attempt.schedule_s,
        now=now,
        retry_after_s=result.retry_after_s,
        jitter=attempt.jitter,
        rng=attempt.rng,
    )
    return ("retry", next_at) if next_at is not None else ("failed", None)


def _attempted(
    delivery: Delivery, attempt: Attempted, webhook: HasActive | None, now: float
) -> Transition:
    kind, next_at = _attempted_kind(delivery, attempt, webhook, now)
    # deleted before the attempt: the attempt itself failed ("webhook no longer exists"),
    # so it settles as a plain failure, not as a retry whose webhook went meanwhile
    settled_with = webhook if webhook is not None else WebhookState(True)
    return _settle(delivery, kind, next_at, attempt.result.error, settled_with, now)


def _settle(
    delivery: Delivery,
    kind: OutcomeKind,
    next_at: float | None,
    error: str | None,
    webhook: HasActive | None,
    now: float,
) -> Transition:
    """An attempt's outcome applied to its delivery, given the webhook as it is now."""
    attempts, base = delivery.attempts, delivery.cycle_base
    if kind == "delivered":
        return Transition(
            State.DELIVERED, None, now, error, attempts, base, kind, None, "successful"
        )
    if kind == "gone":
        return Transition(
            State.FAILED, None, now, error, attempts, base, kind, None, "failed", True
        )
    if kind == "retry" and next_at is not None:
        if webhook is None:
            # deleted while the attempt ran: nothing left to retry with
            why = f"{error}; then its webhook was deleted" if error else WEBHOOK_GONE
            return Transition(State.FAILED, None, now, why, attempts, base, kind, next_at, "failed")
        if not webhook.is_active:
            # turned off meanwhile (410, auto-disable, PUT): parked until re-enabled
            return Transition(State.PENDING, None, None, error, attempts, base, kind, next_at)
        return Transition(State.RETRYING, next_at, None, error, attempts, base, kind, next_at)
    return Transition(State.FAILED, None, now, error, attempts, base, kind, None, "failed")


def _interrupted(delivery: Delivery, webhook: HasActive | None, now: float) -> Transition:
    if delivery.state != State.PROCESSING:
        raise NotAllowed(f"only a delivery in flight is interrupted, not a {delivery.state} one")
    # the interrupted attempt is made again with the same number: it never got an answer
    attempts = delivery.attempts - 1
    if webhook is None:
        # not counted in the stats: recovery never did (a known gap, kept as is)
        return Transition(State.FAILED, None, now, WEBHOOK_GONE, attempts, delivery.cycle_base)
    if not webhook.is_active:
        # parked counts as pending (SPEC §6)
        state, next_at = State.PENDING, None
    else:
        state = State.RETRYING if delivery.attempts > 1 else State.PENDING
        next_at = now
    return Transition(
        state, next_at, delivery.finished_at, delivery.last_error, attempts, delivery.cycle_base
    )


def _manual_retry(delivery: Delivery, webhook: HasActive | None, now: float) -> Transition:
    if delivery.state != State.FAILED:
        raise NotAllowed(f"only a failed delivery can be retried, not a {delivery.state} one")
    if webhook is None:
        raise NotAllowed(WEBHOOK_GONE)
    # a new run of the ladder: X-Webhook-Attempt keeps counting, the steps start over
    next_at = now if webhook.is_active else None
    return Transition(
        State.PENDING, next_at, None, None, delivery.attempts, delivery.attempts, stats="unfailed"
    )
