"""At-least-once under kill -9 (SPEC §7): the real daemon, SIGKILLed at random moments.

A client posts events (single and batch) without pause while the daemon delivers them
to a real TLS receiver in this process. The daemon is killed with SIGKILL several times
and restarted on the same database. Once the queue has drained, every event that got a
202 must have reached the receiver, and the redeliveries must be explained by the
attempts that could have been in flight at the kills.

Replay a failure with the seed it printed: WAHOOKD_CRASH_SEED=<seed> pytest ... -s.
The seed fixes the kill delays and the traffic; the exact interleaving still depends
on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme
from daemon_proc import DaemonProcess, free_port
from support import Receiver, Reply, ca_file

SECRET = "k" * 64
HOOK_SECRET = "crash_test_webhook_secret"
SESSION = "crash-session"
KILLS = 6
CONCURRENCY = 4  # delivery.concurrency: bounds the attempts in flight at a kill
PER_WEBHOOK_CONCURRENCY = 16  # the default; one webhook, so CONCURRENCY is the binding limit
MAX_REQUESTS = 3_000  # the ingest loop's hard bound
MAX_BATCH = 20
DRAIN_TIMEOUT_S = 30.0


def write_config(path: Path, port: int, tmp_path: Path, ca: trustme.CA) -> None:
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = "2s"\n'
        f'[storage]\npath = "{tmp_path / "data" / "wahookd.db"}"\nsynchronous = "full"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, tmp_path)}"\nallow_networks = ["127.0.0.0/8"]\n'
        # a retry is at most 4 s away, so a transient failure cannot end `failed` in time
        'timeout = "10s"\nretry_schedule = ["1s", "1s", "1s", "1s"]\n'
        f"concurrency = {CONCURRENCY}\nper_webhook_concurrency = {PER_WEBHOOK_CONCURRENCY}\n"
    )


def auth_headers() -> dict[str, str]:
    token = jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Ledger:
    """What the ingest client saw: which events were acknowledged, which requests failed."""

    acked: set[str] = field(default_factory=set)  # markers (messageId) of 202'd events
    sent: set[str] = field(default_factory=set)  # markers of every event ever posted
    requests: int = 0
    acked_requests: int = 0
    failed_requests: int = 0  # connection errors: the daemon died mid-request or was down
    resent_requests: int = 0
    unexpected: list[str] = field(default_factory=list)


async def ingest_loop(base: str, rng: random.Random, ledger: Ledger, stop: asyncio.Event) -> None:
    """Post events until `stop`, recording every event that got a 202.

    A request whose events all carry their own `id` is sent again after a connection
    error, as a gateway would: the daemon dedupes it if the first try was committed.
    """
    headers = auth_headers()
    timeout = aiohttp.ClientTimeout(total=10)
    counter = 0
    resend: tuple[list[dict[str, Any]], int] | None = None
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while not stop.is_set() and ledger.requests < MAX_REQUESTS:
            if resend is not None:
                events, tries = resend
                ledger.resent_requests += 1
            else:
                with_ids = rng.random() < 0.5
                events = []
                for _ in range(1 if rng.random() < 0.5 else rng.randint(2, MAX_BATCH)):
                    counter += 1
                    marker = f"m{counter}"
                    event = {
                        "event": "message.received",
                        "sessionId": SESSION,
                        "messageId": marker,
                        "from": "1234567890",
                        "to": "me",
                        "type": "text",
                        "text": f"crash test {marker}",
                    }
                    if with_ids:
                        event["id"] = f"evt-{marker}"
                    events.append(event)
                tries = 0
            body: dict[str, Any] = events[0] if len(events) == 1 else {"events": events}
            ledger.requests += 1
            ledger.sent.update(e["messageId"] for e in events)
            try:
                async with http.post(f"{base}/api/events", json=body, headers=headers) as resp:
                    status = resp.status
                    answer = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                ledger.failed_requests += 1
                has_ids = all("id" in e for e in events)
                resend = (events, tries + 1) if has_ids and tries < 3 else None
                await asyncio.sleep(0.02)
                continue
            resend = None
            if status == 202:
                if answer.get("accepted") != len(events) or len(answer.get("ids", ())) != len(
                    events
                ):
                    ledger.unexpected.append(f"202 with a wrong answer: {answer}")
                for event, uid in zip(events, answer.get("ids", ()), strict=False):
                    if "id" in event and uid != event["id"]:
                        ledger.unexpected.append(f"id {event['id']} answered as {uid}")
                ledger.acked.update(e["messageId"] for e in events)
                ledger.acked_requests += 1
            else:
                ledger.unexpected.append(f"{status}: {answer}")
            await asyncio.sleep(rng.uniform(0.0, 0.01))


@dataclass
class CrashState:
    """The database as a kill left it, read from a copy so the restart sees it untouched."""

    events: set[str]  # markers of the events committed
    processing: set[str]  # delivery ids (X-Webhook-Id) claimed with no outcome committed


def crash_state(db: Path, copy_dir: Path) -> CrashState:
    copy_dir.mkdir()
    # the WAL holds the latest commits; SQLite rebuilds the -shm index from it
    for suffix in ("", "-wal"):
        if Path(f"{db}{suffix}").exists():
            shutil.copyfile(f"{db}{suffix}", copy_dir / f"{db.name}{suffix}")
    conn = sqlite3.connect(copy_dir / db.name)
    try:
        events = {
            json.loads(body)["messageId"] for (body,) in conn.execute("SELECT body FROM events")
        }
        processing = {
            uid for (uid,) in conn.execute("SELECT uid FROM deliveries WHERE state = 'processing'")
        }
    finally:
        conn.close()
    return CrashState(events, processing)


async def queue_counts(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    async with http.get(
        f"{base}/api/webhook/queue", params={"sessionId": SESSION}, headers=auth_headers()
    ) as resp:
        assert resp.status == 200
        return (await resp.json())["queue"]  # type: ignore[no-any-return]


async def wait_for_new_request(receiver: Receiver, seen: int, timeout_s: float = 5.0) -> None:
    """Wait (bounded) until the receiver got a request beyond the first `seen`."""
    with contextlib.suppress(TimeoutError):
        await receiver.wait_for(seen + 1, timeout_s)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_no_acknowledged_event_is_lost_under_kill_9(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    seed = int(os.environ.get("WAHOOKD_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\ncrash test seed: {seed} (replay with WAHOOKD_CRASH_SEED={seed})")
    kill_rng, ingest_rng = random.Random(seed), random.Random(seed + 1)
    # a short answer delay keeps a few attempts in flight when a kill lands
    receiver.default = Reply(200, delay_s=0.01)

    port = free_port()
    config = tmp_path / "wahookd.toml"
    write_config(config, port, tmp_path, ca)
    daemon = DaemonProcess(config, port, tmp_path)
    db = tmp_path / "data" / "wahookd.db"
    ledger = Ledger()
    crashes: list[CrashState] = []
    stop = asyncio.Event()
    ingest: asyncio.Task[None] | None = None
    kill_log: list[str] = []
    started = time.monotonic()
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as http:
            hook = {"url": receiver.url, "events": ["*"], "secret": HOOK_SECRET}
            async with http.put(
                f"{daemon.base}/api/webhook/config/{SESSION}", json=hook, headers=auth_headers()
            ) as resp:
                assert resp.status == 200, await resp.text()

        ingest = asyncio.create_task(ingest_loop(daemon.base, ingest_rng, ledger, stop))
        for kill in range(KILLS):
            # kill under steady delivery: wait for this run's first delivery, then a bit more
            await wait_for_new_request(receiver, len(receiver.requests))
            delay_s = kill_rng.uniform(0.0, 1.0)
            await asyncio.sleep(delay_s)
            assert daemon.proc is not None and daemon.proc.returncode is None, daemon.log()
            await daemon.signal(signal.SIGKILL)
            assert await daemon.wait() == -signal.SIGKILL
            # every 202 was answered before the kill, so its event must be on disk now
            acked = set(ledger.acked)
            crash = await asyncio.to_thread(crash_state, db, tmp_path / f"crash-{kill + 1}")
            crashes.append(crash)
            lost = acked - crash.events
            assert not lost, f"kill {kill + 1}: {len(lost)} acknowledged events not committed"
            seen = {r.headers["X-Webhook-Id"] for r in receiver.requests}
            kill_log.append(
                f"kill {kill + 1}: {delay_s:.3f}s after a delivery; {len(acked)} acked, "
                f"{len(crash.events)} committed, {len(crash.processing)} in flight "
                f"({len(crash.processing & seen)} already received), "
                f"{len(receiver.requests)} received"
            )
            await asyncio.sleep(kill_rng.uniform(0.0, 0.2))
            await daemon.start()

        # a little more steady traffic on the last run, then stop the client
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(ingest, 15)
        assert not ledger.unexpected, ledger.unexpected[:10]

        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while True:
                # the receiver logs a request before answering it and the daemon records
                # the answer, so an empty queue means every delivery has been seen here
                counts = await queue_counts(http, daemon.base)
                if counts["pending"] + counts["processing"] + counts["retrying"] == 0:
                    break
                assert time.monotonic() < deadline, f"queue did not drain: {counts}"
                await asyncio.sleep(0.1)
            async with http.get(
                f"{daemon.base}/api/webhook/stats/{SESSION}", headers=auth_headers()
            ) as resp:
                assert resp.status == 200
                stats = (await resp.json())["stats"]
    finally:
        stop.set()
        if ingest is not None and not ingest.done():
            ingest.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ingest
        await daemon.stop()
    elapsed_s = time.monotonic() - started

    # what the receiver got, deduplicated by X-Webhook-Id
    by_delivery: dict[str, set[str]] = {}
    deliveries_of: dict[str, set[str]] = {}
    attempts: Counter[str] = Counter()
    for r in receiver.requests:
        delivery_id, marker = r.headers["X-Webhook-Id"], _marker(r.body)
        by_delivery.setdefault(delivery_id, set()).add(marker)
        deliveries_of.setdefault(marker, set()).add(delivery_id)
        attempts[r.headers["X-Webhook-Attempt"]] += 1
        expected = hmac.new(HOOK_SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["X-Webhook-Signature"] == f"sha256={expected}"
    duplicates = len(receiver.requests) - len(by_delivery)
    # A delivery the database had `processing` at a kill is attempted again after the
    # restart, so each kill adds at most one copy of each of those. An attempt keeps its
    # slot until its outcome is committed, so a kill never finds more than `concurrency`
    # of them: duplicates <= kills x concurrency.
    in_flight_at_kills = Counter(uid for crash in crashes for uid in crash.processing)
    copies = Counter(r.headers["X-Webhook-Id"] for r in receiver.requests)
    unexplained = {uid: n for uid, n in copies.items() if n - 1 > in_flight_at_kills[uid]}
    bound = in_flight_at_kills.total()
    unacked_delivered = len(set(deliveries_of) - ledger.acked)

    print("\n".join(kill_log))
    print(
        f"requests {ledger.requests} ({ledger.acked_requests} got 202, "
        f"{ledger.failed_requests} failed on connection, {ledger.resent_requests} resent); "
        f"events 202'd {len(ledger.acked)}, delivered without a 202 {unacked_delivered}; "
        f"deliveries received {len(receiver.requests)}, distinct {len(by_delivery)}, "
        f"duplicates {duplicates} (in flight at the kills {bound}, "
        f"kills x concurrency {KILLS * CONCURRENCY}); attempts {dict(sorted(attempts.items()))}; "
        f"queue {counts}; {elapsed_s:.1f}s"
    )

    assert len(kill_log) == KILLS
    # at-least-once: every acknowledged event arrived
    missing = ledger.acked - set(deliveries_of)
    assert not missing, (
        f"{len(missing)} acknowledged events never delivered: {sorted(missing)[:20]}"
    )
    # nothing arrives that was never sent, and nothing ended `failed`
    assert set(deliveries_of) <= ledger.sent
    assert counts == {"pending": 0, "processing": 0, "failed": 0, "retrying": 0}
    # one delivery id per event (resends with an `id` were deduped) and one event per id
    assert all(len(markers) == 1 for markers in by_delivery.values())
    assert all(len(ids) == 1 for ids in deliveries_of.values())
    # a redelivery comes only from an attempt in flight at a kill
    assert not unexplained, f"copies beyond the attempts in flight at the kills: {unexplained}"
    assert duplicates <= bound
    assert all(len(crash.processing) <= CONCURRENCY for crash in crashes), [
        len(crash.processing) for crash in crashes
    ]
    assert duplicates <= KILLS * CONCURRENCY
    # each delivery was recorded delivered exactly once, whatever the receiver saw twice
    assert stats["successful"] == len(by_delivery) and stats["failed"] == 0
    assert "Traceback" not in daemon.log()


def _marker(body: bytes) -> str:
    marker = json.loads(body)["messageId"]
    assert isinstance(marker, str)
    return marker
