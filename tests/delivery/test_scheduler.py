"""The scheduler with a real SQLite store, an injected clock and a scripted sender."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from support import eventually, make_config

from wahookd.clock import FakeClock
from wahookd.delivery.scheduler import Scheduler
from wahookd.events import validate_event
from wahookd.models import AttemptResult, Claimed, DueItem, Webhook
from wahookd.registry import Registry
from wahookd.store import IngestItem, SqliteStore, StorageUnavailable, Store
from wahookd.store.postgres import PgStore

OK = AttemptResult(200, None, 5, "OK", None, "2xx")
FAIL = AttemptResult(500, "HTTP 500", 5, "", None, "5xx")


class ScriptedSender:
    """Answers attempts from a function; can hold them open to measure concurrency."""

    def __init__(self, answer: Callable[[Webhook, Claimed], AttemptResult] = lambda w, c: OK):
        self.answer = answer
        self.calls: list[tuple[int, int, int]] = []  # (webhook id, delivery id, attempt)
        self.gate: asyncio.Event | None = None
        self.open_now = 0
        self.most_open = 0

    def begin(self, *args: object) -> None:
        """No pooled connections here: every attempt takes the task path (attempt())."""
        return None

    async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
        self.calls.append((webhook.id, claimed.id, claimed.attempt))
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return self.answer(webhook, claimed)
        finally:
            self.open_now -= 1


@pytest.fixture(params=["sqlite", "postgres"])
async def store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """The scheduler's tests run on both backends (a fresh PostgreSQL database each)."""
    s: Store
    if request.param == "postgres":
        s = await PgStore.open(request.getfixturevalue("pg_dsn"), "normal")
    else:
        s = await SqliteStore.open(tmp_path / "q.db")
    yield s
    await s.close()


async def add_webhook(store: Store, registry: Registry, session: str) -> Webhook:
    hook, _ = await store.put_session_webhook(
        session, f"https://{session}.example/h", ["*"], None, True, [], 0.0
    )
    registry.put(hook)
    return hook


async def ingest(store: Store, hook: Webhook, n: int, now: float, start: int = 0) -> list[int]:
    items = [
        IngestItem(
            validate_event(
                {"event": "session.disconnected", "sessionId": hook.session, "reason": f"r{i}"},
                now=now,
            ),
            (hook.id,),
        )
        for i in range(start, start + n)
    ]
    results = await store.ingest(items, now)
    return [d.id for r in results for d in r.deliveries]


async def assert_nothing_queued(store: Store) -> None:
    counts = await store.queue_counts(None)
    assert counts == {"pending": 0, "processing": 0, "failed": 0, "retrying": 0}


def make_scheduler(
    tmp_path: Path,
    store: Store,
    registry: Registry,
    sender: ScriptedSender,
    clock: FakeClock,
    **kwargs: object,
) -> Scheduler:
    delivery = make_config(
        tmp_path, retry_schedule=["30s", "5m"], **kwargs.pop("delivery", {})
    ).delivery  # type: ignore[arg-type]
    return Scheduler(store, registry, sender, delivery, clock, **kwargs)  # type: ignore[arg-type]


async def test_delivers_everything_with_a_small_window(tmp_path: Path, store: Store) -> None:
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    a, b = await add_webhook(store, registry, "a"), await add_webhook(store, registry, "b")
    ids = await ingest(store, a, 300, clock.time()) + await ingest(store, b, 300, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, window=40, lane_cap=25)
    peak = 0
    for _ in range(1000):
        progressed = await sched.step()
        peak = max(peak, sched.in_memory)
        if sched.tasks:
            await asyncio.wait(sched.tasks)
        elif not progressed:
            break
    assert sorted(c[1] for c in sender.calls) == sorted(ids)  # each exactly once
    assert peak <= 2 * 25 + 40
    await assert_nothing_queued(store)


