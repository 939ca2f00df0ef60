"""`per_webhook_concurrency` and `rateLimit` hold for the cluster (SPEC §10), measured by
the receiver: two real nodes (`wahookd serve` subprocesses, tests/daemon_proc.py) on the
test's database of the session's PostgreSQL server, each posted half of the events, both
delivering to one TLS receiver on 127.0.0.1 through one static webhook.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme
from aiohttp import web
from daemon_proc import DaemonProcess, free_port
from support import Receiver, Reply, ca_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "d" * 64
WAIT_S = 60.0


class CountingReceiver(Receiver):
    """The test receiver, also counting the requests it is answering at once."""

    def __init__(self, ca: trustme.CA) -> None:
        super().__init__(ca)
        self.open_now = 0
        self.most_open = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            return await super()._handle(request)
        finally:
            self.open_now -= 1


@pytest.fixture
async def counting(ca: trustme.CA) -> AsyncIterator[CountingReceiver]:
    receiver = CountingReceiver(ca)
    await receiver.start()
    yield receiver
    await receiver.stop()


Start = Callable[[str, str], Awaitable[list[DaemonProcess]]]


@pytest.fixture
async def two_nodes(
    tmp_path: Path, pg_dsn: str, ca: trustme.CA, counting: CountingReceiver
) -> AsyncIterator[Start]:
    """Starts two nodes with these [delivery] and [[webhook]] lines; stopped by PID after."""
    nodes: list[DaemonProcess] = []

    async def start(delivery: str, webhook: str) -> list[DaemonProcess]:
        for n in range(2):
            home = tmp_path / f"node{n}"
            home.mkdir()
            port = free_port()
            config = home / "wahookd.toml"
            config.write_text(
                f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace = "500ms"\n'
                f'[storage]\nbackend = "postgres"\ndsn = "{pg_dsn}"\n'
                f'path = "{home / "data" / "wahookd.db"}"\n'
                f'[auth]\njwt_secret = "{SECRET}"\n'
                f'[delivery]\nca_file = "{ca_file(ca, home)}"\n'
                'allow_networks = ["127.0.0.0/8"]\nretry_schedule = ["1s"]\n'
                f"{delivery}\n"
                f'[[webhook]]\nsession = "*"\nurl = "{counting.url}"\nevents = ["*"]\n'
                f"{webhook}\n"
            )
            node = DaemonProcess(config, port, home)
            nodes.append(node)
            await node.start(timeout_s=30)
        return nodes

    yield start
    for node in nodes:
        if node.proc is not None and node.proc.returncode is None:
            node.proc.kill()
            await node.wait()


async def post_events(nodes: list[DaemonProcess], count: int) -> None:
    """`count` events, half posted to each node (alternating), as fast as they take them."""
    token = jwt.encode({"exp": int(time.time()) + 600, "role": "admin"}, SECRET, algorithm="HS256")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for n in range(count):
            event = {"event": "session.disconnected", "sessionId": f"s{n % 4}", "reason": f"r{n}"}
            async with http.post(f"{nodes[n % 2].base}/api/events", json=event) as resp:
                assert resp.status == 202, await resp.text()


async def commits(node: DaemonProcess) -> int:
    """The node's write transactions so far (GET /metrics)."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.base}/metrics") as resp:
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("wahookd_storage_commits_total ")]
    return int(float(line.split()[1]))


def attempts_logged(node: DaemonProcess) -> int:
    """The attempts this node made, from its log (one line each)."""
    return sum(1 for line in node.log().splitlines() if " attempt " in f" {line}")


async def delivered(receiver: Receiver, count: int) -> list[Any]:
    deadline = time.monotonic() + WAIT_S
    while len({r.headers["X-Webhook-Id"] for r in receiver.requests}) < count:
        assert time.monotonic() < deadline, len(receiver.requests)
        await asyncio.sleep(0.1)
    return receiver.requests


async def test_per_webhook_concurrency_holds_across_nodes(
    two_nodes: Start, counting: CountingReceiver
) -> None:
    limit = 3
    counting.default = Reply(200, delay_s=0.3)
    nodes = await two_nodes(f"per_webhook_concurrency = {limit}\nconcurrency = 20", "")
    before = [await commits(n) for n in nodes]
    await post_events(nodes, 60)  # 60 x 0.3 s / 3: about 6 s of work for the cluster
    await delivered(counting, 60)
    # each node alone would allow 3 in flight: together never more than 3, and the
    # limit was used, not avoided
    assert counting.most_open == limit, counting.most_open
    # both nodes delivered (each claims its own pushes first)
    await asyncio.sleep(0.5)  # the last outcomes' log lines
    made = [attempts_logged(n) for n in nodes]
    assert all(m > 0 for m in made) and sum(made) >= 60, made
    # a node held back at the limit does not claim in a loop: its lane backs off. The
    # writes: 60 ingests, about one claim and one record per delivery, some refusals
    writes = sum([await commits(n) for n in nodes]) - sum(before)
    print(f"writes: {writes} for 60 events, attempts by node {made}")
    assert writes <= 60 * 4, writes


async def test_rate_limit_holds_across_nodes(two_nodes: Start, counting: CountingReceiver) -> None:
    rate, count = 5, 40
    nodes = await two_nodes("concurrency = 20", f"rate_limit = {rate}")
    await post_events(nodes, count)
    requests = await delivered(counting, count)
    times = sorted(r.at for r in requests)
    # arrivals in any interval of d seconds: at most the burst plus rate x d, with one
    # token of slack for the time between a claim's commit and its request's arrival
    worst = max(
        (j - i + 1) - (rate + rate * (times[j] - times[i]))
        for i in range(len(times))
        for j in range(i, len(times))
    )
    assert worst <= 1, worst
    assert times[-1] - times[0] >= (count - rate) / rate - 0.5  # ~7 s, not ~3.5 s
    await asyncio.sleep(0.5)
    made = [attempts_logged(n) for n in nodes]
    assert all(m > 0 for m in made) and sum(made) >= count, made
