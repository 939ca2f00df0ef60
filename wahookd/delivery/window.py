"""The scheduler's memory: a bounded window of the soonest-due deliveries, by webhook lane.

Pure: no awaits, no store, no clock; plain values in and out (the scheduler does the
reads and passes the rows in). SQLite holds every queued delivery; the window is kept
by one rule: every queued delivery whose (next_attempt_at, id) is at or before the
horizon is in memory (or in flight), except for webhooks in *overflow*. The horizon
is the key of the last row the refill loaded, or infinity when the refill found no
more rows.

A webhook gets its own lane. When a lane holds `lane_cap` deliveries (a dead
receiver behind a long backlog), it overflows: it keeps only its soonest `lane_keep`
(a few rounds of attempts), stops taking new ones, the global refill skips it, and it
reloads its own soonest deliveries from the index as it drains. So a webhook's
backlog costs at most `lane_cap` items of memory, `lane_keep` once it overflows, and
never pushes other webhooks' deliveries out of the window.

Due deliveries wait in their lane ordered by id (older events first). A freed slot
goes to the lane with the fewest attempts in flight, then to the one with the oldest
due delivery; each lane is limited to `per_lane` attempts in flight.

A webhook with a `rateLimit` (SPEC §8 "Throttling") takes a token from its bucket
(throttle.py) for each pick; without one its lane sits out until the token is due
(`token_at`, which `next_due_at` includes). The wait is no attempt: the delivery
stays where it was, and the seconds a lane waited are summed per webhook for /metrics
(`throttled_s`).

With several nodes (PostgreSQL) both limits are also the cluster's, kept by the
claims (store/postgres/limits.py): ids a claim held back at a limit come back here
(`defer`) and their lane sits out the same way: until the cluster's next token, or,
at the cluster's concurrency limit, for a backoff (BUSY_MIN_S doubling to BUSY_MAX_S
while refused, back to none once a claim gets all it asked) that an attempt of the
webhook ending on this node lifts (its outcome's commit claims again anyway).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..models import DueItem
from .throttle import TokenBucket

Key = tuple[float, int]
INFINITY: Key = (math.inf, 0)

# a lane refused at the cluster's per-webhook concurrency waits this long, doubled while
# it keeps being refused: slots other nodes hold free when their attempts end
BUSY_MIN_S = 0.05
BUSY_MAX_S = 1.0


@dataclass
class Lane:
    """One webhook's deliveries in memory."""

    webhook_id: int
    ready: list[int] = field(default_factory=list)  # heap of due delivery ids
    ids: set[int] = field(default_factory=set)  # in memory (due or not), not in flight
    inflight: int = 0
    overflow: bool = False
    reloading: bool = False
    # the key of its entry in Window.heads that counts (None: none counts); others are stale
    head_key: tuple[int, int] | None = None

    @property
    def count(self) -> int:
        """Deliveries of this webhook in memory."""
        return len(self.ids)


