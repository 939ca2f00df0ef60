"""SPEC §8 ordering and throttling end to end: the real app, a real TLS receiver.

- a chat waits behind its retrying head while other chats flow;
- a head that ends `failed` releases its chat;
- `rateLimit` measured on the receiver's arrival times, its waits no attempts.
(kill -9 with ordering: tests/delivery/test_ordering_crash.py.)
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from support import (
    Daemon,
    Received,
    Receiver,
    Reply,
    ca_file,
    eventually,
    make_config,
    running_daemon,
)

# the in-process daemons here run on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("daemon_backend")

SESSION = "ord"


def message(chat: str, seq: int) -> dict[str, Any]:
    return {
        "event": "message.received",
        "sessionId": SESSION,
        "messageId": f"{chat}-{seq}",
        "from": f"{chat}@c.us",
        "to": "me",
        "type": "text",
    }


def arrivals(receiver: Receiver, path: str = "/hook") -> list[tuple[str, int, int]]:
    """(chat, seq, attempt) of each request to `path`, in arrival order."""
    out = []
    for r in receiver.requests:
        if r.path == path:
            chat, _, seq = json.loads(r.body)["messageId"].rpartition("-")
            out.append((chat, int(seq), int(r.headers["X-Webhook-Attempt"])))
    return out


async def add_webhook(d: Daemon, url: str, **fields: Any) -> str:
    body = {"sessionId": SESSION, "url": url, "events": ["*"], **fields}
    status, answer = await d.call("POST", "/api/webhooks", body)
    assert status == 201, answer
    return str(answer["webhook"]["id"])


async def post(d: Daemon, events: list[dict[str, Any]]) -> dict[str, Any]:
    status, answer = await d.call("POST", "/api/events", {"events": events})
    assert status == 202, answer
    return answer


async def test_a_chat_waits_behind_its_retrying_head_while_other_chats_flow(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    # the head of chat a fails once and is retried 1 s later
    failed_once: set[str] = set()

    def respond(got: Received) -> Reply:
        mid = json.loads(got.body)["messageId"]
        if mid == "a-1" and mid not in failed_once:
            failed_once.add(mid)
            return Reply(status=503)
        return Reply()

    receiver.responder = respond
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), retry_schedule=["1s"])
    async with running_daemon(config) as d:
        await add_webhook(d, receiver.url, ordering="chat")
        answer = await post(d, [message("a", 1), message("a", 2), message("a", 3)])
        assert answer["queued"] == 3  # held ones are queued too
        await eventually(lambda: len(receiver.requests) == 1, what="a-1's first attempt")
        # meanwhile chat a waits; chat b goes at once, in its own order
        await post(d, [message("b", 1), message("b", 2)])
        await eventually(lambda: len(receiver.requests) == 3, what="chat b")
        assert arrivals(receiver) == [("a", 1, 1), ("b", 1, 1), ("b", 2, 1)]
        status, queue = await d.call("GET", "/api/webhook/queue")
        assert status == 200 and queue["queue"]["retrying"] == 1, queue
        assert queue["queue"]["pending"] == 2  # a-2 and a-3, held
        await eventually(lambda: len(receiver.requests) == 6, timeout_s=10, what="chat a")
        assert arrivals(receiver)[3:] == [("a", 1, 2), ("a", 2, 1), ("a", 3, 1)]


async def test_a_failed_head_releases_its_chat(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.responder = lambda got: Reply(
        status=500 if json.loads(got.body)["messageId"] == "a-1" else 200
    )
    config = make_config(
        tmp_path, ca_file=str(ca_file(ca, tmp_path)), retry_schedule=["100ms", "100ms"]
    )
    async with running_daemon(config) as d:
        await add_webhook(d, receiver.url, ordering="chat")
        await post(d, [message("a", 1), message("a", 2), message("a", 3)])
        await eventually(lambda: len(receiver.requests) == 5, what="a-1 x3, a-2, a-3")
        assert arrivals(receiver) == [
            ("a", 1, 1),
            ("a", 1, 2),
            ("a", 1, 3),
            ("a", 2, 1),
            ("a", 3, 1),
        ]
        status, page = await d.call("GET", f"/api/webhook/deliveries/{SESSION}?status=failed")
        assert status == 200 and [len(r["attempts"]) for r in page["deliveries"]] == [3]


async def test_session_ordering_keys_the_whole_session(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.default = Reply(delay_s=0.05)
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)))
    async with running_daemon(config) as d:
        await add_webhook(d, receiver.url, ordering="session")
        await post(d, [message(chat, n) for n in range(1, 4) for chat in ("a", "b")])
        await eventually(lambda: len(receiver.requests) == 6, what="six deliveries")
        # one at a time, in ingest order, across chats
        assert [(c, s) for c, s, _ in arrivals(receiver)] == [
            (chat, n) for n in range(1, 4) for chat in ("a", "b")
        ]
        starts = [r.at for r in receiver.requests]
        assert all(b - a >= 0.04 for a, b in itertools.pairwise(starts))


async def test_rate_limit_spaces_attempts_and_its_waits_are_no_attempts(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    rate, count = 5, 15
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)))
    base = receiver.url.removesuffix("/hook")
    async with running_daemon(config) as d:
        limited = await add_webhook(d, f"{base}/limited", rateLimit=rate)
        await add_webhook(d, f"{base}/free")
        await post(d, [message(f"c{i}", 1) for i in range(count)])
        await eventually(lambda: len(receiver.requests) == 2 * count, timeout_s=10, what="all")
        limited_at = [r.at for r in receiver.requests if r.path == "/limited"]
        free_at = [r.at for r in receiver.requests if r.path == "/free"]
        # a token bucket of `rate` a second, burst `rate`: any n attempts in a row span
        # (n - rate) / rate s at least. The burst's attempts each open a TLS connection
        # and may arrive late by a handshake (on a busy host, 100 ms and more); the later
        # ones reuse them, so their arrival times follow their start times closely
        for i in range(rate, count):
            for k in range(i + rate, count):
                assert limited_at[k] - limited_at[i] >= (k - i + 1 - rate) / rate - 0.03, (i, k)
        # the whole run: (count - rate) / rate s at least; unthrottled it takes ~50 ms.
        # By the attempts' start times in the delivery log: the first arrival can be
        # late by a TLS handshake (330 ms once on a busy host), which shortened the span
        status, page = await d.call(
            "GET", f"/api/webhook/deliveries/{SESSION}?webhookId={limited}&limit=100"
        )
        assert status == 200, page
        starts = sorted(
            datetime.fromisoformat(a["startedAt"].replace("Z", "+00:00")).timestamp()
            for r in page["deliveries"]
            for a in r["attempts"]
        )
        assert len(starts) == count
        assert starts[-1] - starts[0] >= (count - rate) / rate - 0.05, starts
        # the other webhook was never held up by it
        assert max(free_at) < limited_at[-1]
        # every delivery went on its first attempt: a wait for a token is no attempt
        assert {a for _, _, a in arrivals(receiver, "/limited")} == {1}
        metrics = await (await d.client.get("/metrics", headers=d.headers())).text()
        waited = re.search(
            rf'wahookd_webhook_throttled_seconds_total{{webhook="{limited}"}} (\S+)', metrics
        )
        assert waited is not None and float(waited.group(1)) > 1.0, metrics[-2000:]
        _, stats = await d.call("GET", f"/api/webhook/stats/{SESSION}")
        assert stats["stats"]["failed"] == 0


async def test_retry_failed_can_take_one_webhook(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.default = Reply(status=500)
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), retry_schedule=[])
    base = receiver.url.removesuffix("/hook")
    async with running_daemon(config) as d:
        one = await add_webhook(d, f"{base}/one")
        await add_webhook(d, f"{base}/two")
        await post(d, [message("a", 1)])

        async def both_failed() -> bool:
            _, queue = await d.call("GET", "/api/webhook/queue")
            return bool(queue["queue"]["failed"] == 2)

        await eventually(both_failed, what="two failed deliveries")
        receiver.default = Reply()
        path = f"/api/webhook/queue/{SESSION}/retry-failed?webhookId={one}"
        status, answer = await d.call("POST", path)
        assert (status, answer["retried"]) == (200, 1), answer
        await eventually(lambda: len(receiver.requests) == 3, what="the retry to /one")
        assert receiver.requests[-1].path == "/one"
        _, queue = await d.call("GET", "/api/webhook/queue")
        assert queue["queue"]["failed"] == 1  # /two's is still failed
