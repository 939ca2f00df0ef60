"""Several real daemons on one PostgreSQL database: the nodes of one service (SPEC §10).

Each node is `wahookd serve` as a subprocess (tests/daemon_proc.py) on its own port, all
on the test's database of the session's PostgreSQL server (tests/pg.py), delivering to
one TLS receiver on 127.0.0.1 through a static webhook.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
import trustme
from daemon_proc import DaemonProcess, free_port
from support import Receiver, Reply, ca_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "c" * 64  # the nodes share one JWT key: a token works on any of them
WAIT_S = 60.0


def token(role: str = "admin") -> str:
    return jwt.encode({"exp": int(time.time()) + 600, "role": role}, SECRET, algorithm="HS256")


def write_config(
    path: Path, port: int, dsn: str, ca: trustme.CA, receiver: Receiver, extra: str = ""
) -> None:
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = "500ms"\n'
        f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\n'
        f'path = "{path.parent / "data" / "wahookd.db"}"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, path.parent)}"\n'
        'allow_networks = ["127.0.0.0/8"]\nretry_schedule = ["1s"]\n'
        f"{extra}"
        f'\n[[webhook]]\nsession = "*"\nurl = "{receiver.url}"\nevents = ["*"]\n'
    )


Cluster = Callable[[int, str], Awaitable[list[DaemonProcess]]]


@pytest.fixture
async def cluster(
    tmp_path: Path, pg_dsn: str, ca: trustme.CA, receiver: Receiver
) -> AsyncIterator[Cluster]:
    """Starts `count` nodes on the test's database; every node is stopped by PID at the end."""
    nodes: list[DaemonProcess] = []

    async def start(count: int, extra: str = "") -> list[DaemonProcess]:
        for _ in range(count):
            home = tmp_path / f"node{len(nodes)}"
            home.mkdir()
            port = free_port()
            config = home / "wahookd.toml"
            write_config(config, port, pg_dsn, ca, receiver, extra)
            node = DaemonProcess(config, port, home)
            nodes.append(node)
            await node.start(timeout_s=30)
        return nodes[-count:]

    yield start
    for node in nodes:
        if node.proc is not None and node.proc.returncode is None:
            node.proc.kill()
            await node.wait()


async def api(node: DaemonProcess, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{node.base}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token()}"},
        ) as resp,
    ):
        answer = await resp.json()
        assert resp.status < 300, (resp.status, answer)
        return answer


async def ingest(nodes: list[DaemonProcess], count: int) -> list[str]:
    """`count` events, each posted to the next node in turn; their ids."""
    ids = []
    for n in range(count):
        event = {"event": "session.disconnected", "sessionId": f"s{n % 3}", "reason": f"r{n}"}
        answer = await api(nodes[n % len(nodes)], "POST", "/api/events", event)
        ids += answer["ids"]
    return ids


async def settled(node: DaemonProcess, delivered: int) -> dict[str, Any]:
    """Wait until nothing is queued and `delivered` deliveries succeeded; the stats."""
    deadline = time.monotonic() + WAIT_S
    while True:
        queue = (await api(node, "GET", "/api/webhook/queue"))["queue"]
        stats = [(await api(node, "GET", f"/api/webhook/stats/s{i}"))["stats"] for i in range(3)]
        successful = sum(s["successful"] for s in stats)
        if not any(queue.values()) and successful >= delivered:
            return {"queue": queue, "successful": successful}
        assert time.monotonic() < deadline, (queue, successful)
        await asyncio.sleep(0.25)


async def holding(node: DaemonProcess) -> dict[str, int]:
    """Attempts held per node id, as GET /api/cluster shows them."""
    answer = await api(node, "GET", "/api/cluster")
    assert answer["backend"] == "postgres"
    return {n["id"]: n["attemptsHeld"] for n in answer["nodes"]}


async def node_id(node: DaemonProcess) -> str:
    answer = await api(node, "GET", "/api/cluster")
    (me,) = [n["id"] for n in answer["nodes"] if n["self"]]
    return str(me)