class Window:
    """Queued deliveries in memory, their timers and lanes, and those in flight."""

    def __init__(
        self,
        size: int,
        lane_cap: int,
        per_lane: int,
        rate_of: Callable[[int], int | None] = lambda webhook_id: None,
    ) -> None:
        self.size = size
        self.lane_cap = lane_cap
        self.per_lane = per_lane  # per_webhook_concurrency; a reload may change it
        self.items: dict[int, DueItem] = {}  # queued deliveries in memory
        self.ready_ids: set[int] = set()  # of those, the ones already due
        # heap of (in flight, head id, webhook) of lanes with something due: a pick pops
        # the lanes it takes from instead of visiting every lane (see pick())
        self.heads: list[tuple[int, int, int]] = []
        self.inflight_ids: set[int] = set()
        self.timers: list[Key] = []  # heap of (due_at, id)
        self.lanes: dict[int, Lane] = {}
        self.cursor: Key | None = None  # last key the global refill loaded
        self.exhausted = False  # the last global refill found every row
        self.refilling = False  # a refill or lane reload is reading the index
        self.deferred: list[DueItem] = []  # pushes that arrived during a refill
        # throttling: a webhook's rate limit (attempts/s, None: none), its bucket, when
        # a lane waiting for a token gets one, since when it waits, and seconds waited
        self.rate_of = rate_of
        self.buckets: dict[int, TokenBucket | None] = {}
        self.token_at: dict[int, float] = {}
        self.waiting_since: dict[int, float] = {}
        self.throttled_s: dict[int, float] = {}
        # lanes refused at the cluster's concurrency limit: their current backoff
        self.busy_s: dict[int, float] = {}

    # --------------------------------------------------------------- queries
    @property
    def horizon(self) -> Key:
        """Every queued delivery with a key at or before this is in memory."""
        if self.exhausted:
            return INFINITY
        return self.cursor if self.cursor is not None else (-math.inf, 0)

    @property
    def inflight(self) -> int:
        """Attempts in flight."""
        return len(self.inflight_ids)

    @property
    def in_memory(self) -> int:
        """Queued deliveries held in memory."""
        return len(self.items)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self.items

    @property
    def lane_keep(self) -> int:
        """How many deliveries an overflowed lane keeps: enough for a few rounds of attempts."""
        return min(self.lane_cap, max(64, 4 * self.per_lane))

    def next_due_at(self) -> float | None:
        """When the soonest delivery in memory is due, or a throttled lane gets a token."""
        while self.timers and self.timers[0][1] not in self.items:
            heapq.heappop(self.timers)
        due = self.timers[0][0] if self.timers else None
        if self.token_at:
            token = min(self.token_at.values())
            return token if due is None else min(due, token)
        return due

    # ---------------------------------------------------------------- inputs
    def lane(self, webhook_id: int) -> Lane:
        """The webhook's lane, made when missing."""
        lane = self.lanes.get(webhook_id)
        if lane is None:
            lane = self.lanes[webhook_id] = Lane(webhook_id)
        return lane

    def push(self, items: Iterable[DueItem]) -> None:
        """Deliveries just committed as queued."""
        lanes = self.lanes
        for item in items:
            lane = lanes.get(item.webhook_id)
            if lane is not None and lane.overflow and not self.refilling:
                continue  # what add() would decide: its lane reloads it from the index
            self.add(item, from_refill=False)

    def add(self, item: DueItem, *, from_refill: bool) -> None:
        """Hold a queued delivery, unless the window rule says the index keeps it."""
        if item.id in self.items or item.id in self.inflight_ids:
            return
        if not from_refill and self.refilling:
            # a refill or lane reload is reading the index: its read may predate this
            # commit, so the item waits and is added once the read is in
            self.deferred.append(item)
            return
        lane = self.lane(item.webhook_id)
        if lane.overflow:
            return  # the lane reloads it from the index
        if not from_refill and (item.due_at, item.id) > self.horizon:
            return  # the global refill will load it in its turn
        if lane.count >= self.lane_cap:
            self.overflow(lane)
            return
        self.items[item.id] = item
        lane.ids.add(item.id)
        heapq.heappush(self.timers, (item.due_at, item.id))

    def webhook_changed(self, webhook_id: int, *, active: bool) -> None:
        """A webhook was edited, deactivated, activated or deleted: resync its lane."""
        self.buckets.pop(webhook_id, None)  # its rate limit is read again at the next pick
        self.token_at.pop(webhook_id, None)
        self.busy_s.pop(webhook_id, None)
        self.waiting_since.pop(webhook_id, None)
        lane = self.lanes.get(webhook_id)
        if lane is not None:
            self.drop_lane_items(lane)
        if active:
            # its queued deliveries are reloaded from the index by the lane itself
            self.lane(webhook_id).overflow = True
        elif lane is not None:
            self.drop_if_idle(lane)

    def overflow(self, lane: Lane) -> None:
        """Stop a lane taking deliveries; it keeps its soonest `lane_keep` and reloads later.

        So many webhooks with long backlogs cost `lane_keep` entries each, not `lane_cap`.
        """
        lane.overflow = True
        if lane.count <= self.lane_keep:
            return
        soonest = sorted((self.items[i].due_at, i) for i in lane.ids)
        for _, item_id in soonest[self.lane_keep :]:
            self.forget(item_id)
        lane.ids = set(lane.ids)  # a set never shrinks its table by itself

    def forget(self, item_id: int) -> DueItem | None:
        """Drop a delivery from memory (the index still has it); the item, if it was held."""
        item = self.items.pop(item_id, None)
        if item is not None:
            self.ready_ids.discard(item_id)
            self.lanes[item.webhook_id].ids.discard(item_id)
        return item

    def drop_lane_items(self, lane: Lane) -> None:
        """Forget every delivery of a lane and end its overflow."""
        for item_id in list(lane.ids):
            self.forget(item_id)
        lane.ready.clear()
        lane.overflow = False

    def drop_if_idle(self, lane: Lane) -> None:
        """Remove a lane that holds nothing and runs nothing."""
        if lane.inflight == 0 and lane.count == 0 and not lane.overflow and not lane.reloading:
            del self.lanes[lane.webhook_id]

    # --------------------------------------------------------------- refills
    def lanes_to_reload(self) -> list[Lane]:
        """Overflowed lanes not reloading now; reload those `wants_reload` says."""
        return [ln for ln in self.lanes.values() if ln.overflow and not ln.reloading]

    def wants_reload(self, lane: Lane) -> bool:
        """True when an overflowed lane ran low and should reload from the index."""
        return lane.count < self.lane_keep // 2

    def begin_lane_reload(self, lane: Lane) -> int:
        """Mark a lane reloading; how many of its rows to read."""
        lane.reloading = True
        self.refilling = True
        return lane.count + self.lane_keep

    def end_lane_reload(self, lane: Lane, rows: Sequence[DueItem] | None, limit: int) -> bool:
        """Take a lane's rows in (None: the read failed); True when it loaded any."""
        lane.reloading = False
        self.refilling = False
        if rows is None:
            return False
        if not lane.overflow:  # resynced while we were loading: start again later
            self.replay_deferred()
            return False
        lane.overflow = False
        for row in rows:
            self.add(row, from_refill=True)
        if len(rows) >= limit:
            self.overflow(lane)
        self.replay_deferred()
        return bool(rows)

    def refill_limit(self) -> int | None:
        """How many rows the global refill should read; None (after a trim) when none."""
        windowed = len(self.items) - sum(ln.count for ln in self.lanes.values() if ln.overflow)
        if self.exhausted or windowed >= self.size // 2:
            self.trim()
            return None
        return self.size - windowed

    def overflowed(self) -> list[int]:
        """The webhooks whose lanes reload themselves: the global refill skips them."""
        return [ln.webhook_id for ln in self.lanes.values() if ln.overflow]

    def begin_refill(self) -> None:
        """The global refill starts reading the index."""
        self.refilling = True

    def end_refill(self, rows: Sequence[DueItem] | None, limit: int) -> bool:
        """Take the global refill's rows in (None: the read failed); True when any."""
        self.refilling = False
        if rows is None:
            return False
        for row in rows:
            self.add(row, from_refill=True)
        if rows:
            self.cursor = (rows[-1].due_at, rows[-1].id)
        self.exhausted = len(rows) < limit
        self.replay_deferred()
        return bool(rows)

    def replay_deferred(self) -> None:
        """Add the pushes that waited for a read of the index."""
        deferred, self.deferred = self.deferred, []
        for item in deferred:
            self.add(item, from_refill=False)

    def compact_timers(self) -> None:
        """Drop timer entries of forgotten deliveries once they outnumber the live ones."""
        if len(self.timers) <= 2 * len(self.items) + 1024:
            return
        self.timers = [
            (it.due_at, it.id) for it in self.items.values() if it.id not in self.ready_ids
        ]
        heapq.heapify(self.timers)

    def trim(self) -> None:
        """Keep the window bounded when pushes grew it past twice its size."""
        overflowed = sum(ln.count for ln in self.lanes.values() if ln.overflow)
        if len(self.items) - overflowed <= 2 * self.size:
            return
        windowed = [it for it in self.items.values() if not self.lanes[it.webhook_id].overflow]
        windowed.sort(key=lambda it: (it.due_at, it.id))
        for item in windowed[self.size :]:
            if item.id not in self.ready_ids:
                self.forget(item.id)
        kept = windowed[: self.size]
        if kept:
            self.cursor = (kept[-1].due_at, kept[-1].id)
            self.exhausted = False

    # -------------------------------------------------------------- claiming
    def promote(self, now: float) -> None:
        """Move the deliveries due at `now` to their lanes' ready heaps."""
        while self.timers and self.timers[0][0] <= now:
            due, item_id = heapq.heappop(self.timers)
            item = self.items.get(item_id)
            # a stale entry: forgotten since, or re-added with another due time
            if item is None or item.due_at != due or item_id in self.ready_ids:
                continue
            self.ready_ids.add(item_id)
            lane = self.lanes[item.webhook_id]
            heapq.heappush(lane.ready, item_id)
            if lane.ready[0] == item_id:  # a new head: the lane's key went down
                self._queue_lane(lane)

    def pick(self, free: int, now: float) -> list[DueItem]:
        """Take up to `free` due deliveries out of memory and count them in flight.

        Fewest attempts in flight first, then the oldest due delivery: a freed slot goes to
        a webhook that has none running before another backlogged one, so many webhooks
        with due retries cannot hold every slot against a healthy one.

        The lanes wait in `heads` by that key. An entry may be stale: a lane's key only
        goes down through promote() and release(), which queue a new entry, so an entry
        is never above its lane's key, and one below it is put back with the right key
        when it comes up. So the lane popped with its true key is the one to take from,
        and a pick costs a few heap operations per delivery, not a visit to every lane
        with something due (200 lanes: 1.65 -> 1.09 us a delivery, and no longer more
        with more lanes).
        """
        if self.token_at:
            self._tokens_due(now)
        if len(self.heads) > 4 * len(self.lanes) + 256:
            self._rebuild_heads()
        per_lane = self.per_lane
        token_at = self.token_at
        heads = self.heads
        lanes = self.lanes
        ready_ids = self.ready_ids
        heappop, heappush = heapq.heappop, heapq.heappush
        picked: list[DueItem] = []
        while heads and len(picked) < free:
            inflight, head, webhook_id = heappop(heads)
            lane = lanes.get(webhook_id)
            if lane is None or lane.head_key != (inflight, head):
                continue  # stale: the lane has a newer entry, or none counts
            ready = lane.ready
            while ready and ready[0] not in ready_ids:
                heappop(ready)
            if not ready or lane.inflight >= per_lane:
                lane.head_key = None  # promote() or release() queues it again
                continue
            if (lane.inflight, ready[0]) != (inflight, head):
                lane.head_key = key = (lane.inflight, ready[0])  # went up meanwhile
                heappush(heads, (*key, webhook_id))
                continue
            if (token_at and token_at.get(webhook_id, now) > now) or not self._token(
                webhook_id, now
            ):
                lane.head_key = None  # throttled: _tokens_due() queues it at its token time
                continue
            item = self.forget(heappop(ready))
            assert item is not None
            lane.inflight += 1
            self.inflight_ids.add(item.id)
            picked.append(item)
            lane.head_key = None
            self._queue_lane(lane)
        return picked

    def _queue_lane(self, lane: Lane) -> None:
        """Queue the lane in `heads` with its key now (its head may be stale: never above)."""
        ready = lane.ready
        if ready:
            lane.head_key = key = (lane.inflight, ready[0])
            heapq.heappush(self.heads, (*key, lane.webhook_id))

    def _rebuild_heads(self) -> None:
        """Drop the stale entries of `heads`: one entry per lane with something due."""
        self.heads = []
        for lane in self.lanes.values():
            lane.head_key = None
            self._queue_lane(lane)
        heapq.heapify(self.heads)

    def _token(self, webhook_id: int, now: float) -> bool:
        """Take a token for one attempt to the webhook; False (and when to ask) when none."""
        if webhook_id in self.buckets:
            bucket = self.buckets[webhook_id]
        else:
            rate = self.rate_of(webhook_id)
            bucket = self.buckets[webhook_id] = None if rate is None else TokenBucket(rate)
        if bucket is None:
            return True
        wait = bucket.take(now)
        if wait > 0:
            self.token_at[webhook_id] = now + wait
            self.waiting_since.setdefault(webhook_id, now)
            return False
        self._end_wait(webhook_id, now)
        return True

    def _tokens_due(self, now: float) -> None:
        """Forget the token times passed; a lane with nothing due any more stopped waiting."""
        for webhook_id, at in list(self.token_at.items()):
            if at <= now:
                del self.token_at[webhook_id]
                lane = self.lanes.get(webhook_id)
                if lane is not None:
                    self._clean_head(lane)
                    self._queue_lane(lane)
                if lane is None or not lane.ready:
                    self._end_wait(webhook_id, at)

    def _end_wait(self, webhook_id: int, at: float) -> None:
        since = self.waiting_since.pop(webhook_id, None)
        if since is not None:
            self.throttled_s[webhook_id] = self.throttled_s.get(webhook_id, 0.0) + at - since

    def _clean_head(self, lane: Lane) -> None:
        while lane.ready and lane.ready[0] not in self.ready_ids:
            heapq.heappop(lane.ready)

    def defer(self, webhook_id: int, token_at: float | None, now: float) -> None:
        """A claim held the webhook's picked ids back at a cluster-wide limit (unpicked).

        `token_at`: when the cluster's bucket has a token (the wait counts as throttled);
        None: at the concurrency limit, back off (see the module docstring).
        """
        if token_at is None:
            backoff = self.busy_s[webhook_id] = min(
                BUSY_MAX_S, max(BUSY_MIN_S, 2 * self.busy_s.get(webhook_id, 0.0))
            )
            until = now + backoff
        else:
            until = token_at
            self.waiting_since.setdefault(webhook_id, now)
        self.token_at[webhook_id] = max(until, self.token_at.get(webhook_id, until))

    def lift(self, webhook_ids: Iterable[int]) -> None:
        """Slots of these webhooks freed here: their lanes need not wait out a backoff."""
        for webhook_id in webhook_ids:
            if webhook_id in self.busy_s and self.token_at.pop(webhook_id, None) is not None:
                lane = self.lanes.get(webhook_id)
                if lane is not None:
                    self._queue_lane(lane)

    def claimed(self, webhook_id: int) -> None:
        """A claim got every delivery of the webhook it asked for: no more backoff."""
        if self.busy_s:
            self.busy_s.pop(webhook_id, None)

    def unpick(self, picked: Iterable[DueItem]) -> None:
        """Picked deliveries whose claim did not commit go back to the window."""
        for item in picked:
            self.release(item.id, item.webhook_id)
            self.add(item, from_refill=True)

    def release(self, item_id: int, webhook_id: int) -> None:
        """An attempt is over (or never started): its delivery is no longer in flight."""
        self.inflight_ids.discard(item_id)
        if self.busy_s:
            self.lift((webhook_id,))  # a slot of the webhook freed here
        lane = self.lanes.get(webhook_id)
        if lane is not None:
            lane.inflight -= 1
            self._queue_lane(lane)  # its key went down
            self.drop_if_idle(lane)