async def test_failed_attempt_waits_its_step_on_the_injected_clock(
    tmp_path: Path, store: Store
) -> None:
    clock, registry = FakeClock(), Registry()
    sender = ScriptedSender(lambda w, c: FAIL)
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 1, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock)
    await sched.run_until_idle()
    assert [c[2] for c in sender.calls] == [1]
    clock.advance(29.9)
    await sched.run_until_idle()
    assert len(sender.calls) == 1
    clock.advance(0.1)
    await sched.run_until_idle()
    assert [c[2] for c in sender.calls] == [1, 2]
    clock.advance(300)
    await sched.run_until_idle()
    assert [c[2] for c in sender.calls] == [1, 2, 3]
    clock.advance(10_000)
    await sched.run_until_idle()
    assert len(sender.calls) == 3  # ladder exhausted
    assert (await store.queue_counts(None))["failed"] == 1


async def test_per_webhook_and_global_limits(tmp_path: Path, store: Store) -> None:
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    sender.gate = asyncio.Event()
    hooks = [await add_webhook(store, registry, f"s{i}") for i in range(4)]
    for hook in hooks:
        await ingest(store, hook, 20, clock.time())
    sched = make_scheduler(
        tmp_path,
        store,
        registry,
        sender,
        clock,
        delivery={"concurrency": 10, "per_webhook_concurrency": 3},
    )
    for _ in range(5):
        await sched.step()
    await asyncio.sleep(0)
    assert sched.inflight == 10
    per_hook = {h.id: sum(1 for c in sender.calls if c[0] == h.id) for h in hooks}
    assert max(per_hook.values()) <= 3
    sender.gate.set()
    await sched.run_until_idle()
    assert len(sender.calls) == 80


async def test_backlog_of_due_retries_does_not_starve_a_healthy_webhook(
    tmp_path: Path, store: Store
) -> None:
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    sender.gate = asyncio.Event()  # every attempt hangs: a dead receiver that times out
    dead = await add_webhook(store, registry, "dead")
    await ingest(store, dead, 500, clock.time())
    sched = make_scheduler(
        tmp_path,
        store,
        registry,
        sender,
        clock,
        window=100,
        lane_cap=50,
        delivery={"concurrency": 20, "per_webhook_concurrency": 4},
    )
    for _ in range(3):
        await sched.step()
    healthy = await add_webhook(store, registry, "healthy")
    clock.advance(1)
    (new_id,) = await ingest(store, healthy, 1, clock.time())
    sched.push([d for d in [_due(new_id, healthy.id, clock.time())]])
    await sched.step()
    await asyncio.sleep(0)
    assert (healthy.id, new_id, 1) in sender.calls
    assert sum(1 for c in sender.calls if c[0] == dead.id) == 4
    assert sched.in_memory <= 50 + 100
    sender.gate.set()
    await sched.drain(5)


def _due(delivery_id: int, webhook_id: int, at: float):
    from wahookd.models import DueItem

    return DueItem(at, delivery_id, webhook_id)


async def test_older_event_goes_first_among_due(tmp_path: Path, store: Store) -> None:
    clock, registry = FakeClock(), Registry()
    first_try = {}

    def answer(w: Webhook, c: Claimed) -> AttemptResult:
        first_try.setdefault(c.id, True)
        return FAIL if c.id == 1 and c.attempt == 1 else OK

    sender = ScriptedSender(answer)
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 1, clock.time())  # delivery 1 fails, retries at +30 s
    sched = make_scheduler(
        tmp_path, store, registry, sender, clock, delivery={"per_webhook_concurrency": 1}
    )
    await sched.run_until_idle()
    clock.advance(10)
    sender.gate = asyncio.Event()
    later = await ingest(store, hook, 2, clock.time(), start=1)  # newer events, due at +10 s
    sched.push([_due(i, hook.id, clock.time()) for i in later])
    await sched.step()  # claims one of the new ones (limit 1 in flight)
    clock.advance(30)  # now the retry of the older event is due too
    sender.gate.set()
    await sched.run_until_idle()
    order = [c[1] for c in sender.calls]
    assert order == [1, later[0], 1, later[1]]


