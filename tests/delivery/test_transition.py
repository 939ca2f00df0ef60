"""transition(): every way a delivery moves, with plain values (no store, no clock)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from wahookd.delivery.transition import (
    WEBHOOK_GONE,
    Attempted,
    Delivery,
    Interrupted,
    ManualRetry,
    NotAllowed,
    Recorded,
    Transition,
    WebhookState,
    transition,
)
from wahookd.models import AttemptResult, Claimed, Outcome, State

NOW = 1_000.0
LADDER = (30.0, 300.0)  # three attempts in all
ON, OFF, GONE = WebhookState(True), WebhookState(False), None

OK = AttemptResult(200, None, 5, "OK", None, "2xx")
E500 = AttemptResult(500, "HTTP 500", 5, "", None, "5xx")
E410 = AttemptResult(410, "HTTP 410", 5, "", None, "4xx")
E503_LATER = AttemptResult(503, "HTTP 503", 5, "", 120.0, "5xx")  # Retry-After: 120
E503_FAR = AttemptResult(503, "HTTP 503", 5, "", 99_999.0, "5xx")
REFUSED = AttemptResult(None, "webhook no longer exists", 0, "", None, "refused")


def T(state: State, next_at: float | None, finished: float | None, error: str | None,
      attempts: int, base: int = 0, **kw: Any) -> Transition:  # fmt: skip
    return Transition(state, next_at, finished, error, attempts, base, **kw)


ATTEMPTED = [
    # (attempts, cycle_base, result, webhook) -> expected
    (1, 0, OK, ON, T(State.DELIVERED, None, NOW, None, 1, kind="delivered", stats="successful")),
    (3, 0, OK, OFF, T(State.DELIVERED, None, NOW, None, 3, kind="delivered", stats="successful")),
    (
        1,
        0,
        E410,
        ON,
        T(
            State.FAILED,
            None,
            NOW,
            "HTTP 410",
            1,
            kind="gone",
            stats="failed",
            disables_webhook=True,
        ),
    ),
    (
        1,
        0,
        E500,
        ON,
        T(State.RETRYING, NOW + 30, None, "HTTP 500", 1, kind="retry", retry_at=NOW + 30),
    ),
    (
        2,
        0,
        E500,
        ON,
        T(State.RETRYING, NOW + 300, None, "HTTP 500", 2, kind="retry", retry_at=NOW + 300),
    ),
    (3, 0, E500, ON, T(State.FAILED, None, NOW, "HTTP 500", 3, kind="failed", stats="failed")),
    # a manual retry started a new ladder run after 3 attempts: the 4th is its first
    (
        4,
        3,
        E500,
        ON,
        T(State.RETRYING, NOW + 30, None, "HTTP 500", 4, 3, kind="retry", retry_at=NOW + 30),
    ),
    (6, 3, E500, ON, T(State.FAILED, None, NOW, "HTTP 500", 6, 3, kind="failed", stats="failed")),
    # Retry-After postpones up to the longest step
    (
        1,
        0,
        E503_LATER,
        ON,
        T(State.RETRYING, NOW + 120, None, "HTTP 503", 1, kind="retry", retry_at=NOW + 120),
    ),
    (
        1,
        0,
        E503_FAR,
        ON,
        T(State.RETRYING, NOW + 300, None, "HTTP 503", 1, kind="retry", retry_at=NOW + 300),
    ),
    # the webhook went inactive: parked, but the outcome keeps its ladder time
    (1, 0, E500, OFF, T(State.PENDING, None, None, "HTTP 500", 1, kind="retry", retry_at=NOW + 30)),
    # deleted before the attempt: a plain failure, whatever the ladder says
    (
        1,
        0,
        REFUSED,
        GONE,
        T(State.FAILED, None, NOW, "webhook no longer exists", 1, kind="failed", stats="failed"),
    ),
]


@pytest.mark.parametrize(("attempts", "base", "result", "webhook", "expected"), ATTEMPTED)
def test_an_attempt_ends(
    attempts: int, base: int, result: AttemptResult, webhook: Any, expected: Transition
) -> None:
    attempted = Attempted(result, LADDER)
    assert transition(Delivery(attempts, base), attempted, webhook, NOW) == expected


RECORDED = [
    # (kind, next_attempt_at, error, webhook at commit) -> expected
    (
        "delivered",
        None,
        None,
        ON,
        T(State.DELIVERED, None, NOW, None, 2, kind="delivered", stats="successful"),
    ),
    (
        "delivered",
        None,
        None,
        GONE,
        T(State.DELIVERED, None, NOW, None, 2, kind="delivered", stats="successful"),
    ),
    (
        "retry",
        1030.0,
        "HTTP 500",
        ON,
        T(State.RETRYING, 1030.0, None, "HTTP 500", 2, kind="retry", retry_at=1030.0),
    ),
    (
        "retry",
        1030.0,
        "HTTP 500",
        OFF,
        T(State.PENDING, None, None, "HTTP 500", 2, kind="retry", retry_at=1030.0),
    ),
    (
        "retry",
        1030.0,
        "HTTP 500",
        GONE,
        T(
            State.FAILED,
            None,
            NOW,
            "HTTP 500; then its webhook was deleted",
            2,
            kind="retry",
            retry_at=1030.0,
            stats="failed",
        ),
    ),
    (
        "retry",
        1030.0,
        None,
        GONE,
        T(State.FAILED, None, NOW, WEBHOOK_GONE, 2, kind="retry", retry_at=1030.0, stats="failed"),
    ),
    (
        "failed",
        None,
        "HTTP 500",
        OFF,
        T(State.FAILED, None, NOW, "HTTP 500", 2, kind="failed", stats="failed"),
    ),
    (
        "failed",
        None,
        "timed out",
        GONE,
        T(State.FAILED, None, NOW, "timed out", 2, kind="failed", stats="failed"),
    ),
    (
        "gone",
        None,
        "HTTP 410",
        ON,
        T(
            State.FAILED,
            None,
            NOW,
            "HTTP 410",
            2,
            kind="gone",
            stats="failed",
            disables_webhook=True,
        ),
    ),
    (
        "gone",
        None,
        "HTTP 410",
        OFF,
        T(
            State.FAILED,
            None,
            NOW,
            "HTTP 410",
            2,
            kind="gone",
            stats="failed",
            disables_webhook=True,
        ),
    ),
]


@pytest.mark.parametrize(("kind", "next_at", "error", "webhook", "expected"), RECORDED)
def test_an_outcome_is_recorded(
    kind: Any, next_at: float | None, error: str | None, webhook: Any, expected: Transition
) -> None:
    assert transition(Delivery(2), Recorded(kind, next_at, error), webhook, NOW) == expected


def test_recorded_of_an_outcome_takes_its_decision_and_error() -> None:
    claimed = Claimed(7, "dlv_7", 3, "s", "message", 4, b"{}", cycle_attempt=1)
    outcome = Outcome(claimed, 990.0, E500, "retry", 1030.0)
    assert Recorded.of(outcome) == Recorded("retry", 1030.0, "HTTP 500")
    assert Delivery.of(claimed) == Delivery(4, 3)
    assert Delivery.of(claimed).ladder_position == 1
    # built without a cycle (older callers): the attempt number is the ladder position
    assert Delivery.of(Claimed(7, "dlv_7", 3, "s", "message", 2, b"{}")) == Delivery(2, 0)


INTERRUPTED = [
    # (attempts as claimed, webhook) -> expected; the attempt number goes back by one
    (1, ON, T(State.PENDING, NOW, None, None, 0)),
    (2, ON, T(State.RETRYING, NOW, None, "HTTP 500", 1)),
    (1, OFF, T(State.PENDING, None, None, None, 0)),
    (3, OFF, T(State.PENDING, None, None, "HTTP 500", 2)),
    (1, GONE, T(State.FAILED, None, NOW, WEBHOOK_GONE, 0)),
    (3, GONE, T(State.FAILED, None, NOW, WEBHOOK_GONE, 2)),
]


@pytest.mark.parametrize(("attempts", "webhook", "expected"), INTERRUPTED)
def test_an_attempt_interrupted_by_a_crash(
    attempts: int, webhook: Any, expected: Transition
) -> None:
    last_error = "HTTP 500" if attempts > 1 else None
    delivery = Delivery(attempts, 0, State.PROCESSING, last_error)
    assert transition(delivery, Interrupted(), webhook, NOW) == expected


def test_recovery_keeps_cycle_base_and_counts_nothing() -> None:
    got = transition(Delivery(5, 3, State.PROCESSING, "HTTP 500"), Interrupted(), ON, NOW)
    assert (got.attempts, got.cycle_base, got.state, got.stats, got.kind) == (
        4, 3, State.RETRYING, None, None,
    )  # fmt: skip


MANUAL = [
    (ON, T(State.PENDING, NOW, None, None, 5, 5, stats="unfailed")),
    (OFF, T(State.PENDING, None, None, None, 5, 5, stats="unfailed")),
]


@pytest.mark.parametrize(("webhook", "expected"), MANUAL)
def test_a_manual_retry_starts_a_new_ladder_run(webhook: Any, expected: Transition) -> None:
    failed = Delivery(5, 0, State.FAILED, "HTTP 500", 900.0)
    assert transition(failed, ManualRetry(), webhook, NOW) == expected


@pytest.mark.parametrize(
    "state", [State.PENDING, State.PROCESSING, State.RETRYING, State.DELIVERED]
)
def test_only_a_failed_delivery_is_retried(state: State) -> None:
    with pytest.raises(NotAllowed, match="only a failed delivery"):
        transition(Delivery(1, 0, state), ManualRetry(), ON, NOW)


def test_a_failed_delivery_of_a_deleted_webhook_is_not_retried() -> None:
    with pytest.raises(NotAllowed, match=WEBHOOK_GONE):
        transition(Delivery(3, 0, State.FAILED), ManualRetry(), GONE, NOW)


@pytest.mark.parametrize("state", [State.PENDING, State.RETRYING, State.FAILED])
def test_only_a_delivery_in_flight_is_interrupted(state: State) -> None:
    with pytest.raises(NotAllowed, match="only a delivery in flight"):
        transition(Delivery(1, 0, state), Interrupted(), ON, NOW)


def test_jitter_comes_from_the_injected_rng() -> None:
    attempted = Attempted(E500, LADDER, jitter=0.5, rng=random.Random(7))
    first = transition(Delivery(1), attempted, ON, NOW).next_attempt_at
    again = Attempted(E500, LADDER, jitter=0.5, rng=random.Random(7))
    assert transition(Delivery(1), again, ON, NOW).next_attempt_at == first
    assert first is not None and NOW + 15 <= first <= NOW + 45 and first != NOW + 30


def test_a_webhook_object_serves_as_the_webhook_state() -> None:
    from wahookd.models import Webhook

    hook = Webhook(1, "session", "s", "https://x/h", ("*",), None, (), False, 0.0, 0.0)
    got = transition(Delivery(1), Attempted(E500, LADDER), hook, NOW)
    assert (got.state, got.next_attempt_at, got.retry_at) == (State.PENDING, None, NOW + 30)
