"""The window with plain values: lanes, horizon, overflow, trim, pick and the refill protocol."""

from __future__ import annotations

from wahookd.delivery.window import INFINITY, Window
from wahookd.models import DueItem


def items(webhook_id: int, ids: range, due_at: float = 0.0) -> list[DueItem]:
    return [DueItem(due_at, i, webhook_id) for i in ids]


def loaded(window: Window, rows: list[DueItem], limit: int) -> bool:
    window.begin_refill()
    return window.end_refill(rows, limit)


def test_the_horizon_follows_the_refill() -> None:
    w = Window(size=10, lane_cap=100, per_lane=2)
    assert w.horizon == (float("-inf"), 0)
    w.push(items(1, range(1, 3)))  # before any refill: beyond the horizon, the index has them
    assert w.in_memory == 0
    assert loaded(w, items(1, range(1, 6)), limit=5)
    assert w.horizon == (0.0, 5) and not w.exhausted
    assert loaded(w, items(1, range(6, 8)), limit=5)
    assert w.horizon == INFINITY and w.in_memory == 7
    w.push([DueItem(9.0, 8, 1)])  # now everything is in memory: pushes are kept
    assert 8 in w


def test_a_push_during_a_read_waits_for_it() -> None:
    w = Window(size=10, lane_cap=100, per_lane=2)
    w.exhausted = True
    w.begin_refill()
    w.push([DueItem(0.0, 1, 1)])
    assert 1 not in w and w.deferred
    w.end_refill([], limit=10)
    assert 1 in w and not w.deferred


def test_a_push_during_a_lane_reload_is_not_lost() -> None:
    w = Window(size=10, lane_cap=100, per_lane=2)
    w.exhausted = True
    lane = w.lane(1)
    lane.overflow = True
    limit = w.begin_lane_reload(lane)
    w.push([DueItem(0.0, 2, 1)])  # committed after the reload read the index
    assert w.end_lane_reload(lane, [DueItem(0.0, 1, 1)], limit)
    assert 1 in w and 2 in w and not lane.overflow


def test_a_failed_read_clears_the_flags() -> None:
    w = Window(size=10, lane_cap=100, per_lane=2)
    lane = w.lane(1)
    lane.overflow = True
    w.end_lane_reload(lane, None, w.begin_lane_reload(lane))
    assert not lane.reloading and not w.refilling and lane.overflow


def test_a_full_lane_overflows_and_keeps_its_soonest() -> None:
    w = Window(size=1000, lane_cap=100, per_lane=2)
    assert w.lane_keep == 64
    rows = [DueItem(float(i), i, 1) for i in range(1, 150)]
    loaded(w, rows, limit=1000)
    lane = w.lanes[1]
    assert lane.overflow and lane.count == 64
    assert sorted(w.items) == list(range(1, 65))
    assert w.overflowed() == [1]
    w.push([DueItem(0.0, 500, 1)])  # an overflowed lane reloads from the index instead
    assert 500 not in w


def test_lane_keep_grows_with_per_lane_up_to_lane_cap() -> None:
    assert Window(10, 2000, per_lane=100).lane_keep == 400
    assert Window(10, 300, per_lane=100).lane_keep == 300


def test_trim_bounds_a_window_grown_by_pushes() -> None:
    w = Window(size=10, lane_cap=1000, per_lane=2)
    loaded(w, [], limit=10)  # exhausted: every push is kept
    w.push(items(1, range(1, 30), due_at=5.0))
    assert w.in_memory == 29
    assert w.refill_limit() is None  # and trims
    assert w.in_memory == 10 and w.cursor == (5.0, 10) and not w.exhausted


def test_pick_prefers_idle_lanes_then_the_oldest_and_keeps_per_lane() -> None:
    w = Window(size=100, lane_cap=100, per_lane=2)
    loaded(w, items(1, range(1, 6)) + items(2, range(10, 12)), limit=100)
    w.promote(now=0.0)
    first = w.pick(free=3, now=0.0)
    assert [i.id for i in first] == [1, 10, 2]
    assert w.inflight == 3
    second = w.pick(free=10, now=0.0)
    assert [i.id for i in second] == [11]  # webhook 1 is at its limit of 2
    w.release(1, 1)
    assert [i.id for i in w.pick(free=10, now=0.0)] == [3]


def test_promote_only_what_is_due() -> None:
    w = Window(size=100, lane_cap=100, per_lane=5)
    loaded(w, [DueItem(1.0, 1, 1), DueItem(5.0, 2, 1)], limit=100)
    w.promote(now=2.0)
    assert [i.id for i in w.pick(free=5, now=0.0)] == [1]
    assert w.next_due_at() == 5.0