async def test_many_backlogged_webhooks_cost_lane_keep_each(tmp_path: Path, store: Store) -> None:
    """Dead receivers behind long backlogs: memory is the window plus a few per webhook."""
    clock, registry = FakeClock(), Registry()
    sender = ScriptedSender(lambda w, c: FAIL)
    sender.gate = asyncio.Event()  # every attempt hangs: nothing drains
    hooks = [await add_webhook(store, registry, f"s{i}") for i in range(12)]
    for hook in hooks:
        await ingest(store, hook, 300, clock.time())
    sched = make_scheduler(
        tmp_path,
        store,
        registry,
        sender,
        clock,
        window=200,
        lane_cap=150,
        delivery={"per_webhook_concurrency": 2, "concurrency": 4},
    )
    assert sched.window.lane_keep == 64
    peak = 0
    for _ in range(50):
        await sched.step()
        peak = max(peak, sched.in_memory)
    overflowed = [lane for lane in sched.window.lanes.values() if lane.overflow]
    assert len(overflowed) >= 10
    # without the shrink each overflowed lane would keep lane_cap (150): 12 x 150 = 1800
    assert peak <= 2 * 200 + 12 * 64, peak
    assert sched.inflight == 4
    sender.gate.set()
    await asyncio.wait(sched.tasks)


async def test_a_crashing_attempt_is_a_failed_attempt(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock, registry = FakeClock(), Registry()

    def boom(w: Webhook, c: Claimed) -> AttemptResult:
        raise RuntimeError("a bug in the sender")

    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 1, clock.time())
    sched = make_scheduler(tmp_path, store, registry, ScriptedSender(boom), clock)
    await sched.run_until_idle()
    # recorded and scheduled for its retry, not left `processing` forever
    counts = await store.queue_counts(None)
    assert counts["retrying"] == 1 and counts["processing"] == 0
    assert "crashed" in caplog.text


async def test_a_push_during_a_lane_reload_is_not_lost(tmp_path: Path, store: Store) -> None:
    clock, registry = FakeClock(), Registry()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 1, clock.time())
    sched = make_scheduler(tmp_path, store, registry, ScriptedSender(), clock)
    sched.window.lane(hook.id).overflow = True  # as after a long backlog: the lane reloads itself
    sched.window.exhausted = True  # and the global refill has read everything else
    gate = asyncio.Event()
    original = store.load_webhook_due

    async def slow_read(webhook_id: int, limit: int):  # type: ignore[no-untyped-def]
        rows = await original(webhook_id, limit)  # read before the new event commits
        await gate.wait()
        return rows

    store.load_webhook_due = slow_read  # type: ignore[method-assign]
    refill = asyncio.create_task(sched.refill())
    await asyncio.sleep(0.05)
    (new_id,) = await ingest(store, hook, 1, clock.time(), start=1)
    sched.push([DueItem(clock.time(), new_id, hook.id)])
    gate.set()
    await refill
    assert new_id in sched.window


async def test_the_loop_sleeps_while_every_slot_is_busy(tmp_path: Path, store: Store) -> None:
    clock, registry = FakeClock(), Registry()
    sender = ScriptedSender()
    sender.gate = asyncio.Event()  # attempts hang: all slots stay busy
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 2, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, delivery={"concurrency": 2})
    steps = 0
    step = sched.step

    async def counted() -> bool:
        nonlocal steps
        steps += 1
        return await step()

    sched.step = counted  # type: ignore[method-assign]
    runner = asyncio.create_task(sched.run())
    await asyncio.sleep(0.05)  # both slots taken
    more = await ingest(store, hook, 18, clock.time(), start=2)  # due while slots are busy
    sched.push(DueItem(clock.time(), i, hook.id) for i in more)
    steps = 0
    await asyncio.sleep(0.3)
    busy_steps = steps
    sender.gate.set()
    await sched.drain(5)
    await runner
    # with 18 due deliveries waiting for 2 busy slots the loop used to spin on a zero
    # timeout (thousands of rounds); now it waits for a slot to free
    assert busy_steps < 20, busy_steps
    assert len(sender.calls) >= 2


async def test_a_freed_slot_is_claimed_in_the_commit_of_its_outcome(
    tmp_path: Path, store: Store
) -> None:
    # With one slot, each finished attempt's outcome and the next delivery's claim
    # share a transaction: about one commit per delivery, not two (record, then claim).
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    hook = await add_webhook(store, registry, "a")
    ids = await ingest(store, hook, 20, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, delivery={"concurrency": 1})
    before = store.commits
    await sched.run_until_idle()
    assert [c[1] for c in sender.calls] == ids  # in order, one at a time
    assert sender.most_open == 1
    assert store.commits - before <= len(ids) + 2, store.commits - before
    await assert_nothing_queued(store)


