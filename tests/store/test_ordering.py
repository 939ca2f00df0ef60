"""Ordering in the store (SPEC §8): one delivery per (webhook, key) in play, held rows unseen.

The invariant (wahookd/store/sqlite/ordering.py): among the unfinished deliveries of
one webhook and ordering key only the lowest id is due or in flight; the others are
held out of the due indexes, and each place that changes a delivery keeps the rule.
On SQLite and PostgreSQL (the `backend` fixture), but for the query plans (SQLite's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from wahookd.events import validate_event
from wahookd.models import AttemptResult, Claimed, DueItem, Outcome, State, Webhook
from wahookd.store import IngestItem, SqliteStore, StaticRow, WebhookFields

from .backends import AnyStore, execute, one, rows
from .conftest import OpenStore

T0 = 1_700_000_000.0
OK = AttemptResult(200, None, 3, "OK", None, "2xx")
FAIL = AttemptResult(500, "HTTP 500", 4, "no", None, "5xx")
ORDERED = WebhookFields(url="https://a.example/h", events=("*",), secret=None, is_active=True)


class Woken:
    """Collects what the store tells `on_due`, as the scheduler would."""

    def __init__(self) -> None:
        self.items: list[DueItem] = []

    def __call__(self, items: Sequence[DueItem]) -> None:
        self.items.extend(items)

    def take(self) -> list[int]:
        ids, self.items = [i.id for i in self.items], []
        return ids


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[AnyStore]:
    yield await open_store()


@pytest.fixture
def woken(store: AnyStore) -> Woken:
    w = Woken()
    store.on_due = w
    return w


async def hook(store: AnyStore, session: str = "s1") -> Webhook:
    return await store.create_webhook(session, ORDERED, T0)


def item(hook_id: int, key: str | None, n: int, session: str = "s1") -> IngestItem:
    ev = validate_event(
        {"event": "session.disconnected", "sessionId": session, "reason": f"r{n}"}, now=T0
    )
    return IngestItem(ev, (hook_id,), (key,))


async def ingest(store: AnyStore, hook_id: int, keys: Sequence[str | None]) -> list[int]:
    """The delivery ids, in ingest order; all in one call."""
    await store.ingest([item(hook_id, k, n) for n, k in enumerate(keys)], T0)
    found = await rows(store, "SELECT id FROM deliveries ORDER BY id DESC LIMIT ?", len(keys))
    return sorted(r[0] for r in found)


async def due(store: AnyStore) -> list[int]:
    return sorted(d.id for d in await store.load_due(None, 100_000, []))


async def state_of(store: AnyStore, delivery_id: int) -> tuple[str, float | None]:
    found = await one(
        store, "SELECT state, next_attempt_at FROM deliveries WHERE id = ?", delivery_id
    )
    assert found is not None
    state, next_at = found
    return state, next_at


def outcome(c: Claimed, kind: str) -> Outcome:
    if kind == "delivered":
        return Outcome(c, T0, OK, "delivered", None)
    if kind == "failed":
        return Outcome(c, T0, FAIL, "failed", None)
    return Outcome(c, T0, FAIL, "retry", T0 + 30)


async def test_ingest_holds_all_but_the_first_of_a_key(store: AnyStore) -> None:
    h = await hook(store)
    results = await store.ingest(
        [item(h.id, "a", 0), item(h.id, "a", 1), item(h.id, "b", 2), item(h.id, None, 3)], T0
    )
    assert [(len(r.deliveries), r.held) for r in results] == [(1, 0), (0, 1), (1, 0), (1, 0)]
    # a later call sees the unfinished ones of the earlier call
    (later,) = await store.ingest([item(h.id, "b", 4)], T0)
    assert (later.deliveries, later.held) == ((), 1)
    ids = [d.id for r in results for d in r.deliveries]
    assert await due(store) == ids
    counts = await store.queue_counts(None)
    assert counts["pending"] == 5  # held ones are queued, counted as pending


async def test_a_final_outcome_wakes_the_next_of_its_key_only(
    store: AnyStore, woken: Woken
) -> None:
    h = await hook(store)
    a1, b1, a2, a3 = await ingest(store, h.id, ["a", "b", "a", "a"])
    assert await due(store) == [a1, b1]
    (c1,) = await store.claim([a1], T0 + 1)
    assert c1.order_key == "a"
    await store.record([outcome(c1, "retry")], T0 + 2)
    assert woken.take() == []  # a retrying head still holds its key
    assert await due(store) == [a1, b1]
    (c1,) = await store.claim([a1], T0 + 31)
    await store.record([outcome(c1, "delivered")], T0 + 32)
    assert woken.take() == [a2]
    assert await state_of(store, a2) == ("pending", T0 + 32)
    assert await state_of(store, a3) == ("pending", None)
    (c2,) = await store.claim([a2], T0 + 33)
    await store.record([outcome(c2, "failed")], T0 + 34)  # a failed one releases its key
    assert woken.take() == [a3]
    assert await due(store) == [b1, a3]


async def test_claim_refuses_a_row_behind_its_head_and_wakes_the_head(
    store: AnyStore, woken: Woken
) -> None:
    h = await hook(store)
    a1, a2 = await ingest(store, h.id, ["a", "a"])

    # as if something made the second due and held the first
    await execute(store, "UPDATE deliveries SET next_attempt_at = ? WHERE id = ?", T0, a2)
    await execute(store, "UPDATE deliveries SET next_attempt_at = NULL WHERE id = ?", a1)
    assert await store.claim([a2], T0 + 1) == []
    assert woken.take() == [a1]
    assert await due(store) == [a1]
    # both picked at once: the head goes, the other is held
    await execute(store, "UPDATE deliveries SET next_attempt_at = 1 WHERE id > 0")
    claimed = await store.claim([a2, a1], T0 + 2)
    assert [c.id for c in claimed] == [a1]
    assert woken.take() == []  # its head is in flight now, not woken
    assert await state_of(store, a2) == ("pending", None)


async def test_re_enabling_wakes_heads_and_unkeyed_rows_only(store: AnyStore) -> None:
    h = await hook(store)
    a1, a2, n1, b1 = await ingest(store, h.id, ["a", "a", None, "b"])
    await store.set_webhook_active(h.id, False, T0 + 1)
    assert await due(store) == []
    await store.set_webhook_active(h.id, True, T0 + 2)
    assert await due(store) == [a1, n1, b1]
    assert await state_of(store, a2) == ("pending", None)


async def test_a_head_finishing_behind_an_inactive_webhook_wakes_nothing(
    store: AnyStore, woken: Woken
) -> None:
    h = await hook(store)
    a1, a2 = await ingest(store, h.id, ["a", "a"])
    (c1,) = await store.claim([a1], T0 + 1)
    await store.set_webhook_active(h.id, False, T0 + 2)
    await store.record([outcome(c1, "delivered")], T0 + 3)
    assert woken.take() == []
    await store.set_webhook_active(h.id, True, T0 + 4)
    assert await due(store) == [a2]


async def test_retrying_a_failed_one_puts_it_first_without_two_in_flight(
    store: AnyStore, woken: Woken
) -> None:
    h = await hook(store)
    a1, a2, a3 = await ingest(store, h.id, ["a", "a", "a"])
    (c1,) = await store.claim([a1], T0 + 1)
    await store.record([outcome(c1, "failed")], T0 + 2)
    assert woken.take() == [a2]
    (c2,) = await store.claim([a2], T0 + 3)
    # a1 comes back while a2 is in flight: it waits, and so does a3
    result = await store.retry_failed("s1", T0 + 4)
    assert (result.retried, result.parked, result.due) == (1, 0, [])
    assert await due(store) == []
    await store.record([outcome(c2, "delivered")], T0 + 5)
    assert woken.take() == [a1]
    (c1,) = await store.claim([a1], T0 + 6)
    await store.record([outcome(c1, "delivered")], T0 + 7)
    assert woken.take() == [a3]


async def test_retrying_a_failed_one_while_nothing_is_in_flight_holds_the_later_ones(
    store: AnyStore, woken: Woken
) -> None:
    h = await hook(store)
    a1, a2 = await ingest(store, h.id, ["a", "a"])
    (c1,) = await store.claim([a1], T0 + 1)
    await store.record([outcome(c1, "failed")], T0 + 2)
    assert woken.take() == [a2] and await due(store) == [a2]
    result = await store.retry_failed("s1", T0 + 3)
    assert [d.id for d in result.due] == [a1]
    assert await due(store) == [a1]  # a2 waits again, behind the older one
    assert await state_of(store, a2) == ("pending", None)


async def test_clearing_a_retrying_head_wakes_the_next(store: AnyStore, woken: Woken) -> None:
    h = await hook(store)
    a1, a2 = await ingest(store, h.id, ["a", "a"])
    (c1,) = await store.claim([a1], T0 + 1)
    await store.record([outcome(c1, "retry")], T0 + 2)
    removed = await store.clear_queue("s1", [State.RETRYING], T0 + 3)
    assert removed["retrying"] == 1
    assert woken.take() == [a2]
    assert await state_of(store, a2) == ("pending", T0 + 3)


async def test_keys_are_per_webhook(store: AnyStore) -> None:
    one, two = await hook(store), await hook(store)
    results = await store.ingest(
        [IngestItem(item(0, None, 0).event, (one.id, two.id), ("a", "a"))], T0
    )
    assert len(results[0].deliveries) == 2


async def test_a_long_backlog_behind_a_stuck_head_stays_out_of_the_due_index(
    store: AnyStore, woken: Woken
) -> None:
    h = await hook(store)
    keys = ["stuck"] * 10_000 + [f"chat{i}" for i in range(100)]
    ids = await ingest(store, h.id, keys)
    # the scheduler's refill reads only the head of the stuck chat, whatever its backlog
    assert await due(store) == [ids[0], *ids[10_000:]]
    assert await store.load_webhook_due(h.id, 200) == [
        DueItem(T0, i, h.id) for i in [ids[0], *ids[10_000:]]
    ]
    (c1,) = await store.claim([ids[0]], T0 + 1)
    await store.record([outcome(c1, "delivered")], T0 + 2)
    assert woken.take() == [ids[1]]


async def test_the_ordering_lookups_use_the_order_index(tmp_path: Path) -> None:
    from wahookd.store.sqlite import ordering

    store = await SqliteStore.open(tmp_path / "w.db", "normal")

    def plans(c):  # type: ignore[no-untyped-def]
        out = []
        for sql in (
            f"SELECT 1 FROM deliveries WHERE id = 1 AND {ordering.NOT_HEAD}",
            f"SELECT 1 FROM (VALUES (1, 'a')) AS v WHERE EXISTS (SELECT 1 {ordering._OF_KEY})",
        ):
            out.append(" ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + sql)))
        return out

    try:
        for plan in await store.read(plans):
            assert "deliveries_order" in plan and "SCAN e" not in plan and "SCAN d" not in plan
    finally:
        await store.close()


async def test_a_static_webhook_keeps_its_ordering_filter_and_rate_limit(
    store: AnyStore,
) -> None:
    row = StaticRow("k", "s1", "https://a.example/", ("*",), None, (), "CRM", ("group",), "chat", 7)
    (static,) = [h for h in await store.sync_static_webhooks([row], T0) if h.kind == "static"]
    assert (static.description, static.filter_chats, static.ordering, static.rate_limit) == (
        "CRM",
        ("group",),
        "chat",
        7,
    )
    plain = StaticRow("k", "s1", "https://a.example/", ("*",), None)  # a reload drops them
    (static,) = [h for h in await store.sync_static_webhooks([plain], T0) if h.kind == "static"]
    assert (static.description, static.filter_chats, static.ordering, static.rate_limit) == (
        None,
        None,
        "none",
        None,
    )
