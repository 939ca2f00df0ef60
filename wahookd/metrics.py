"""Prometheus metrics, served at GET /metrics (no token) in the text format 0.0.4.

Each daemon has its own registry, so several daemons in one process (the tests) never
share a series. Counters and histograms are fed as things happen: by the ingest handler,
and by the scheduler through its `on_claimed` and `on_outcome` callbacks (it never imports
prometheus). Gauges are read at scrape time from the scheduler and the store; the store's
two reads are cached for `refresh_s`, so a storm of scrapes costs SQLite one query pair
per period whatever the backlog.

Labels only ever take values from small fixed sets (event types, outcomes, attempt
classes, queue states): never a session id, a URL or a delivery id.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from . import __version__
from .clock import Clock
from .events import EVENT_TYPES
from .models import QUEUE_STATES, ErrorClass, Outcome
from .store import IngestItem, IngestResult, StorageUnavailable, Store

if TYPE_CHECKING:
    from .delivery.scheduler import Scheduler

# what generate_latest() writes; Prometheus asks for it by this name
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# a webhook answers in milliseconds to seconds; the attempt timeout is 5 s by default
ATTEMPT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# late by nothing while healthy, by minutes to hours behind a backlog
LAG_BUCKETS_S = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)
# how a delivery ends: a 410 is counted apart from the other failures
FINISHED = ("delivered", "failed", "gone")


class Metrics:
    """The daemon's metric objects in a registry of their own."""

    def __init__(self, clock: Clock, *, refresh_s: float = 2.0) -> None:
        self.clock = clock
        self.refresh_s = refresh_s
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("wahookd_build_info", "The running version.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        self.events_ingested = Counter(
            "wahookd_events_ingested",
            "Events committed by POST /api/events, by event type (repeats not counted).",
            ["type"],
            registry=r,
        )
        self.events_repeated = Counter(
            "wahookd_events_repeated",
            "Events answered 202 but not queued again: same session and id within 24 h.",
            registry=r,
        )
        self.deliveries_queued = Counter(
            "wahookd_deliveries_queued",
            "Deliveries queued by ingest (one per matching webhook).",
            registry=r,
        )
        self.deliveries_finished = Counter(
            "wahookd_deliveries_finished",
            "Deliveries whose last attempt ended them: delivered (2xx), failed (ladder"
            " exhausted or webhook gone), gone (410 Gone).",
            ["outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "wahookd_attempts",
            "Attempts recorded, by result class.",
            ["class"],
            registry=r,
        )
        self.attempt_duration = LoopHistogram(
            "wahookd_attempt_duration_seconds",
            "Duration of an attempt: connect, send, read the answer.",
            ATTEMPT_BUCKETS_S,
        )
        self.scheduler_lag = LoopHistogram(
            "wahookd_scheduler_lag_seconds",
            "How late attempts start after their deliveries became due.",
            LAG_BUCKETS_S,
        )
        r.register(self.attempt_duration)
        r.register(self.scheduler_lag)
        # every series exists from the start, at 0, so rate() and alerts see it
        for event_type in EVENT_TYPES:
            self.events_ingested.labels(event_type)
        # the labelled children, looked up once: an attempt's metrics are on the hot path
        self._finished = {outcome: self.deliveries_finished.labels(outcome) for outcome in FINISHED}
        self._attempts = {c: self.attempts.labels(c) for c in get_args(ErrorClass)}
        ProcessCollector(registry=r)
        self._live: _Live | None = None
        self._lock = asyncio.Lock()

    def watch(self, store: Store, scheduler: Scheduler) -> None:
        """Read the gauges from this store and scheduler at every scrape."""
        self._live = _Live(self, store, scheduler)
        self.registry.register(self._live)

    # ---------------------------------------------------------------- events

    def observe_ingest(self, items: Sequence[IngestItem], results: Sequence[IngestResult]) -> None:
        """Count what one ingest request committed."""
        # summed first: a labelled inc() takes a lock and a lookup, once per type is enough
        by_type: dict[str, int] = {}
        repeated = queued = 0
        for item, result in zip(items, results, strict=True):
            if result.duplicate:
                repeated += 1
            else:
                event_type = item.event.type
                by_type[event_type] = by_type.get(event_type, 0) + 1
                queued += len(result.deliveries) + result.held
        for event_type, count in by_type.items():
            self.events_ingested.labels(event_type).inc(count)
        if repeated:
            self.events_repeated.inc(repeated)
        if queued:
            self.deliveries_queued.inc(queued)

    def observe_claimed(self, lag_s: float) -> None:
        """An attempt starts lag_s after its delivery became due."""
        self.scheduler_lag.observe(lag_s)

    def observe_outcome(self, outcome: Outcome) -> None:
        """Count one recorded attempt and, when it ended its delivery, the delivery."""
        result = outcome.result
        self._attempts[result.error_class].inc()
        self.attempt_duration.observe(result.duration_ms / 1000)
        finished = self._finished.get(outcome.kind)
        if finished is not None:
            finished.inc()

    # ---------------------------------------------------------------- scrape

    async def render(self) -> bytes:
        """The exposition text; reads the store first unless it did so recently."""
        if self._live is not None:
            async with self._lock:  # concurrent scrapes share one read
                await self._live.refresh()
        return generate_latest(_WithoutCreated(self.registry))


class LoopHistogram:
    """A histogram observed on the event loop's thread only (a prometheus collector).

    Two per attempt: prometheus_client's Histogram takes a lock and walks its buckets
    for each value, this one bisects once and adds twice. The exposition is the same
    (`tests/test_metrics.py` compares them).
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, the last one +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value (le is "at most": a value on a bound counts in its bucket)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterable[Metric]:
        """The cumulative buckets, their count and sum."""
        buckets = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            buckets.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )


class _WithoutCreated:
    """The registry less the client's `*_created` samples.

    In the 0.0.4 text format each would be a gauge series of its own holding a start
    time, doubling the series of every counter and histogram for nothing a restart
    (`process_start_time_seconds`) does not tell already.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        """The registry's metrics, each without its `_created` samples."""
        for metric in self.registry.collect():
            created = metric.name + "_created"
            metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


class _Live:
    """The gauges read at scrape time (a prometheus collector)."""

    def __init__(self, metrics: Metrics, store: Store, scheduler: Scheduler) -> None:
        self.metrics = metrics
        self.store = store
        self.scheduler = scheduler
        self.read_at = -math.inf  # monotonic time of the last read, failed or not
        self.storage_up = False
        self.counts: dict[str, int] = {}
        self.oldest_due_at: float | None = None

    async def refresh(self) -> None:
        """Read the queue from the store, at most once per `refresh_s`."""
        now = self.metrics.clock.monotonic()
        if now - self.read_at < self.metrics.refresh_s:
            return
        # a failed read waits its turn as well: a storm of scrapes must not hammer a sick disk
        self.read_at = now
        try:
            self.counts = await self.store.queue_counts(None)
            self.oldest_due_at = await self.store.oldest_due_at()
        except StorageUnavailable:
            self.storage_up = False
        else:
            self.storage_up = True

    def collect(self) -> Iterable[Metric]:
        """The gauges and the scheduler's and store's own counters, as of now."""
        yield _gauge(
            "wahookd_storage_up",
            "1 when the database answered the last scrape's read, else 0.",
            int(self.storage_up),
        )
        if self.storage_up:
            # a stale number would mislead: without the database, no queue gauges at all
            depth = GaugeMetricFamily(
                "wahookd_queue_depth", "Queued deliveries by state.", labels=["state"]
            )
            for state in QUEUE_STATES:
                depth.add_metric([state.value], self.counts.get(state.value, 0))
            yield depth
            age = 0.0
            if self.oldest_due_at is not None:
                age = max(0.0, self.metrics.clock.time() - self.oldest_due_at)
            yield _gauge(
                "wahookd_oldest_due_age_seconds",
                "How long the longest-waiting due delivery has been due (0: none is).",
                age,
            )
        yield _gauge("wahookd_attempts_in_flight", "Attempts running now.", self.scheduler.inflight)
        yield _counter(
            "wahookd_webhooks_auto_disabled",
            "Webhooks turned inactive after failing with no success for delivery.disable_after.",
            self.scheduler.auto_disabled,
        )
        throttled = CounterMetricFamily(
            "wahookd_webhook_throttled_seconds",
            "Seconds a webhook's due deliveries waited for its rateLimit (not attempts).",
            labels=["webhook"],
        )
        for public_id, seconds in self.scheduler.throttled_seconds().items():
            throttled.add_metric([public_id], seconds)
        yield throttled
        yield _counter(
            "wahookd_scheduler_backoffs",
            "Scheduler rounds that backed off because storage was unavailable.",
            self.scheduler.backoffs,
        )
        yield _counter(
            "wahookd_storage_faults",
            "Refused write batches and failed reads (busy, I/O error, full disk).",
            self.store.faults,
        )
        yield _counter(
            "wahookd_storage_commits",
            "Group commits: write transactions, each one fsync with synchronous = full.",
            self.store.commits,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
