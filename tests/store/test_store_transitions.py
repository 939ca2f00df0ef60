"""The store writes what `transition()` decides (issue 11): record, recover, retry_failed.

Each path is driven through the public store API on a real SQLite file and a real
PostgreSQL database (the `backend` fixture), and every row
it writes is compared with `transition()` called on the same inputs (the row as it
was, the outcome, the webhook as it is: active, inactive or deleted). The spy tests
then replace `transition()` in the store's modules with one that decides something
no rule would: the rows must follow it, so the SQL cannot be deciding on its own.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import pytest

from wahookd.delivery.transition import (
    Delivery,
    DeliveryOutcome,
    HasActive,
    Interrupted,
    ManualRetry,
    NotAllowed,
    Recorded,
    Transition,
    WebhookState,
    transition,
)
from wahookd.events import validate_event
from wahookd.models import AttemptResult, Claimed, Outcome, OutcomeKind, State
from wahookd.store import IngestItem
from wahookd.store.postgres import history as pg_history
from wahookd.store.postgres import outcomes as pg_outcomes
from wahookd.store.sqlite import history, outcomes

from .backends import AnyStore, execute, one
from .conftest import OpenStore

T0 = 1_700_000_000.0
NOW = T0 + 100.0
OK = AttemptResult(200, None, 12, "OK", None, "2xx")
FAIL = AttemptResult(500, "HTTP 500", 7, "", None, "5xx")
GONE = AttemptResult(410, "HTTP 410", 5, "", None, "4xx")
QUIET = AttemptResult(503, None, 4, "", None, "5xx")  # a failure without error text

Hook = Literal["active", "inactive", "deleted"]
HOOKS: tuple[Hook, ...] = ("active", "inactive", "deleted")
RESULTS: dict[OutcomeKind, AttemptResult] = {
    "delivered": OK,
    "retry": FAIL,
    "failed": FAIL,
    "gone": GONE,
}

_ROW = (
    "SELECT state, next_attempt_at, finished_at, last_error, attempts, cycle_base"
    " FROM deliveries WHERE id = ?"
)


def event(session: str, n: int) -> Any:
    body = {"event": "session.disconnected", "sessionId": session, "reason": f"r{n}"}
    return validate_event(body, now=int(T0))


def webhook_for(hook: Hook) -> HasActive | None:
    return None if hook == "deleted" else WebhookState(hook == "active")


async def row(store: AnyStore, delivery_id: int) -> tuple[Any, ...]:
    found = await one(store, _ROW, delivery_id)
    assert found is not None
    return found


def as_row(t: Transition) -> tuple[Any, ...]:
    return (t.state.value, t.next_attempt_at, t.finished_at, t.error, t.attempts, t.cycle_base)


async def counts(store: AnyStore, session: str) -> tuple[int, int]:
    stats = await store.session_stats(session)
    return (0, 0) if stats is None else (stats.successful, stats.failed)


def stats_change(ts: list[Transition]) -> tuple[int, int]:
    successful = sum(t.stats == "successful" for t in ts)
    failed = sum(t.stats == "failed" for t in ts) - sum(t.stats == "unfailed" for t in ts)
    return successful, failed


class Log:
    """A store with one session webhook, and deliveries brought to a given point."""

    def __init__(self, store: AnyStore, session: str, hook_id: int) -> None:
        self.store, self.session, self.hook_id = store, session, hook_id
        self.n = 0

    @classmethod
    async def open(cls, open_store: OpenStore, session: str = "s1") -> Log:
        store = await open_store()
        hook, _ = await store.put_session_webhook(
            session, "https://a.example/", ["*"], None, True, [], T0
        )
        return cls(store, session, hook.id)

    async def delivery(self) -> int:
        self.n += 1
        (res,) = await self.store.ingest(
            [IngestItem(event(self.session, self.n), (self.hook_id,))], T0
        )
        return res.deliveries[0].id

    async def attempt(self, delivery_id: int, kind: OutcomeKind, at: float) -> None:
        (c,) = await self.store.claim([delivery_id], at)
        next_at = at + 1 if kind == "retry" else None
        await self.store.record([Outcome(c, at, FAIL, kind, next_at)], at)

    async def failed(self, attempts: int, retried: bool = False) -> int:
        """A failed delivery after `attempts` (retried by hand after the first one)."""
        delivery_id = await self.delivery()
        for n in range(1, attempts + 1):
            kind: OutcomeKind = "failed" if n == attempts or (retried and n == 1) else "retry"
            await self.attempt(delivery_id, kind, T0 + n)
            if retried and n == 1:
                await self.retry(delivery_id, T0 + n)
        return delivery_id

    async def retry(self, delivery_id: int, at: float) -> None:
        """Retry this failed delivery by hand, and no other."""

        found = await one(self.store, "SELECT uid FROM deliveries WHERE id = ?", delivery_id)
        assert found is not None
        result = await self.store.retry_failed(self.session, at, found[0])
        assert result.retried == 1

    async def in_flight(self, attempt: int, retried: bool = False) -> Claimed:
        """A delivery making its attempt number `attempt`."""
        if attempt == 1:
            delivery_id = await self.delivery()
        else:
            delivery_id = await self.failed(attempt - 1, retried)
            await self.retry(delivery_id, T0 + attempt)
        (c,) = await self.store.claim([delivery_id], T0 + attempt)
        assert c.attempt == attempt
        return c

    async def make(self, hook: Hook, *, leave_rows: bool = False) -> None:
        """Turn the webhook off or delete it; `leave_rows`: delete only the webhook's row.

        Deleting a webhook drops its failed deliveries; a database written by an older
        wahookd may still hold some (tests/store/test_migrations.py).
        """
        if hook == "inactive":
            await self.store.set_webhook_active(self.hook_id, False, T0 + 50)
        elif hook == "deleted" and leave_rows:
            await execute(self.store, "DELETE FROM webhooks WHERE id = ?", self.hook_id)
        elif hook == "deleted":
            await self.store.delete_session_webhook(self.session)

    async def is_active(self) -> bool | None:
        found = [w.is_active for w in await self.store.webhooks() if w.id == self.hook_id]
        return found[0] if found else None


# ------------------------------------------------------------------ record
@pytest.mark.parametrize("hook", HOOKS)
async def test_record_writes_what_transition_decides(open_store: OpenStore, hook: Hook) -> None:
    log = await Log.open(open_store)
    try:
        batches: list[list[tuple[Claimed, Outcome]]] = [[], []]
        for kind, result in [*RESULTS.items(), ("retry", QUIET)]:
            for attempt, retried in ((1, False), (2, False), (3, True)):
                c = await log.in_flight(attempt, retried)
                next_at = NOW + 30 if kind == "retry" else None
                # a 410 turns the webhook off and parks its batch's retries: a batch of its own
                batches[kind == "gone"].append((c, Outcome(c, NOW - 1, result, kind, next_at)))
        await log.make(hook)  # while the attempts are in flight
        for batch in batches:
            before = await counts(log.store, log.session)
            await log.store.record([o for _, o in batch], NOW)
            expected = [
                transition(Delivery.of(c), Recorded.of(o), webhook_for(hook), NOW) for c, o in batch
            ]
            for (c, o), t in zip(batch, expected, strict=True):
                assert await row(log.store, c.id) == as_row(t), (hook, o.kind, c.attempt, o.result)
            after = await counts(log.store, log.session)
            assert (after[0] - before[0], after[1] - before[1]) == stats_change(expected)
            if hook == "active":
                assert await log.is_active() is not any(t.disables_webhook for t in expected)
    finally:
        await log.store.close()


async def test_record_leaves_the_webhook_on_when_no_transition_disables_it(
    open_store: OpenStore,
) -> None:
    log = await Log.open(open_store)
    try:
        c = await log.in_flight(1)
        outcome = Outcome(c, NOW - 1, FAIL, "failed", None)
        assert not transition(
            Delivery.of(c), Recorded.of(outcome), WebhookState(True), NOW
        ).disables_webhook
        await log.store.record([outcome], NOW)
        assert await log.is_active() is True
    finally:
        await log.store.close()


# ------------------------------------------------------------------ recover
@pytest.mark.parametrize("hook", HOOKS)
async def test_recover_writes_what_transition_decides(open_store: OpenStore, hook: Hook) -> None:
    log = await Log.open(open_store)
    try:
        flying = [await log.in_flight(a, r) for a, r in ((1, False), (2, False), (3, True))]
        await log.make(hook)
        rows = [await row(log.store, c.id) for c in flying]
        before = await counts(log.store, log.session)
        assert await log.store.recover(NOW) == len(flying)
        expected = []
        for c, (state, _, finished_at, last_error, attempts, cycle_base) in zip(
            flying, rows, strict=True
        ):
            assert state == State.PROCESSING
            delivery = Delivery(attempts, cycle_base, State.PROCESSING, last_error, finished_at)
            t = transition(delivery, Interrupted(), webhook_for(hook), NOW)
            expected.append(t)
            assert await row(log.store, c.id) == as_row(t), (hook, c.attempt)
        after = await counts(log.store, log.session)
        assert (after[0] - before[0], after[1] - before[1]) == stats_change(expected)
        assert await log.store.recover(NOW + 1) == 0  # nothing in flight any more
    finally:
        await log.store.close()


# ------------------------------------------------------------- retry_failed
@pytest.mark.parametrize("hook", HOOKS)
async def test_retry_failed_writes_what_transition_decides(
    open_store: OpenStore, hook: Hook
) -> None:
    log = await Log.open(open_store)
    try:
        failed = [await log.failed(1), await log.failed(3, retried=True)]
        await log.make(hook, leave_rows=True)
        rows = [await row(log.store, d) for d in failed]
        before = await counts(log.store, log.session)
        result = await log.store.retry_failed(log.session, NOW)
        done: list[tuple[int, Transition]] = []
        for delivery_id, (state, _, finished_at, last_error, attempts, cycle_base) in zip(
            failed, rows, strict=True
        ):
            delivery = Delivery(attempts, cycle_base, State(state), last_error, finished_at)
            try:
                t = transition(delivery, ManualRetry(), webhook_for(hook), NOW)
            except NotAllowed:
                # skipped: the row stays as it was
                assert await row(log.store, delivery_id) == (
                    state,
                    None,
                    finished_at,
                    last_error,
                    attempts,
                    cycle_base,
                )
                continue
            done.append((delivery_id, t))
            assert await row(log.store, delivery_id) == as_row(t), (hook, attempts)
        assert result.retried == len(done)
        assert [(d.id, d.due_at) for d in result.due] == [
            (d, t.next_attempt_at) for d, t in done if t.queued
        ]
        assert result.parked == sum(not t.queued for _, t in done)
        after = await counts(log.store, log.session)
        assert (after[0] - before[0], after[1] - before[1]) == stats_change([t for _, t in done])
    finally:
        await log.store.close()


# ------------------------------------------------------------------- spies
@pytest.fixture
def sql_modules(backend: str) -> tuple[ModuleType, ModuleType]:
    """The backend's modules whose SQL calls transition(): (outcomes, history)."""
    return (pg_outcomes, pg_history) if backend == "postgres" else (outcomes, history)


