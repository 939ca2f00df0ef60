"""The delivery log on SQLite and PostgreSQL: listing, retrying failed deliveries, auto-disable."""

from __future__ import annotations

from wahookd.events import validate_event
from wahookd.models import AttemptResult, Outcome, State
from wahookd.store import IngestItem

from .backends import AnyStore
from .conftest import OpenStore

T0 = 1_700_000_000.0
DAY = 86400.0
FAIL = AttemptResult(500, "HTTP 500", 3, "no", None, "5xx")
OK = AttemptResult(200, None, 3, "OK", None, "2xx")


def event(n: int, kind: str = "session.disconnected"):
    body: dict[str, object] = {"event": kind, "sessionId": "s1"}
    if kind == "session.disconnected":
        body["reason"] = f"r{n}"
    else:
        body["phoneNumber"] = "1"
    return validate_event(body, now=int(T0))


async def setup(open_store: OpenStore) -> tuple[AnyStore, int]:
    store = await open_store()
    hook, _ = await store.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], T0)
    return store, hook.id


async def attempt(
    store: AnyStore, ids: list[int], result: AttemptResult, kind: str, at: float, disable=None
):
    claimed = await store.claim(ids, at)
    outcomes = [Outcome(c, at, result, kind, at + 1 if kind == "retry" else None) for c in claimed]  # type: ignore[arg-type]
    return claimed, await store.record(outcomes, at, disable)


async def test_pages_are_newest_first_without_overlap(open_store: OpenStore) -> None:
    store, hook = await setup(open_store)
    items = [IngestItem(event(i), (hook,)) for i in range(7)]
    ingested = await store.ingest(items, T0)
    uids = []
    before = None
    while True:
        page = await store.list_deliveries("s1", None, None, before, 3)
        uids += [row.uid for row in page]
        if len(page) < 3:
            break
        before = page[-1].row_id
    assert len(uids) == len(set(uids)) == 7
    ids = [r.deliveries[0].id for r in ingested]
    rows = await store.list_deliveries("s1", None, None, None, 10)
    assert [r.row_id for r in rows] == sorted(ids, reverse=True)
    assert await store.list_deliveries("other", None, None, None, 10) == []
    await store.close()


async def test_filters_by_state_and_event(open_store: OpenStore) -> None:
    store, hook = await setup(open_store)
    ingested = await store.ingest(
        [IngestItem(event(0), (hook,)), IngestItem(event(1, "session.connected"), (hook,))], T0
    )
    first = ingested[0].deliveries[0].id
    await attempt(store, [first], FAIL, "failed", T0)
    failed = await store.list_deliveries("s1", State.FAILED, None, None, 10)
    assert [r.row_id for r in failed] == [first]
    assert failed[0].attempt_log[0].status_code == 500
    connected = await store.list_deliveries("s1", None, "session.connected", None, 10)
    assert [r.event_type for r in connected] == ["session.connected"]
    await store.close()


async def test_a_retry_starts_a_new_ladder_and_leaves_the_failed_count(
    open_store: OpenStore,
) -> None:
    store, hook = await setup(open_store)
    (result,) = await store.ingest([IngestItem(event(0), (hook,))], T0)
    delivery = result.deliveries[0].id
    await attempt(store, [delivery], FAIL, "retry", T0)
    await attempt(store, [delivery], FAIL, "failed", T0 + 1)
    assert (await store.session_stats("s1")).failed == 1  # type: ignore[union-attr]

    retried = await store.retry_failed("s1", T0 + 10, uid=await result_uid(store, delivery))
    assert [d.id for d in retried.due] == [delivery]
    assert (retried.retried, retried.parked) == (1, 0)
    assert (await store.session_stats("s1")).failed == 0  # type: ignore[union-attr]
    claimed, _ = await attempt(store, [delivery], FAIL, "retry", T0 + 10)
    # the header's attempt number goes on; the ladder starts again at its first step
    assert claimed[0].attempt == 3 and claimed[0].ladder_position == 1
    claimed, _ = await attempt(store, [delivery], OK, "delivered", T0 + 11)
    assert claimed[0].ladder_position == 2
    stats = await store.session_stats("s1")
    assert stats is not None and (stats.successful, stats.failed) == (1, 0)
    await store.close()


async def result_uid(store: AnyStore, delivery_id: int) -> str:
    rows = await store.list_deliveries("s1", None, None, None, 100)
    return next(r.uid for r in rows if r.row_id == delivery_id)


async def test_bulk_retry_respects_since(open_store: OpenStore) -> None:
    store, hook = await setup(open_store)
    ingested = await store.ingest([IngestItem(event(i), (hook,)) for i in range(3)], T0)
    ids = [r.deliveries[0].id for r in ingested]
    await attempt(store, ids[:1], FAIL, "failed", T0)
    await attempt(store, ids[1:], FAIL, "failed", T0 + 100)
    assert [
        d.id for d in (await store.retry_failed("s1", T0 + 200, finished_since=T0 + 50)).due
    ] == ids[1:]
    assert [d.id for d in (await store.retry_failed("s1", T0 + 200)).due] == ids[:1]
    assert (await store.retry_failed("s1", T0 + 200)).retried == 0
    await store.close()


async def test_auto_disable_after_failing_with_no_success(open_store: OpenStore) -> None:
    store, hook = await setup(open_store)
    ingested = await store.ingest([IngestItem(event(i), (hook,)) for i in range(4)], T0)
    ids = [r.deliveries[0].id for r in ingested]
    _, disabled = await attempt(store, ids[:1], FAIL, "retry", T0, disable=5 * DAY)
    assert disabled == []
    # a success resets the clock
    _, disabled = await attempt(store, ids[1:2], OK, "delivered", T0 + 4 * DAY, 5 * DAY)
    # then failures every day: disabled five days after the first of them
    for day in range(6, 11):
        _, disabled = await attempt(store, ids[2:3], FAIL, "retry", T0 + day * DAY, 5 * DAY)
        assert disabled == []
    _, disabled = await attempt(store, ids[3:4], FAIL, "retry", T0 + 11 * DAY, 5 * DAY)
    assert disabled == [hook]
    (webhook,) = await store.webhooks()
    assert not webhook.is_active
    # its queued deliveries are parked: none is due any more
    assert await store.load_webhook_due(hook, 10) == []
    # re-enabling restarts the clock: the next failure does not disable it again
    await store.put_session_webhook(
        "s1", "https://a.example/", ["*"], None, True, [], T0 + 12 * DAY
    )
    assert len(await store.load_webhook_due(hook, 10)) == 3  # one was delivered
    _, disabled = await attempt(store, ids[:1], FAIL, "retry", T0 + 12 * DAY, 5 * DAY)
    assert disabled == []
    await store.close()


async def test_a_failure_after_a_quiet_spell_does_not_disable(open_store: OpenStore) -> None:
    store, hook = await setup(open_store)
    ingested = await store.ingest([IngestItem(event(i), (hook,)) for i in range(2)], T0)
    ids = [r.deliveries[0].id for r in ingested]
    _, disabled = await attempt(store, ids[:1], FAIL, "failed", T0, 5 * DAY)
    # idle for six days, then one transient failure: a new failing period, not day six
    _, disabled = await attempt(store, ids[1:], FAIL, "retry", T0 + 6 * DAY, 5 * DAY)
    assert disabled == []
    assert (await store.webhooks())[0].is_active
    await store.close()
