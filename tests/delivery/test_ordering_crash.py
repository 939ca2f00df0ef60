"""Per-chat ordering under kill -9 (SPEC §8 "Ordering", §7): the real daemon, SIGKILLed.

One session with one extra webhook created with `"ordering": "chat"` (through the API,
once; it must survive the restarts). A client posts `message.received` events of
CHATS chats, single and batched, each chat's events numbered 0, 1, 2, ... in the order
they are posted (`messageId = f"{chat}-{seq}"`, `from = f"{chat}@c.us"`). The daemon
is SIGKILLed at random moments and restarted on the same database. The TLS receiver in
this process answers mostly 200, sometimes 500 (so a chat's head is retried while the
rest of the chat waits) and sometimes slowly (so attempts are in flight at the kills).

Once the queue has drained:
- every event that got a 202 reached the receiver, and nothing ended `failed`;
- per chat, the numbers arrive in order: a repeat of the same number is a duplicate
  (a retry, or an attempt in flight at a kill made again), a lower number after a
  higher one is a reordering;
- per chat, never two requests in flight at the receiver at once. A request whose
  connection is gone (its daemon was killed) no longer counts as in flight.

Replay a failure with the seed it printed: WAHOOKD_CRASH_SEED=<seed> pytest ... -s. The
seed fixes the kill delays, the traffic and the receiver's answers in the order the
requests arrive; the exact interleaving still depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme
from aiohttp import web
from daemon_proc import DaemonProcess, free_port
from support import Received, Receiver, ca_file

SECRET = "o" * 64
SESSION = "ordered-crash"
ORDERING = "chat"  # "none" here makes the order and in-flight assertions fail
CHATS = 20
KILLS = 5
CONCURRENCY = 8  # delivery.concurrency
PER_WEBHOOK_CONCURRENCY = 16  # the default; more than CHATS, so ordering is what serialises
RETRY_STEPS = 8  # 9 attempts; the receiver answers 500 to attempts 1..FLAKY_ATTEMPTS only
FLAKY_ATTEMPTS = 3
MAX_BATCH = 12
MAX_REQUESTS = 600  # the ingest loop's hard bound
MAX_EVENTS = 2_500
RESEND_TRIES = 60  # a request cut by a kill is sent again (same ids: deduped) until answered
DRAIN_TIMEOUT_S = 25.0


def write_config(path: Path, port: int, tmp_path: Path, ca: trustme.CA) -> None:
    schedule = ", ".join(['"200ms"'] * RETRY_STEPS)
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = "2s"\n'
        f'[storage]\npath = "{tmp_path / "data" / "wahookd.db"}"\nsynchronous = "full"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, tmp_path)}"\nallow_networks = ["127.0.0.0/8"]\n'
        f'timeout = "10s"\nretry_schedule = [{schedule}]\n'
        f"concurrency = {CONCURRENCY}\nper_webhook_concurrency = {PER_WEBHOOK_CONCURRENCY}\n"
    )


def auth_headers() -> dict[str, str]:
    token = jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def chat_name(n: int) -> str:
    return f"5511{n:06d}"


@dataclass
class Arrival:
    chat: str
    seq: int
    delivery: str  # X-Webhook-Id
    attempt: int


def _connected(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


class ChatReceiver(Receiver):
    """The TLS receiver, answering from a seeded RNG and tracking each chat's requests
    in flight: from arrival to answer, unless a kill closed the connection first."""

    def __init__(self, ca: trustme.CA, rng: random.Random) -> None:
        super().__init__(ca)
        self.rng = rng
        self.arrivals: list[Arrival] = []
        # per chat: the requests in its handler, each with the kills before its arrival
        self.live: dict[str, list[tuple[web.Request, int]]] = {}
        self.kills = 0  # the test counts its kills here
        self.max_live: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self.orphans = 0  # requests still in their handler after their connection died
        self.answers: Counter[str] = Counter()
        self.malformed: list[dict[str, Any]] = []  # messageId not of its `from` chat

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(dict(request.headers), body, time.monotonic(), request.path))
        event = json.loads(body)
        chat = event["from"].removesuffix("@c.us")
        marker_chat, _, seq = event["messageId"].rpartition("-")
        if marker_chat != chat:
            self.malformed.append(event)
        arrival = Arrival(
            chat,
            int(seq),
            request.headers["X-Webhook-Id"],
            int(request.headers["X-Webhook-Attempt"]),
        )
        self.arrivals.append(arrival)
        # one whose connection died with a daemon killed since is no longer in flight
        others = self.live.get(chat, [])
        alive = [(r, k) for r, k in others if k == self.kills or _connected(r)]
        self.orphans += len(others) - len(alive)
        if alive:
            self.overlaps.append(
                f"{chat}: seq {arrival.seq} arrived while {len(alive)} request(s) of the chat"
                " were in flight"
            )
        self.live[chat] = [*alive, (request, self.kills)]
        self.max_live[chat] = max(self.max_live[chat], len(self.live[chat]))
        async with self.arrived:
            self.arrived.notify_all()
        roll = self.rng.random()
        if roll < 0.10 and arrival.attempt <= FLAKY_ATTEMPTS:
            status, delay_s, kind = 500, self.rng.uniform(0.0, 0.02), "500"
        elif roll < 0.16:
            status, delay_s, kind = 200, self.rng.uniform(0.15, 0.5), "slow 200"
        elif roll < 0.18:
            # outlives a kill and a restart: the old connection is gone, the handler is not
            status, delay_s, kind = 200, self.rng.uniform(1.0, 2.0), "very slow 200"
        else:
            status, delay_s, kind = 200, self.rng.uniform(0.0, 0.005), "200"
        self.answers[kind] += 1
        try:
            await asyncio.sleep(delay_s)
        finally:
            # before the answer is written: the daemon cannot have it yet
            self.live[chat] = [(r, k) for r, k in self.live[chat] if r is not request]
        return web.Response(status=status, text="OK" if status == 200 else "try again")


@dataclass
class Ledger:
    """What the ingest client saw."""

    acked: set[str] = field(default_factory=set)  # messageIds of 202'd events
    sent: set[str] = field(default_factory=set)
    requests: int = 0
    acked_requests: int = 0
    failed_requests: int = 0  # connection errors and 503s: the daemon was down or dying
    abandoned: int = 0  # requests still unanswered after RESEND_TRIES
    unexpected: list[str] = field(default_factory=list)


async def ingest_loop(base: str, rng: random.Random, ledger: Ledger, stop: asyncio.Event) -> None:
    """Post events of random chats, each chat's in its order, until `stop`.

    Every event has an `id`, so a request cut by a kill is sent again as it was (the
    daemon dedupes what it had committed) before anything newer is posted: a chat's
    events reach the daemon in their order.
    """
    chats = [chat_name(n) for n in range(CHATS)]
    next_seq = dict.fromkeys(chats, 0)
    timeout = aiohttp.ClientTimeout(total=10)
    events_made = 0
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while not stop.is_set() and ledger.requests < MAX_REQUESTS and events_made < MAX_EVENTS:
            events = []
            for _ in range(1 if rng.random() < 0.5 else rng.randint(2, MAX_BATCH)):
                # a batch often carries several events of one chat
                chat = rng.choice(chats[: rng.choice((3, CHATS))])
                seq = next_seq[chat]
                next_seq[chat] += 1
                marker = f"{chat}-{seq}"
                events.append(
                    {
                        "event": "message.received",
                        "sessionId": SESSION,
                        "id": f"evt-{marker}",
                        "messageId": marker,
                        "from": f"{chat}@c.us",
                        "to": "me",
                        "type": "text",
                        "text": f"ordering crash test {marker}",
                    }
                )
            events_made += len(events)
            body: dict[str, Any] = events[0] if len(events) == 1 else {"events": events}
            ledger.requests += 1
            ledger.sent.update(e["messageId"] for e in events)
            for _ in range(RESEND_TRIES):
                try:
                    async with http.post(
                        f"{base}/api/events", json=body, headers=auth_headers()
                    ) as resp:
                        status = resp.status
                        answer = await resp.json(content_type=None)
                except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                    status, answer = 0, None
                if status in (0, 503):
                    ledger.failed_requests += 1
                    await asyncio.sleep(0.1)
                    continue
                if status == 202 and answer.get("ids") == [e["id"] for e in events]:
                    ledger.acked.update(e["messageId"] for e in events)
                    ledger.acked_requests += 1
                else:
                    ledger.unexpected.append(f"{status}: {answer}")
                break
            else:
                ledger.abandoned += 1
            await asyncio.sleep(rng.uniform(0.02, 0.06))


async def api(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=auth_headers()) as resp:
        return resp.status, await resp.json()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_each_chat_is_delivered_in_order_one_at_a_time_under_kill_9(
    tmp_path: Path, ca: trustme.CA
) -> None:
    seed = int(os.environ.get("WAHOOKD_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nordering crash test seed: {seed} (replay with WAHOOKD_CRASH_SEED={seed})")
    kill_rng, ingest_rng, reply_rng = (random.Random(seed + n) for n in range(3))
    receiver = ChatReceiver(ca, reply_rng)
    await receiver.start()

    port = free_port()
    config = tmp_path / "wahookd.toml"
    write_config(config, port, tmp_path, ca)
    daemon = DaemonProcess(config, port, tmp_path)
    ledger = Ledger()
    stop = asyncio.Event()
    ingest: asyncio.Task[None] | None = None
    kill_log: list[str] = []
    started = time.monotonic()
    try:
        await daemon.start()
        async with aiohttp.ClientSession() as http:
            hook = {
                "sessionId": SESSION,
                "url": receiver.url,
                "events": ["*"],
                "ordering": ORDERING,
            }
            status, answer = await api(http, "POST", f"{daemon.base}/api/webhooks", hook)
            assert status == 201, answer
            hook_id = answer["webhook"]["id"]

        ingest = asyncio.create_task(ingest_loop(daemon.base, ingest_rng, ledger, stop))
        for kill in range(KILLS):
            # kill under steady delivery: this run's first delivery, then a random while
            with contextlib.suppress(TimeoutError):
                await receiver.wait_for(len(receiver.requests) + 1, 5.0)
            delay_s = kill_rng.uniform(0.1, 1.2)
            await asyncio.sleep(delay_s)
            assert daemon.proc is not None and daemon.proc.returncode is None, daemon.log()
            in_flight = sum(len(live) for live in receiver.live.values())
            await daemon.signal(signal.SIGKILL)
            assert await daemon.wait() == -signal.SIGKILL
            receiver.kills += 1
            kill_log.append(
                f"kill {kill + 1}: {delay_s:.3f}s after a delivery, {in_flight} request(s)"
                f" in flight at the receiver; {len(ledger.acked)} acked,"
                f" {len(receiver.requests)} received"
            )
            await asyncio.sleep(kill_rng.uniform(0.0, 0.2))
            await daemon.start()

        # a little more traffic on the last run, then stop the client
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(ingest, 15)
        assert not ledger.unexpected, ledger.unexpected[:10]

        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while True:
                status, answer = await api(
                    http, "GET", f"{daemon.base}/api/webhook/queue?sessionId={SESSION}"
                )
                assert status == 200, answer
                counts = answer["queue"]
                if counts["pending"] + counts["processing"] + counts["retrying"] == 0:
                    break
                assert time.monotonic() < deadline, f"queue did not drain: {counts}"
                await asyncio.sleep(0.1)
            status, answer = await api(http, "GET", f"{daemon.base}/api/webhooks/{hook_id}")
            assert status == 200, answer
            kept_ordering = answer["webhook"]["ordering"]
            status, answer = await api(http, "GET", f"{daemon.base}/api/webhook/stats/{SESSION}")
            assert status == 200, answer
            stats = answer["stats"]
    finally:
        stop.set()
        if ingest is not None and not ingest.done():
            ingest.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ingest
        await daemon.stop()
        await receiver.stop()
    elapsed_s = time.monotonic() - started

    arrivals = receiver.arrivals
    delivered = {f"{a.chat}-{a.seq}" for a in arrivals}
    by_chat: dict[str, list[Arrival]] = {}
    for a in arrivals:
        by_chat.setdefault(a.chat, []).append(a)
    reorderings = []
    repeats = 0
    for chat, seen in sorted(by_chat.items()):
        for before, after in itertools.pairwise(seen):
            if after.seq < before.seq:
                reorderings.append(f"{chat}: seq {after.seq} arrived after seq {before.seq}")
            elif after.seq == before.seq:
                repeats += 1
                # the same number again is the same delivery made again, never a new one
                assert after.delivery == before.delivery, (chat, before, after)
    attempts = Counter(a.attempt for a in arrivals)

    print("\n".join(kill_log))
    print(
        f"requests {ledger.requests} ({ledger.acked_requests} got 202, "
        f"{ledger.failed_requests} failed tries, {ledger.abandoned} abandoned); events sent "
        f"{len(ledger.sent)}, 202'd {len(ledger.acked)}; arrivals {len(arrivals)}, distinct "
        f"events {len(delivered)}, repeats {repeats}; answers {dict(receiver.answers)}; "
        f"attempts {dict(sorted(attempts.items()))}; requests orphaned by kills "
        f"{receiver.orphans}; max in flight per chat {max(receiver.max_live.values())}; "
        f"reorderings {len(reorderings)}, overlaps {len(receiver.overlaps)}; "
        f"queue {counts}; {elapsed_s:.1f}s"
    )

    assert len(kill_log) == KILLS
    assert not receiver.malformed, receiver.malformed[:5]
    assert kept_ordering == ORDERING
    # at-least-once: every acknowledged event arrived, nothing unsent, nothing failed
    missing = ledger.acked - delivered
    assert not missing, (
        f"{len(missing)} acknowledged events never delivered: {sorted(missing)[:20]}"
    )
    assert delivered <= ledger.sent
    assert counts == {"pending": 0, "processing": 0, "failed": 0, "retrying": 0}
    assert stats["failed"] == 0
    # per chat, in ingest order ...
    assert not reorderings, f"{len(reorderings)} reorderings: {reorderings[:10]}"
    # ... and one at a time
    assert not receiver.overlaps, f"{len(receiver.overlaps)} overlaps: {receiver.overlaps[:10]}"
    assert max(receiver.max_live.values()) == 1
    assert "Traceback" not in daemon.log()
