"""Cluster-wide `per_webhook_concurrency` and `rateLimit` (SPEC §10) in PostgreSQL claims.

Several `PgStore`s on one database are several nodes; claims given `ClaimLimits` keep
the limits for all of them (store/postgres/limits.py). Times are injected: no sleeping.
Then two schedulers on two nodes: the ids a limit held back wait in the window instead
of being claimed again at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import make_config

from wahookd.clock import FakeClock
from wahookd.delivery.scheduler import Scheduler
from wahookd.events import validate_event
from wahookd.models import AttemptResult, Claimed, DueItem, Outcome, Webhook
from wahookd.registry import Registry
from wahookd.store import IngestItem, StorageUnavailable
from wahookd.store.postgres import PgStore
from wahookd.store.postgres import limits as limits_sql
from wahookd.store.postgres.limits import DEMAND_S, refill
from wahookd.store.protocol import ClaimLimits

T0 = 1_700_000_000.0
OK = AttemptResult(200, None, 12, "OK", None, "2xx")

Nodes = Callable[[], Awaitable[PgStore]]


@pytest.fixture
async def node(pg_dsn: str) -> AsyncIterator[Nodes]:
    """Opens another node on the test's database; all of them are closed at the end."""
    opened: list[PgStore] = []

    async def open_() -> PgStore:
        store = await PgStore.open(pg_dsn, "normal", lease_s=300.0)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        if not store._closing:
            await store.close()


async def queued(
    store: PgStore, count: int, session: str = "s1", rate: int | None = None
) -> tuple[Webhook, list[int]]:
    hook, _ = await store.put_session_webhook(
        session, "https://a.example/", ["*"], None, True, [], T0
    )
    if rate is not None:
        await store.execute("UPDATE webhooks SET rate_limit = $1 WHERE id = $2", rate, hook.id)
        hook = next(w for w in await store.webhooks() if w.id == hook.id)
    items = [
        IngestItem(
            validate_event(
                {"event": "session.disconnected", "sessionId": session, "reason": f"r{i}"},
                now=int(T0),
            ),
            (hook.id,),
        )
        for i in range(count)
    ]
    results = await store.ingest(items, T0)
    return hook, [r.deliveries[0].id for r in results]


async def processing(store: PgStore, webhook_id: int) -> int:
    ((count,),) = await store.fetch(
        "SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND state = 'processing'",
        webhook_id,
    )
    return int(count)