async def test_processing_never_exceeds_concurrency_while_outcomes_commit(
    tmp_path: Path, store: Store
) -> None:
    # the handover keeps the invariant the crash guarantee rests on (SPEC §7)
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 60, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, delivery={"concurrency": 4})
    peaks: list[int] = []

    def counted(write):  # type: ignore[no-untyped-def]
        async def write_and_count(*args, **kwargs):  # type: ignore[no-untyped-def]
            result = await write(*args, **kwargs)
            peaks.append((await store.queue_counts(None))["processing"])
            return result

        return write_and_count

    # every write of the scheduler's, on either backend
    for name in ("claim", "record", "record_and_claim"):
        setattr(store, name, counted(getattr(store, name)))
    await sched.run_until_idle()
    assert len(sender.calls) == 60
    assert peaks and max(peaks) <= 4, peaks


async def test_a_commit_that_claims_more_than_it_frees_reserves_nothing_extra(
    tmp_path: Path, store: Store
) -> None:
    # A batch of 1 outcome whose commit also claims 4 deliveries (3 slots were free
    # besides its own) must leave no slot free while it commits: the loop claiming the
    # "free" 3 meanwhile would put 7 deliveries `processing` with concurrency 4.
    clock, registry = FakeClock(), Registry()
    first_done, gate = asyncio.Event(), asyncio.Event()

    class HoldFirst(ScriptedSender):
        async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
            self.calls.append((webhook.id, claimed.id, claimed.attempt))
            if len(self.calls) == 1:
                await first_done.wait()
            return OK

    sender = HoldFirst()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 1, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, delivery={"concurrency": 4})
    await sched.step()
    await asyncio.sleep(0)
    assert sched.inflight == 1
    # more arrive; the recorder's commit will pick them before the loop runs again
    ids = await ingest(store, hook, 8, clock.time(), start=1)
    sched.push([DueItem(clock.time(), i, hook.id) for i in ids])
    original = store.record_and_claim

    async def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await original(*args, **kwargs)

    store.record_and_claim = held  # type: ignore[method-assign]
    first_done.set()
    await eventually(lambda: sched.inflight == 4)  # the commit picked 4 for the freed slots
    assert sched.free_slots == 0
    assert not await sched.step()  # nothing more may be claimed while it commits
    gate.set()
    await eventually(lambda: sched.recorder.task is None)
    assert (await store.queue_counts(None))["processing"] <= 4


async def test_drain_waits_for_the_outcomes_of_attempts_that_end_during_it(
    tmp_path: Path, store: Store
) -> None:
    # Attempts that end while the daemon drains must have their outcomes committed
    # before drain() returns: shutdown runs Store.recover() next, which would queue
    # the still-`processing` deliveries again and they would be sent twice. Two waves:
    # the second ends while the first's outcomes are being written.
    clock, registry = FakeClock(), Registry()
    waves = [asyncio.Event(), asyncio.Event()]

    class TwoWaves(ScriptedSender):
        async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
            self.calls.append((webhook.id, claimed.id, claimed.attempt))
            await waves[claimed.id % 2].wait()
            return OK

    sender = TwoWaves()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 8, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock)
    original = store.record

    async def record_then_release_the_second_wave(*args, **kwargs):  # type: ignore[no-untyped-def]
        waves[1].set()
        return await original(*args, **kwargs)

    store.record = record_then_release_the_second_wave  # type: ignore[method-assign]
    await sched.step()
    await asyncio.sleep(0)  # the attempts start
    assert len(sender.calls) == 8
    draining = asyncio.create_task(sched.drain(grace_s=5.0))
    await asyncio.sleep(0)
    waves[0].set()
    assert await draining == 0
    assert await store.recover(clock.time()) == 0
    await assert_nothing_queued(store)


async def test_drain_cancels_attempts_past_the_grace(tmp_path: Path, store: Store) -> None:
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 3, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock)
    sender.gate = asyncio.Event()  # never opened: the attempts hang
    await sched.step()
    assert await sched.drain(grace_s=0.05) == 3
    assert await store.recover(clock.time()) == 3  # back to the queue, attempted again later


