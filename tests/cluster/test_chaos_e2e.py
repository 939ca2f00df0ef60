"""Nodes killed and the database restarted under load: nothing acknowledged is lost.

- three nodes under continuous load, a random one killed with SIGKILL at least ten times
  (and started again each time): every acknowledged event is delivered; an event is
  delivered more than once only when its attempt was in flight on a node at the moment
  it was killed, and then again with the same X-Webhook-Id and attempt number. The seed
  is printed (set WAHOOKD_CHAOS_SEED to replay a run's choices);
- PostgreSQL stopped and started again under two running nodes: meanwhile
  `POST /api/events` answers 503 with Retry-After; afterwards the nodes recover by
  themselves (their pools and their LISTEN connections), and nothing acknowledged is
  lost. This test runs a PostgreSQL server of its own (tests/pg.py), never the session's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cluster_support import Nodes, api, call, eventually, knows, token
from daemon_proc import DaemonProcess
from pg import PgServer, halt_server, start_again, start_server, stop_server, why_unavailable
from support import Receiver, Reply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

KILLS = 10
SESSIONS = ("s0", "s1", "s2")
DELAY_S = 0.15  # each attempt stays in flight this long at the receiver
# the receiver runs on the test's own event loop: a request a node sent just before it
# was killed may be handled (and timed) a little after the kill
LOOP_LAG_S = 0.5


@pytest.fixture
async def nodes(tmp_path: Path, pg_dsn: str, ca: trustme.CA) -> AsyncIterator[Nodes]:
    started = Nodes(tmp_path, pg_dsn, ca)
    try:
        yield started
    finally:
        await started.close()


@dataclass
class Load:
    """Posts events to the live nodes until stopped; which were acknowledged."""

    nodes: list[DaemonProcess]
    rng: random.Random
    live: set[int]
    acknowledged: set[str]
    sent: int = 0
    refused: int = 0
    running: bool = True

    async def run(self, batch: int = 3, max_batches: int = 5_000) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for _ in range(max_batches):
                if not self.running:
                    return
                index = self.rng.choice(sorted(self.live))
                events = [self._event() for _ in range(batch)]
                try:
                    status = await self._post(http, self.nodes[index], events)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0  # killed under the request: not acknowledged
                if status == 202:
                    self.acknowledged.update(e["reason"] for e in events)
                else:
                    self.refused += 1
                await asyncio.sleep(0.01)

    def _event(self) -> dict[str, Any]:
        self.sent += 1
        session = SESSIONS[self.sent % len(SESSIONS)]
        return {"event": "session.disconnected", "sessionId": session, "reason": f"e{self.sent}"}

    async def _post(
        self, http: aiohttp.ClientSession, node: DaemonProcess, events: list[dict[str, Any]]
    ) -> int:
        async with http.post(
            f"{node.base}/api/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {token()}"},
        ) as resp:
            await resp.read()
            return resp.status


async def settled(node: DaemonProcess, receiver: Receiver, reasons: set[str]) -> None:
    """Wait until nothing is queued and every reason in `reasons` reached the receiver."""

    state: dict[str, Any] = {}

    async def done() -> bool:
        state["queue"] = (await api(node, "GET", "/api/webhook/queue"))["queue"]
        seen = {json.loads(r.body)["reason"] for r in receiver.requests}
        state["missing"] = sorted(reasons - seen)[:20]
        return not any(state["queue"].values()) and reasons <= seen

    try:
        await eventually(done, "every acknowledged event delivered", timeout_s=45)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {state}") from None


async def delivered_count(node: DaemonProcess) -> int:
    stats = [(await api(node, "GET", f"/api/webhook/stats/{s}"))["stats"] for s in SESSIONS]
    return sum(s["successful"] for s in stats)


async def test_kill_9_of_random_nodes_under_load_loses_nothing_acknowledged(
    nodes: Nodes, receiver: Receiver
) -> None:
    seed = int(os.environ.get("WAHOOKD_CHAOS_SEED", random.randrange(2**32)))
    print(f"WAHOOKD_CHAOS_SEED={seed}")
    rng = random.Random(seed)
    receiver.default = Reply(200, delay_s=DELAY_S)
    cluster = await nodes.start(3, static_url=receiver.url, extra='[cluster]\nlease = "3s"\n')
    load = Load(cluster, random.Random(rng.random()), {0, 1, 2}, set())
    loading = asyncio.create_task(load.run())
    kills: list[float] = []
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            victim = rng.randrange(len(cluster))
            node = cluster[victim]
            assert node.proc is not None
            load.live.discard(victim)
            node.proc.send_signal(signal.SIGKILL)
            kills.append(time.monotonic())
            await node.wait()
            await node.start(timeout_s=30)
            load.live.add(victim)
    finally:
        load.running = False
        await loading
    assert len(kills) >= 10 and len(load.acknowledged) > 100, (seed, len(load.acknowledged))
    await settled(cluster[0], receiver, load.acknowledged)

    by_uid: dict[str, list[Any]] = defaultdict(list)
    uid_of: dict[str, set[str]] = defaultdict(set)
    for r in receiver.requests:
        uid = r.headers["X-Webhook-Id"]
        by_uid[uid].append(r)
        uid_of[json.loads(r.body)["reason"]].add(uid)
    # one delivery per event (one webhook): an event sent twice was one delivery sent twice
    assert all(len(uids) == 1 for uids in uid_of.values()), seed
    repeated = {uid: reqs for uid, reqs in by_uid.items() if len(reqs) > 1}
    for uid, reqs in repeated.items():
        # the same attempt made again (the receiver always answered 200)
        assert {r.headers["X-Webhook-Attempt"] for r in reqs} == {"1"}, (seed, uid)
        # ... because the earlier ones were in flight on nodes that were killed: a live
        # node records every attempt it makes (a fenced late one too), a killed one
        # none, so the log holds one attempt for all the requests the receiver saw
        assert reqs[0].at <= kills[-1] + LOOP_LAG_S, (seed, uid, reqs[0].at, kills)
        session = json.loads(reqs[0].body)["sessionId"]
        row = await api(cluster[0], "GET", f"/api/webhook/deliveries/{session}/{uid}")
        assert len(row["delivery"]["attempts"]) == 1, (seed, uid, row)
    # stats are exact: every delivery counted once, whichever node finished it
    assert await delivered_count(cluster[0]) == len(by_uid), seed
    print(
        f"seed {seed}: {len(kills)} kills, {len(load.acknowledged)} events acknowledged,"
        f" {load.refused} requests refused or cut, {len(repeated)} attempts made again"
    )


@pytest.fixture
def own_server() -> Iterator[dict[str, PgServer]]:
    """A PostgreSQL server of this test's own (it is stopped and started again), in a
    dict: its PID changes when it starts again, and the fixture stops the last one."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    holder = {"server": start_server()}
    try:
        yield holder
    finally:
        stop_server(holder["server"])