# ------------------------------------------------------------- concurrency
async def test_nodes_claiming_at_once_never_exceed_the_per_webhook_limit(node: Nodes) -> None:
    limit = 5
    stores = [await node() for _ in range(4)]
    hook, ids = await queued(stores[0], 120)
    other, other_ids = await queued(stores[0], 20, session="s2")
    rng = random.Random(7)
    held: dict[int, tuple[PgStore, Claimed]] = {}  # in flight: delivery id -> node, claim
    finished: set[int] = set()
    refusals = 0
    for _ in range(300):
        if len(finished) == 140:
            break
        # every node claims an overlapping batch of what is still due, at once; some
        # also record attempts of theirs that ended, in the same transaction
        due = [i for i in ids + other_ids if i not in held and i not in finished]

        async def work(store: PgStore, batch: list[int]) -> list[Claimed]:
            nonlocal refusals
            mine = [c for s, c in held.values() if s is store]
            done = rng.sample(mine, k=min(len(mine), rng.randint(0, 3)))
            outcomes = [Outcome(c, T0 + 1, OK, "delivered", None) for c in done]
            for c in done:
                del held[c.id]
                finished.add(c.id)
            limits = ClaimLimits(limit)
            if outcomes:
                _, got = await store.record_and_claim(outcomes, batch, T0 + 2, limits=limits)
            else:
                got = await store.claim(batch, T0 + 2, limits=limits)
            if limits.refused:
                assert set(limits.refused.values()) == {None}  # no rate limit here
                refusals += 1
            return got

        batches = [rng.sample(due, k=min(len(due), 12)) for _ in stores]
        results = await asyncio.gather(*(work(s, b) for s, b in zip(stores, batches, strict=True)))
        for store, got in zip(stores, results, strict=True):
            for c in got:
                assert c.id not in held
                held[c.id] = (store, c)
        assert await processing(stores[0], hook.id) <= limit
        assert await processing(stores[0], other.id) <= limit
        assert sum(1 for _, c in held.values() if c.webhook_id == hook.id) <= limit
    else:
        raise AssertionError("the deliveries did not all finish")
    (done,) = await stores[0].fetch("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
    assert done == (140,)
    assert refusals > 0  # the limit did hold claims back


async def test_a_claim_with_a_record_counts_the_slots_it_frees(node: Nodes) -> None:
    a, b = await node(), await node()
    hook, ids = await queued(a, 10)
    first = await a.claim(ids[:3], T0 + 1, limits=ClaimLimits(3))
    assert len(first) == 3
    limits = ClaimLimits(3)
    assert await b.claim(ids[3:], T0 + 2, limits=limits) == []  # a holds every slot
    assert limits.refused == {hook.id: None}
    # later (b stopped asking: DEMAND_S), a records two of its attempts and claims in
    # one transaction: the two slots are free
    outcomes = [Outcome(c, T0 + 1, OK, "delivered", None) for c in first[:2]]
    later = T0 + 2 + DEMAND_S + 0.1
    _, got = await a.record_and_claim(outcomes, ids[3:], later, limits=ClaimLimits(3))
    assert [c.id for c in got] == ids[3:5]  # the oldest first
    assert await processing(a, hook.id) == 3


async def test_the_slots_are_shared_among_the_nodes_that_want_them(node: Nodes) -> None:
    a, b = await node(), await node()
    hook, ids = await queued(a, 20)
    held = await a.claim(ids[:4], T0 + 1, limits=ClaimLimits(4))
    assert len(held) == 4  # alone: every slot
    limits = ClaimLimits(4)
    assert await b.claim(ids[4:8], T0 + 2, limits=limits) == []
    assert limits.refused == {hook.id: None}  # b now wants a share
    # two of a's attempts end: it may not hand their slots to its own next deliveries,
    # it holds its share (4 over 2 nodes) already
    done = [Outcome(c, T0 + 1, OK, "delivered", None) for c in held[:2]]
    _, got = await a.record_and_claim(done, ids[8:12], T0 + 3, limits=ClaimLimits(4))
    assert got == []
    got = await b.claim(ids[4:8], T0 + 3.5, limits=ClaimLimits(4))
    assert [c.id for c in got] == ids[4:6]  # b's share
    assert await processing(a, hook.id) == 4
    # once b has nothing in flight and stopped asking, a is alone again: every slot
    await a.record([Outcome(c, T0 + 4, OK, "delivered", None) for c in held[2:]], T0 + 5)
    await b.record([Outcome(c, T0 + 4, OK, "delivered", None) for c in got], T0 + 5)
    assert await processing(a, hook.id) == 0
    got = await a.claim(ids[8:16], T0 + 10, limits=ClaimLimits(4))
    assert len(got) == 4


async def test_ordered_deliveries_under_the_limit(node: Nodes) -> None:
    a = await node()
    hook, _ = await queued(a, 0)
    items = [
        IngestItem(
            validate_event(
                {"event": "session.disconnected", "sessionId": "s1", "reason": f"r{i}"},
                now=int(T0),
            ),
            (hook.id,),
            (f"chat{i % 2}",),
        )
        for i in range(6)
    ]
    await a.ingest(items, T0)
    due = await a.fetch("SELECT id FROM deliveries WHERE next_attempt_at IS NOT NULL ORDER BY id")
    heads = [r[0] for r in due]
    assert len(heads) == 2  # one head per chat, the rest held
    limits = ClaimLimits(1)
    got = await a.claim(heads, T0 + 1, limits=limits)
    assert [c.id for c in got] == heads[:1]  # one slot: the older head
    assert limits.refused == {hook.id: None}
    # the other head stays due, untouched; nothing held was woken
    rows = await a.fetch("SELECT id FROM deliveries WHERE next_attempt_at IS NOT NULL ORDER BY id")
    assert [r[0] for r in rows] == heads[1:]
    assert await processing(a, hook.id) == 1


async def test_a_node_stalled_inside_a_claim_does_not_stall_the_others(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a short lease: a claim's limit locks may sit idle 1 s (half of it) at most
    a = await PgStore.open(pg_dsn, "normal", lease_s=2.0)
    b = await PgStore.open(pg_dsn, "normal", lease_s=2.0)
    try:
        _, ids = await queued(a, 4)
        holding = asyncio.Event()
        real_take = limits_sql.take

        async def stalls(*args: Any) -> list[int]:
            if not holding.is_set():  # the first claim: it holds the locks, then stalls
                holding.set()
                await asyncio.sleep(4.0)  # SIGSTOP, a long pause
            return await real_take(*args)

        monkeypatch.setattr(limits_sql, "take", stalls)
        stalled = asyncio.create_task(a.claim(ids, T0 + 1, limits=ClaimLimits(10)))
        await holding.wait()
        started = time.monotonic()
        got = await b.claim(ids, T0 + 1, limits=ClaimLimits(10))
        waited = time.monotonic() - started
        assert len(got) == 4
        assert waited < 3.0, waited  # the server ended the stalled transaction
        with pytest.raises(StorageUnavailable):
            await stalled  # its connection is gone; it claimed nothing
    finally:
        await a.close()
        await b.close()


# -------------------------------------------------------------- rate limit
def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    assert refill(None, None, 5, T0) == (5.0, T0)  # no row: full
    assert refill(0.0, T0, 5, T0 + 0.5) == (2.5, T0 + 0.5)
    assert refill(1.0, T0, 5, T0 + 100) == (5.0, T0 + 100)  # never past the burst
    assert refill(1.0, T0, 5, T0 - 3) == (1.0, T0)  # a clock behind refills nothing


async def test_nodes_claim_at_most_burst_plus_rate_times_t(node: Nodes) -> None:
    rate = 5
    stores = [await node() for _ in range(3)]
    hook, ids = await queued(stores[0], 400, rate=rate)
    # the bucket starts full: a burst of `rate`, then nothing until a token refills
    limits = ClaimLimits(1000)
    got = await stores[0].claim(ids[:20], T0, limits=limits)
    assert len(got) == rate
    limits = ClaimLimits(1000)
    assert await stores[1].claim(ids[20:40], T0 + 0.1, limits=limits) == []
    assert limits.refused[hook.id] == pytest.approx(T0 + 0.2)  # when the next token is
    assert len(await stores[2].claim(ids[20:40], T0 + 0.2, limits=ClaimLimits(1000))) == 1
    claimed = rate + 1
    # then the nodes claim at once at random times for 30 s (injected: no sleeping)
    rng = random.Random(11)
    now = T0 + 0.2
    due = [i for i in ids if i not in {c.id for c in got}][1:]
    while now < T0 + 30:
        now += rng.choice((0.01, 0.05, 0.13, 0.3, 0.7))
        # the nodes' clocks differ a little: some claim with a time slightly behind
        times = [now - rng.choice((0.0, 0.0, 0.02)) for _ in stores]
        batches = [due[k * 8 : k * 8 + 8] for k in range(len(stores))]
        results = await asyncio.gather(
            *(
                s.claim(b, t, limits=ClaimLimits(1000))
                for s, b, t in zip(stores, batches, times, strict=True)
            )
        )
        taken = {c.id for got in results for c in got}
        claimed += len(taken)
        due = [i for i in due if i not in taken]
        assert claimed <= rate + rate * (now - T0) + 1e-6, now
    # and the limit is a rate, not a starvation: nearly every token was used
    assert claimed >= rate * (now - T0) - rate
    assert await processing(stores[0], hook.id) == claimed


async def test_a_webhook_without_a_rate_limit_is_not_throttled(node: Nodes) -> None:
    a = await node()
    _, ids = await queued(a, 50)
    assert len(await a.claim(ids, T0, limits=ClaimLimits(1000))) == 50
    assert await a.fetch("SELECT count(*) FROM webhook_tokens") == [(0,)]


# --------------------------------------------------- schedulers on two nodes
class GatedSender:
    """Holds every attempt open until `gate` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[int] = []

    def begin(self, *args: object) -> None:
        return None

    async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
        self.calls.append(claimed.id)
        await self.gate.wait()
        return OK


def scheduler(tmp_path: Path, store: PgStore, hook: Webhook, clock: FakeClock) -> Scheduler:
    registry = Registry()
    registry.put(hook)
    delivery = make_config(tmp_path, per_webhook_concurrency=3, concurrency=50).delivery
    return Scheduler(store, registry, GatedSender(), delivery, clock)  # type: ignore[arg-type]


def counting_claims(store: PgStore) -> list[int]:
    """Wraps store.claim; the list grows by the number of ids asked at each call."""
    calls: list[int] = []
    real = store.claim

    async def claim(ids, now, limits=None):  # type: ignore[no-untyped-def]
        calls.append(len(ids))
        return await real(ids, now, limits=limits)

    store.claim = claim  # type: ignore[method-assign]
    return calls


async def test_a_lane_held_back_by_the_cluster_waits_instead_of_claiming_again(
    tmp_path: Path, node: Nodes
) -> None:
    a, b = await node(), await node()
    hook, ids = await queued(a, 20)
    clock = FakeClock(T0 + 1)
    first, second = scheduler(tmp_path, a, hook, clock), scheduler(tmp_path, b, hook, clock)
    due = [DueItem(T0, i, hook.id) for i in ids]
    first.push(due)
    assert await first.step()
    assert first.inflight == 3  # every slot of the webhook, cluster-wide
    second.push(due[3:])  # what is still due
    calls = counting_claims(b)
    await second.step()  # picks 3, the claim refuses them: back to the window
    assert calls == [3] and second.inflight == 0 and second.in_memory == 17
    for _ in range(50):  # the loop runs again and again at the same instant
        assert not await second.step()
    assert calls == [3]  # no claim until the lane's backoff passed
    wait = second._next_wake()
    assert wait == pytest.approx(0.05)
    clock.advance(0.05)
    await second.step()
    assert calls == [3, 3]
    assert not await second.step()  # the ids it gave back are due: promoted, not picked
    assert second._next_wake() == pytest.approx(0.1)  # refused again: doubled
    assert await processing(a, hook.id) == 3
    # the first node's attempts end: its own commits hand the slots on, never past 3
    first.sender.gate.set()  # type: ignore[attr-defined]
    for _ in range(500):
        assert await processing(a, hook.id) <= 3
        if await a.fetch("SELECT count(*) FROM deliveries WHERE state = 'delivered'") == [(20,)]:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the first node did not deliver everything")
    assert calls == [3, 3]


async def test_a_lane_held_back_by_the_cluster_bucket_waits_for_its_token(
    tmp_path: Path, node: Nodes
) -> None:
    a, b = await node(), await node()
    hook, ids = await queued(a, 20, rate=2)
    clock = FakeClock(T0 + 1)
    first, second = scheduler(tmp_path, a, hook, clock), scheduler(tmp_path, b, hook, clock)
    due = [DueItem(T0, i, hook.id) for i in ids]
    first.push(due)
    assert await first.step()
    assert first.inflight == 2  # the burst
    second.push(due[2:])
    calls = counting_claims(b)
    await second.step()  # its own bucket allows 2; the cluster's is empty
    assert calls == [2] and second.inflight == 0
    assert not await second.step()
    assert second._next_wake() == pytest.approx(0.5)  # the cluster's next token
    for _ in range(20):
        assert not await second.step()
    assert calls == [2]
    clock.advance(0.5)
    assert await second.step()
    assert second.inflight == 1 and calls == [2, 1]