class GatedSender(ScriptedSender):
    """Each attempt waits until the test releases its delivery id."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[int, asyncio.Event] = {}

    async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
        self.calls.append((webhook.id, claimed.id, claimed.attempt))
        await self.gates.setdefault(claimed.id, asyncio.Event()).wait()
        return OK

    def release(self, delivery_id: int) -> None:
        self.gates.setdefault(delivery_id, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def processing(store: Store) -> int:
    return (await store.queue_counts(None))["processing"]


async def test_outcomes_storage_refused_keep_their_slots_until_written(
    tmp_path: Path, store: Store
) -> None:
    # A refused outcome's row stays `processing`: its slot must stay taken until the
    # loop writes it, or claims could push `processing` past `concurrency` (and a crash
    # then would repeat more attempts than that).
    clock, registry, sender = FakeClock(), Registry(), GatedSender()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 10, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, delivery={"concurrency": 2})
    real = store.record_and_claim
    refusals = [StorageUnavailable("database is locked (once)")]

    async def refuse_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        if refusals:
            raise refusals.pop()
        return await real(*args, **kwargs)

    store.record_and_claim = refuse_once  # type: ignore[method-assign]
    peaks = []
    await sched.step()
    await settle()
    first, second = (c[1] for c in sender.calls)
    sender.release(first)  # its commit is refused
    await settle()
    peaks.append(await processing(store))
    sender.release(second)  # storage is back
    await settle()
    peaks.append(await processing(store))
    await sched.step()  # the loop writes the refused outcome, then claims
    await settle()
    peaks.append(await processing(store))
    assert max(peaks) <= 2, peaks
    for i in range(1, 11):
        sender.release(i)
    await sched.run_until_idle()
    assert sched.recorder.reserved == 0
    await assert_nothing_queued(store)


async def test_a_commit_that_ends_after_shutdown_began_starts_no_attempt(
    tmp_path: Path, store: Store
) -> None:
    # the recorder picked the next delivery and was committing when SIGTERM came: its
    # claim must not start an attempt that drain() would not wait for
    clock, registry, sender = FakeClock(), Registry(), GatedSender()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 5, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, delivery={"concurrency": 1})
    real = store.record_and_claim
    fsync = asyncio.Event()

    async def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        await fsync.wait()
        return await real(*args, **kwargs)

    store.record_and_claim = slow  # type: ignore[method-assign]
    await sched.step()
    await settle()
    sender.release(sender.calls[0][1])  # its outcome commits with the next one's claim
    await settle()
    draining = asyncio.create_task(sched.drain(grace_s=5.0))
    await settle()
    fsync.set()
    assert await draining == 0
    assert len(sender.calls) == 1  # nothing started after the shutdown began
    assert not sched.attempts_in_flight()
    assert await store.recover(clock.time()) == 1  # the claimed one goes back to the queue


async def test_a_bug_after_the_commit_strands_no_claimed_delivery(
    tmp_path: Path, store: Store
) -> None:
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 6, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock, delivery={"concurrency": 2})
    bugs = [RuntimeError("a bug in a metrics hook")]

    def on_outcome(outcome: object) -> None:
        if bugs:
            raise bugs.pop()

    sched.on_outcome = on_outcome
    await sched.run_until_idle()
    assert len(sender.calls) == 6
    await assert_nothing_queued(store)


async def test_a_bug_in_a_round_is_logged_and_the_loop_goes_on(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # a non-storage error in a claim once ended the loop's task with nothing logged:
    # the daemon stayed up and delivered nothing
    clock, registry, sender = FakeClock(), Registry(), ScriptedSender()
    hook = await add_webhook(store, registry, "a")
    await ingest(store, hook, 3, clock.time())
    sched = make_scheduler(tmp_path, store, registry, sender, clock)
    real = store.claim
    bugs = [RuntimeError("a bug in the claim")]

    async def buggy(*args, **kwargs):  # type: ignore[no-untyped-def]
        if bugs:
            raise bugs.pop()
        return await real(*args, **kwargs)

    store.claim = buggy  # type: ignore[method-assign]
    assert await sched.step() is False
    assert "scheduler round failed" in caplog.text and "a bug in the claim" in caplog.text
    assert sched.backoffs == 1 and sched.inflight == 0  # what it picked went back
    await sched.run_until_idle()
    assert len(sender.calls) == 3
    await assert_nothing_queued(store)