def test_unpick_puts_deliveries_back() -> None:
    w = Window(size=100, lane_cap=100, per_lane=5)
    loaded(w, items(1, range(1, 3)), limit=100)
    w.promote(now=0.0)
    picked = w.pick(free=5, now=0.0)
    w.unpick(picked)
    assert w.inflight == 0 and 1 in w and 2 in w
    w.promote(now=0.0)
    assert [i.id for i in w.pick(free=5, now=0.0)] == [1, 2]


def test_webhook_changed_drops_the_lane_or_makes_it_reload() -> None:
    w = Window(size=100, lane_cap=100, per_lane=5)
    loaded(w, items(1, range(1, 4)) + items(2, range(4, 6)), limit=100)
    w.webhook_changed(1, active=False)
    assert 1 not in w.lanes and w.in_memory == 2
    w.webhook_changed(2, active=True)
    assert w.lanes[2].overflow and w.in_memory == 0
    assert w.lanes_to_reload() == [w.lanes[2]] and w.wants_reload(w.lanes[2])


def test_forgotten_timers_are_compacted() -> None:
    w = Window(size=5000, lane_cap=5000, per_lane=5)
    loaded(w, items(1, range(1, 2001)), limit=5000)
    for i in range(1, 2001):
        w.forget(i)
    w.compact_timers()
    assert w.timers == [] and w.next_due_at() is None


def test_a_rate_limited_lane_waits_for_tokens_while_others_go() -> None:
    w = Window(size=100, lane_cap=100, per_lane=50, rate_of={1: 2}.get)
    loaded(w, items(1, range(1, 8)) + items(2, range(10, 14)), limit=100)
    w.promote(now=0.0)
    first = w.pick(free=50, now=0.0)
    # webhook 1: its burst of 2; webhook 2 (no limit): all of its due ones
    assert sorted(i.id for i in first) == [1, 2, 10, 11, 12, 13]
    assert w.pick(free=50, now=0.1) == []
    assert w.next_due_at() == 0.5  # its next token, not the deliveries' due time (0.0)
    assert [i.id for i in w.pick(free=50, now=0.5)] == [3]
    assert w.pick(free=50, now=0.6) == []
    assert [i.id for i in w.pick(free=50, now=1.6)] == [4, 5]  # a pause refills the burst
    # its next due one waited from 0.0 to 0.5 and from 0.5 to 1.6: waits, not attempts
    assert abs(w.throttled_s[1] - 1.6) < 1e-9 and 2 not in w.throttled_s
    assert w.inflight == 9  # the refused picks put nothing in flight


def test_a_throttled_lane_that_drains_stops_waiting_at_its_token_time() -> None:
    w = Window(size=100, lane_cap=100, per_lane=50, rate_of={1: 1}.get)
    loaded(w, items(1, range(1, 3)), limit=100)
    w.promote(now=0.0)
    assert [i.id for i in w.pick(free=5, now=0.0)] == [1]
    assert w.pick(free=5, now=0.2) == []
    w.webhook_changed(9, active=False)  # another webhook's change leaves this wait alone
    w.forget(2)  # cleared meanwhile: nothing waits for the token any more
    assert w.pick(free=5, now=3.0) == []
    assert w.throttled_s[1] == 1.0 and not w.token_at and w.next_due_at() is None


def test_a_changed_rate_limit_is_read_again() -> None:
    rates: dict[int, int] = {1: 1}
    w = Window(size=100, lane_cap=100, per_lane=50, rate_of=rates.get)
    loaded(w, items(1, range(1, 6)), limit=100)
    w.promote(now=0.0)
    assert len(w.pick(free=5, now=0.0)) == 1
    del rates[1]
    w.webhook_changed(1, active=True)  # its lane reloads from the index
    loaded(w, items(1, range(2, 6)), limit=100)
    w.lanes[1].overflow = False
    w.add(DueItem(0.0, 2, 1), from_refill=True)
    w.promote(now=0.0)
    assert [i.id for i in w.pick(free=5, now=0.0)] == [2]


def test_a_pick_visits_only_the_lanes_it_takes_from() -> None:
    w = Window(size=10_000, lane_cap=100, per_lane=4)
    w.exhausted = True
    # 1,000 webhooks with a retry due later, one with a delivery due now
    w.push([DueItem(100.0, i, i) for i in range(1, 1001)] + [DueItem(0.0, 5000, 7)])
    w.promote(1.0)
    assert w.heads == [(0, 5000, 7)]
    assert [item.id for item in w.pick(10, 1.0)] == [5000]
    assert w.pick(10, 1.0) == [] and w.heads == []  # emptied, then forgotten
    w.promote(100.0)  # the retries come due: every lane has one
    assert len(w.heads) == 1000
    first = w.pick(3, 100.0)
    assert [item.id for item in first] == [1, 2, 3]
    assert len(w.heads) == 997  # three popped, the other lanes not visited
    assert len(w.pick(2000, 100.0)) == 997