def deciding(
    monkeypatch: pytest.MonkeyPatch, module: Any, decide: Transition
) -> list[tuple[Delivery, DeliveryOutcome, HasActive | None, float]]:
    """Make `module`'s transition() return `decide` whatever it is given; its calls."""
    calls: list[tuple[Delivery, DeliveryOutcome, HasActive | None, float]] = []

    def spy(
        delivery: Delivery, outcome: DeliveryOutcome, webhook: HasActive | None, now: float
    ) -> Transition:
        calls.append((delivery, outcome, webhook, now))
        return decide

    monkeypatch.setattr(module, "transition", spy)
    return calls


async def test_record_stores_whatever_transition_returns(
    open_store: OpenStore,
    monkeypatch: pytest.MonkeyPatch,
    sql_modules: tuple[ModuleType, ModuleType],
) -> None:
    outcomes, _ = sql_modules
    log = await Log.open(open_store)
    try:
        c = await log.in_flight(2)
        before = await counts(log.store, log.session)
        decide = Transition(State.RETRYING, NOW + 777, None, "decided by transition()", 2, 1)
        calls = deciding(monkeypatch, outcomes, decide)
        outcome = Outcome(c, NOW - 1, OK, "delivered", None)  # no rule makes this a retry
        await log.store.record([outcome], NOW)
        assert calls == [(Delivery.of(c), Recorded.of(outcome), WebhookState(True), NOW)]
        state, next_at, finished_at, error, _, _ = await row(log.store, c.id)
        assert (state, next_at, finished_at, error) == as_row(decide)[:4]
        assert await counts(log.store, log.session) == before  # stats=None: nothing counted
        assert await log.is_active() is True
    finally:
        await log.store.close()


