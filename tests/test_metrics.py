"""GET /metrics: a real daemon, a real TLS receiver, the scrape parsed as Prometheus does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import (
    Daemon,
    Received,
    Receiver,
    Reply,
    ca_file,
    capture_outcomes,
    eventually,
    make_config,
    running_daemon,
)

from wahookd.clock import FakeClock
from wahookd.config import Config
from wahookd.metrics import LAG_BUCKETS_S, LoopHistogram
from wahookd.store import StorageUnavailable

SESSIONS = ("s-ok", "s-fail", "s-slow", "s-gone")
# label names any series may carry: none of them is ever a session, a URL or an id
LABELS = {"type", "outcome", "class", "state", "version", "le"}


def config(tmp_path: Path, ca: trustme.CA, **delivery: Any) -> Config:
    return make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), **delivery)


async def scrape(d: Daemon) -> tuple[str, dict[str, float]]:
    """GET /metrics without a token; the text and every sample as {"name{k=v,...}": value}."""
    resp = await d.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await resp.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert set(s.labels) <= LABELS, s
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" in s.labels:
                labels = ",".join(filter(None, [labels, f"le={s.labels['le']}"]))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return text, samples


async def configure(d: Daemon, session: str, url: str) -> None:
    status, answer = await d.call(
        "PUT", f"/api/webhook/config/{session}", {"url": url, "events": ["*"]}
    )
    assert status == 200, answer


def by_path(got: Received) -> Reply:
    return {
        "/ok": Reply(200),
        "/fail": Reply(500, b"boom"),
        "/slow": Reply(200, delay_s=1.5),  # beyond the 300 ms attempt timeout
        "/gone": Reply(410, b"gone"),
    }[got.path]


def event(session: str, kind: str = "message.received", **extra: Any) -> dict[str, Any]:
    fields = {
        "message.received": {"messageId": "m", "from": "1", "to": "2", "type": "text"},
        "session.connected": {"phoneNumber": "1"},
        "session.disconnected": {"reason": "x"},
    }[kind]
    return {"event": kind, "sessionId": session, **fields, **extra}


async def test_scrape_counts_a_mix_of_outcomes_exactly(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.responder = by_path
    base = receiver.url.removesuffix("/hook")
    cfg = config(tmp_path, ca, timeout="300ms", retry_schedule=["100ms"])
    async with running_daemon(cfg) as d:
        for session in SESSIONS:
            await configure(d, session, f"{base}/{session.removeprefix('s-')}")
        outcomes = capture_outcomes(d)
        batch = [
            event("s-ok"),
            event("s-ok", id="once"),
            event("s-ok", "session.connected"),
            event("s-fail"),
            event("s-slow", "session.disconnected"),
            event("s-gone"),
            event("s-nobody", "session.disconnected"),  # no webhook: ingested, not queued
        ]
        status, answer = await d.call("POST", "/api/events", {"events": batch})
        assert status == 202 and answer["queued"] == 6, answer
        status, answer = await d.call("POST", "/api/events", event("s-ok", id="once"))
        assert status == 202 and answer["queued"] == 0, answer

        def finished() -> int:
            return sum(o.kind != "retry" for o in outcomes)

        await eventually(lambda: finished() == 6 and d.state.scheduler.inflight == 0)
        text, m = await scrape(d)

    assert m["wahookd_events_ingested_total{type=message.received}"] == 4
    assert m["wahookd_events_ingested_total{type=session.connected}"] == 1
    assert m["wahookd_events_ingested_total{type=session.disconnected}"] == 2
    assert m["wahookd_events_ingested_total{type=message.read}"] == 0  # every type, from 0
    assert m["wahookd_events_repeated_total"] == 1
    assert m["wahookd_deliveries_queued_total"] == 6

    assert m["wahookd_deliveries_finished_total{outcome=delivered}"] == 3
    assert m["wahookd_deliveries_finished_total{outcome=failed}"] == 2  # 500 and timeout
    assert m["wahookd_deliveries_finished_total{outcome=gone}"] == 1
    attempts = {c: m[f"wahookd_attempts_total{{class={c}}}"] for c in ("2xx", "4xx", "5xx")}
    assert attempts == {"2xx": 3, "4xx": 1, "5xx": 2}
    assert m["wahookd_attempts_total{class=timeout}"] == 2
    for quiet in ("3xx", "network", "tls", "refused"):
        assert m[f"wahookd_attempts_total{{class={quiet}}}"] == 0

    assert m["wahookd_attempt_duration_seconds_count"] == 8
    assert m["wahookd_attempt_duration_seconds_bucket{le=+Inf}"] == 8
    # the two timeouts took the 300 ms timeout at least; nothing else is that slow here
    assert m["wahookd_attempt_duration_seconds_bucket{le=0.25}"] == 6
    assert m["wahookd_attempt_duration_seconds_sum"] >= 0.6
    assert m["wahookd_scheduler_lag_seconds_count"] == 8  # one claim per attempt

    assert m["wahookd_storage_up"] == 1
    queue = {s: m[f"wahookd_queue_depth{{state={s}}}"] for s in ("pending", "processing")}
    assert queue == {"pending": 0, "processing": 0}
    assert m["wahookd_queue_depth{state=retrying}"] == 0
    assert m["wahookd_queue_depth{state=failed}"] == 3  # a 410 fails its delivery too
    assert m["wahookd_oldest_due_age_seconds"] == 0
    assert m["wahookd_attempts_in_flight"] == 0
    assert m["wahookd_webhooks_auto_disabled_total"] == 0
    assert m["wahookd_storage_faults_total"] == 0
    assert m["wahookd_scheduler_backoffs_total"] == 0
    assert m["wahookd_storage_commits_total"] > 0
    assert m["process_resident_memory_bytes"] > 0

    for secret in (*SESSIONS, "s-nobody", "once", "dlv_", "evt_", "127.0.0.1", "/fail"):
        assert secret not in text, secret
    assert "_created" not in text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert all(n.startswith(("wahookd_", "process_")) for n in names), names


async def test_store_reads_are_cached_and_a_storm_shares_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    async with running_daemon(make_config(tmp_path), clock) as d:
        calls = 0
        counts = d.state.store.queue_counts

        async def counting(sessions: Any) -> dict[str, int]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)  # a slow count over a long backlog
            return await counts(sessions)

        monkeypatch.setattr(d.state.store, "queue_counts", counting)
        results = await asyncio.gather(*(scrape(d) for _ in range(20)))
        assert calls == 1
        assert all(m["wahookd_storage_up"] == 1 for _, m in results)
        await scrape(d)
        assert calls == 1  # within refresh_s: the numbers of the last read
        clock.advance(d.state.metrics.refresh_s)
        await scrape(d)
        assert calls == 2


async def test_storage_down_is_a_200_with_storage_up_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    async with running_daemon(make_config(tmp_path), clock) as d:
        _, m = await scrape(d)
        assert m["wahookd_storage_up"] == 1 and "wahookd_queue_depth{state=pending}" in m

        async def down(*args: Any) -> Any:
            raise StorageUnavailable("disk I/O error")

        with monkeypatch.context() as patch:
            patch.setattr(d.state.store, "queue_counts", down)
            clock.advance(10)
            text, m = await scrape(d)
            assert m["wahookd_storage_up"] == 0
            # no stale queue numbers: the gauges that need the database are left out
            assert "wahookd_queue_depth" not in text
            assert "wahookd_oldest_due_age_seconds" not in text
            assert m["wahookd_attempts_in_flight"] == 0
            assert "wahookd_attempts_total{class=2xx}" in m
        clock.advance(10)
        _, m = await scrape(d)
        assert m["wahookd_storage_up"] == 1 and m["wahookd_queue_depth{state=pending}"] == 0


async def test_oldest_due_age_grows_while_nothing_claims(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    clock = FakeClock()
    async with running_daemon(config(tmp_path, ca), clock) as d:
        await configure(d, "s1", receiver.url)
        d.state.scheduler.stop_claiming()  # as at shutdown: what is due stays due
        await eventually(lambda: not d.state.scheduler.running)
        status, _ = await d.call("POST", "/api/events", event("s1"))
        assert status == 202
        clock.advance(42)
        _, m = await scrape(d)
        assert m["wahookd_oldest_due_age_seconds"] == 42
        assert m["wahookd_queue_depth{state=pending}"] == 1
        assert m["wahookd_scheduler_lag_seconds_count"] == 0


async def test_auto_disabled_webhooks_are_counted(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.default = Reply(500)
    cfg = config(tmp_path, ca, retry_schedule=["100ms", "100ms"], disable_after="50ms")
    async with running_daemon(cfg) as d:
        await configure(d, "s1", receiver.url)
        status, _ = await d.call("POST", "/api/events", event("s1"))
        assert status == 202
        await eventually(lambda: d.state.scheduler.auto_disabled == 1)
        await eventually(lambda: d.state.scheduler.inflight == 0)
        _, m = await scrape(d)
    assert m["wahookd_webhooks_auto_disabled_total"] == 1
    assert m["wahookd_attempts_total{class=5xx}"] == 2
    # parked behind the inactive webhook: pending, and not due until it is active again
    assert m["wahookd_queue_depth{state=pending}"] == 1
    assert m["wahookd_oldest_due_age_seconds"] == 0


async def test_each_daemon_has_its_own_registry(tmp_path: Path) -> None:
    async with (
        running_daemon(make_config(tmp_path / "a")) as a,
        running_daemon(make_config(tmp_path / "b")) as b,
    ):
        status, _ = await a.call("POST", "/api/events", event("s1", "session.disconnected"))
        assert status == 202
        _, ma = await scrape(a)
        _, mb = await scrape(b)
    assert ma["wahookd_events_ingested_total{type=session.disconnected}"] == 1
    assert mb["wahookd_events_ingested_total{type=session.disconnected}"] == 0


@given(st.lists(st.floats(min_value=0, max_value=10_000, allow_nan=False), max_size=30))
def test_the_loop_histogram_reads_as_prometheus_clients(values: list[float]) -> None:
    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram("h_seconds", "A histogram.", buckets=LAG_BUCKETS_S, registry=theirs_registry)
    ours = LoopHistogram("h_seconds", "A histogram.", LAG_BUCKETS_S)
    ours_registry.register(ours)
    for value in [*values, *LAG_BUCKETS_S]:  # the bounds themselves: le means at most
        theirs.observe(value)
        ours.observe(value)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert lines(ours_registry) == lines(theirs_registry)