async def test_a_killed_nodes_attempts_are_made_again_elsewhere_with_the_same_id(
    cluster: Cluster, receiver: Receiver
) -> None:
    receiver.default = Reply(200, delay_s=1.5)  # attempts stay in flight a while
    nodes = await cluster(3, '[cluster]\nlease = "3s"\n')
    ids = [await node_id(n) for n in nodes]
    assert len(set(ids)) == 3
    # server.pin_cpu = "auto" pins with SQLite only: these nodes' threads stay unpinned
    assert all("threads on CPU" not in n.log() for n in nodes)
    await ingest(nodes, 30)
    # kill -9 a node while it holds attempts (their 200s arrive but are never recorded)
    deadline = time.monotonic() + WAIT_S
    while True:
        held = await holding(nodes[0])
        victim = next((i for i, n in enumerate(ids) if held.get(n, 0) > 0), None)
        if victim is not None:
            break
        assert time.monotonic() < deadline, held
        await asyncio.sleep(0.05)
    held_by_victim = held[ids[victim]]
    assert nodes[victim].proc is not None
    nodes[victim].proc.send_signal(signal.SIGKILL)
    await nodes[victim].wait()
    live = [n for i, n in enumerate(nodes) if i != victim]
    receiver.default = Reply(200)
    result = await settled(live[0], 30)
    assert result["successful"] == 30  # every acknowledged event delivered, counted once
    seen = Counter(r.headers["X-Webhook-Id"] for r in receiver.requests)
    assert len(seen) == 30
    repeated = [uid for uid, n in seen.items() if n > 1]
    # only what the killed node had in flight is sent again, at most once more each
    assert 0 < len(repeated) <= held_by_victim + 5, (repeated, held_by_victim)
    for uid in repeated:
        attempts = [
            r.headers["X-Webhook-Attempt"]
            for r in receiver.requests
            if r.headers["X-Webhook-Id"] == uid
        ]
        assert set(attempts) == {"1"}, attempts  # the same attempt made again
    answer = await api(live[0], "GET", "/api/cluster")
    dead = next(n for n in answer["nodes"] if n["id"] == ids[victim])
    assert dead["alive"] is False and dead["attemptsHeld"] == 0


async def test_sigterm_hands_the_leases_back_at_once(cluster: Cluster, receiver: Receiver) -> None:
    # a lease far longer than the test: only a hand-back lets another node retry in time
    receiver.default = Reply(200, delay_s=5.0)
    first, second = await cluster(2, '[cluster]\nlease = "10m"\n')
    leaving = await node_id(first)
    await ingest([first], 4)
    deadline = time.monotonic() + WAIT_S
    while (await holding(second)).get(leaving, 0) == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    receiver.default = Reply(200)
    await first.signal(signal.SIGTERM)  # the grace (500ms) cuts the slow attempts short
    assert await first.wait() == 0
    assert "did not finish within the shutdown grace" in first.log()
    assert leaving not in await holding(second)  # it left the cluster
    result = await settled(second, 4)
    assert result["successful"] == 4
    bodies = {json.loads(r.body)["reason"] for r in receiver.requests}
    assert bodies == {"r0", "r1", "r2", "r3"}


async def sessions_report(dsn: str) -> str:
    """What every session of the test's database is doing and who blocks it (a failure's
    context: a node frozen holding locks shows as the pid the others wait for)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, application_name, state, wait_event_type, wait_event,"
            " pg_blocking_pids(pid) AS blocked_by, now() - xact_start AS in_xact,"
            " left(query, 160) AS query FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid"
        )
    finally:
        await conn.close()
    return "\n".join(str(dict(row)) for row in rows)


async def test_a_node_frozen_past_its_lease_cannot_record_over_the_newer_attempt(
    cluster: Cluster, receiver: Receiver, pg_dsn: str
) -> None:
    receiver.default = Reply(200, delay_s=1.0)
    frozen, other = await cluster(2, '[cluster]\nlease = "3s"\n')
    frozen_id = await node_id(frozen)
    await ingest([frozen], 3)
    deadline = time.monotonic() + WAIT_S
    while True:
        held = await holding(other)
        # frozen once every delivery's request is out (the receiver holds each answer 1
        # s): frozen between a claim and its write, an attempt would time out unsent, a
        # logged attempt the receiver never saw. (Comparing the requests with the
        # attempts held let a claim made after that count go unsent: seen once in ~20
        # runs beside two busy loops.)
        if held.get(frozen_id, 0) and len(receiver.requests) >= 3:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await frozen.signal(signal.SIGSTOP)  # its answers arrive; it cannot read them
    try:
        receiver.default = Reply(200)
        # past the lease, the other node takes the attempts back and makes them again
        try:
            result = await settled(other, 3)
        except AssertionError as exc:
            # seen once in ~25 runs under load: the other node's writes waited out their
            # statement timeout twice, on locks the frozen node held
            report = await sessions_report(pg_dsn)
            raise AssertionError(f"{exc}\nPostgreSQL sessions:\n{report}") from None
    finally:
        await frozen.signal(signal.SIGCONT)
    assert result["successful"] == 3
    repeated = len(receiver.requests) - 3
    assert repeated > 0  # the frozen node's attempts were made again
    # the woken node reads its old answers (or times out) and records them: fenced off,
    # only logged; every request the receiver saw is one attempt in the log
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = [
            d
            for i in range(3)
            for d in (await api(frozen, "GET", f"/api/webhook/deliveries/s{i}"))["deliveries"]
        ]
        logged = sum(len(d["attempts"]) for d in rows)
        if logged >= len(receiver.requests):
            break
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.2)
    assert logged == len(receiver.requests)
    assert {d["status"] for d in rows} == {"delivered"}
    again = await settled(frozen, 3)
    assert again["successful"] == 3  # never counted twice