async def test_recover_stores_whatever_transition_returns(
    open_store: OpenStore,
    monkeypatch: pytest.MonkeyPatch,
    sql_modules: tuple[ModuleType, ModuleType],
) -> None:
    outcomes, _ = sql_modules
    log = await Log.open(open_store)
    try:
        c = await log.in_flight(1)
        decide = Transition(State.RETRYING, NOW + 5, T0, "decided by transition()", 42, 7)
        calls = deciding(monkeypatch, outcomes, decide)
        await log.make("inactive")  # no rule queues a delivery behind an inactive webhook
        assert await log.store.recover(NOW) == 1
        assert calls == [
            (Delivery(1, 0, State.PROCESSING, None, None), Interrupted(), WebhookState(False), NOW)
        ]
        assert await row(log.store, c.id) == as_row(decide)
    finally:
        await log.store.close()


async def test_retry_failed_stores_whatever_transition_returns(
    open_store: OpenStore,
    monkeypatch: pytest.MonkeyPatch,
    sql_modules: tuple[ModuleType, ModuleType],
) -> None:
    _, history = sql_modules
    log = await Log.open(open_store)
    try:
        delivery_id = await log.failed(2)
        before = await row(log.store, delivery_id)
        decide = Transition(State.RETRYING, NOW + 9, None, "decided by transition()", 2, 1)
        calls = deciding(monkeypatch, history, decide)
        result = await log.store.retry_failed(log.session, NOW)
        assert calls == [
            (
                Delivery(2, 0, State.FAILED, before[3], before[2]),
                ManualRetry(),
                WebhookState(True),
                NOW,
            )
        ]
        # attempts are not the manual retry's to change
        assert await row(log.store, delivery_id) == (*as_row(decide)[:4], 2, 1)
        assert [(d.id, d.due_at) for d in result.due] == [(delivery_id, NOW + 9)]
        assert await counts(log.store, log.session) == (0, 1)  # stats=None: still failed

        def refuse(*_: object) -> Transition:
            raise NotAllowed("no")

        monkeypatch.setattr(history, "transition", refuse)
        delivery_id = await log.failed(1)
        assert (await log.store.retry_failed(log.session, NOW)).retried == 0
        assert (await row(log.store, delivery_id))[0] == State.FAILED
    finally:
        await log.store.close()
