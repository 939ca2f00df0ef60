"""Window.pick's heap of lane heads picks exactly what a visit to every lane would.

The reference below is the pick as it was before the heap: each pick visits every
lane with something due, orders them by (in flight, oldest due id) and takes from the
first. Random runs of pushes, promotions, picks, releases, unpicks, forgets, webhook
changes and rate limits must give both the same picks, in the same order.
"""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from wahookd.delivery.window import Window
from wahookd.models import DueItem


class ScanWindow(Window):
    """The window with the pick that visits every lane (the reference)."""

    def pick(self, free: int, now: float) -> list[DueItem]:
        if self.token_at:
            self._tokens_due(now)
        heads: list[tuple[int, int, int]] = []
        for webhook_id, lane in self.lanes.items():
            self._clean_head(lane)
            if not lane.ready or lane.inflight >= self.per_lane:
                continue
            if self.token_at.get(webhook_id, now) > now:
                continue
            heads.append((lane.inflight, lane.ready[0], webhook_id))
        heapq.heapify(heads)
        picked: list[DueItem] = []
        while heads and len(picked) < free:
            _, _, webhook_id = heapq.heappop(heads)
            lane = self.lanes[webhook_id]
            if not self._token(webhook_id, now):
                continue
            item = self.forget(heapq.heappop(lane.ready))
            assert item is not None
            lane.inflight += 1
            self.inflight_ids.add(item.id)
            picked.append(item)
            self._clean_head(lane)
            if lane.ready and lane.inflight < self.per_lane:
                heapq.heappush(heads, (lane.inflight, lane.ready[0], webhook_id))
        return picked


WEBHOOKS = 5
RATES = {3: 2, 4: 1}  # two webhooks are rate-limited (attempts/s)

op = st.one_of(
    st.tuples(
        st.just("push"),
        st.lists(
            st.tuples(st.integers(1, WEBHOOKS), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
            min_size=1,
            max_size=8,
        ),
    ),
    st.tuples(st.just("pick"), st.integers(1, 6)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("unpick"), st.integers(0, 50)),
    st.tuples(st.just("forget"), st.integers(0, 50)),
    st.tuples(st.just("changed"), st.integers(1, WEBHOOKS)),
    st.tuples(st.just("wait"), st.sampled_from([0.1, 0.4, 1.0])),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(op, min_size=1, max_size=60), st.integers(1, 3))
def test_the_heap_picks_what_a_visit_to_every_lane_picks(
    ops: list[tuple[str, object]], per_lane: int
) -> None:
    windows = [Window(1000, 50, per_lane, RATES.get), ScanWindow(1000, 50, per_lane, RATES.get)]
    for w in windows:
        w.exhausted = True  # every push is kept
    now = 0.0
    next_id = 1
    inflight: list[DueItem] = []  # the same in both: checked after every pick
    for name, arg in ops:
        if name == "push":
            assert isinstance(arg, list)
            batch = [DueItem(now + delay, next_id + n, hook) for n, (hook, delay) in enumerate(arg)]
            next_id += len(batch)
            for w in windows:
                w.push(batch)
        elif name == "pick":
            assert isinstance(arg, int)
            picks = []
            for w in windows:
                w.promote(now)
                picks.append(w.pick(arg, now))
            assert [item.id for item in picks[0]] == [item.id for item in picks[1]]
            inflight += picks[0]
        elif name in ("release", "unpick") and inflight:
            assert isinstance(arg, int)
            item = inflight.pop(arg % len(inflight))
            for w in windows:
                if name == "release":
                    w.release(item.id, item.webhook_id)
                else:
                    w.unpick([item])
        elif name == "forget" and next_id > 1:
            assert isinstance(arg, int)
            for w in windows:
                w.forget(1 + arg % (next_id - 1))
        elif name == "changed":
            assert isinstance(arg, int)
            for w in windows:
                w.webhook_changed(arg, active=False)
        elif name == "wait":
            assert isinstance(arg, float)
            now += arg
    for w in windows:
        w.promote(now)
    assert [i.id for i in windows[0].pick(100, now)] == [i.id for i in windows[1].pick(100, now)]