async def test_postgres_restarted_under_running_nodes(
    own_server: dict[str, PgServer], tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    server = own_server["server"]
    receiver.default = Reply(200, delay_s=0.1)
    cluster = Nodes(tmp_path, server.dsn("postgres"), ca)
    try:
        a, b = await cluster.start(2, static_url=receiver.url, extra='[cluster]\nlease = "3s"\n')
        acknowledged: set[str] = set()

        async def post(node: DaemonProcess, reason: str) -> tuple[int, dict[str, str]]:
            event = {"event": "session.disconnected", "sessionId": "s0", "reason": reason}
            status, _, headers = await call(node, "POST", "/api/events", event)
            if status == 202:
                acknowledged.add(reason)
            return status, headers

        for n in range(20):
            assert (await post((a, b)[n % 2], f"before{n}"))[0] == 202
        halt_server(server)  # fast shutdown: every connection is cut, attempts in flight
        for node in (a, b):
            status, headers = await post(node, f"during-{node.port}")
            assert status == 503 and int(headers["Retry-After"]) > 0, (status, headers)
        await asyncio.sleep(1.0)
        status, headers = await post(a, "during-again")
        assert status == 503 and "Retry-After" in headers
        server = own_server["server"] = await asyncio.to_thread(start_again, server)

        # the nodes recover by themselves: no restart, no operator
        tries = itertools.count()

        async def accepts(node: DaemonProcess) -> bool:
            return (await post(node, f"retry-{node.port}-{next(tries)}"))[0] == 202

        for node in (a, b):
            await eventually(lambda n=node: accepts(n), "a node accepting events again", 30)
        for n in range(20):
            assert (await post((a, b)[n % 2], f"after{n}"))[0] == 202
        # their LISTEN connections came back: a webhook made through a reaches b
        body = {"sessionId": "s9", "url": receiver.url.replace("/hook", "/new"), "events": ["*"]}
        hook = (await api(a, "POST", "/api/webhooks", body))["webhook"]["id"]
        await eventually(lambda: knows(b, hook), "b knows a webhook made after the restart", 5)
        status, _, _ = await call(
            b,
            "POST",
            "/api/events",
            {"event": "session.disconnected", "sessionId": "s9", "reason": "new"},
        )
        assert status == 202
        await settled(a, receiver, acknowledged)
        await eventually(
            lambda: _arrived(receiver, "/new"), "the new webhook used by b", timeout_s=10
        )
        assert {r for r in acknowledged if r.startswith("during")} == set()
        for node in (a, b):  # all those connection errors, and never the DSN's password
            assert server.password not in node.log()
    finally:
        await cluster.close()


async def _arrived(receiver: Receiver, path: str) -> bool:
    return any(r.path == path for r in receiver.requests)
