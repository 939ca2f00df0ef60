"""Delivery end to end: a real TLS receiver, a real SQLite file, short retry schedules."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import trustme
from standardwebhooks import Webhook as StandardWebhook
from support import Receiver, Reply, ca_file, eventually, make_config, running_daemon

from delivery.test_signing import NODE_VERIFIER, verify_webhook_signature

# the in-process daemons here run on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("daemon_backend")

SECRET = "your_webhook_secret_key"
EVENT = {
    "event": "message.received",
    "sessionId": "s1",
    "messageId": "msg_1234567890",
    "from": "1234567890",
    "to": "me",
    "type": "text",
    "text": "Hello! 👋",
}


def config(tmp_path: Path, ca: trustme.CA, **delivery: object):
    return make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), **delivery)


async def configure(d, rx: Receiver, session: str = "s1", **extra: object) -> None:
    body = {"url": rx.url, "events": ["*"], "secret": SECRET, **extra}
    status, answer = await d.call("PUT", f"/api/webhook/config/{session}", body)
    assert status == 200, answer


async def test_delivery_is_signed_and_verifiable(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    async with running_daemon(config(tmp_path, ca)) as d:
        await configure(d, receiver)
        status, answer = await d.call("POST", "/api/events", EVENT)
        assert status == 202 and answer["queued"] == 1
        (got,) = await receiver.wait_for(1)
    body = got.body
    delivered = json.loads(body)
    assert {k: v for k, v in delivered.items() if k != "timestamp"} == EVENT
    assert list(delivered)[-1] == "timestamp"  # filled in, appended; no other field added
    h = got.headers
    assert h["Content-Type"] == "application/json"
    assert h["User-Agent"].startswith("wahookd/")
    assert h["X-Webhook-Event"] == "message.received"
    assert h["X-Webhook-Attempt"] == "1"
    assert h["X-Webhook-Id"] == h["webhook-id"]
    assert abs(int(h["X-Webhook-Timestamp"]) - time.time()) < 5
    # the guide's own Python verifier, unchanged
    assert verify_webhook_signature(body, h["X-Webhook-Signature"], SECRET)
    # the Standard Webhooks library (a plain secret is its raw key bytes)
    std_headers = {k: h[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert StandardWebhook(SECRET.encode()).verify(body, std_headers) == delivered
    # the guide's Node.js verifier, unchanged, when node is here
    node = shutil.which("node")
    if node is not None:
        script = tmp_path / "verify.js"
        script.write_text(NODE_VERIFIER)
        out = subprocess.run(  # noqa: ASYNC221 - node answers in milliseconds
            [node, str(script), base64.b64encode(body).decode(), h["X-Webhook-Signature"], SECRET],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert out.stdout == "true"


async def test_retry_ladder_500_500_200(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    receiver.replies = [Reply(500), Reply(500), Reply(200)]
    async with running_daemon(config(tmp_path, ca, retry_schedule=["1s", "2s"])) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        got = await receiver.wait_for(3, timeout_s=15)
        await eventually(lambda: _stats(d, "successful", 1))
        _, stats = await d.call("GET", "/api/webhook/stats/s1")
        _, queue = await d.call("GET", "/api/webhook/queue")
    assert [r.headers["X-Webhook-Attempt"] for r in got] == ["1", "2", "3"]
    assert len({r.headers["X-Webhook-Id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1
    gap1, gap2 = got[1].at - got[0].at, got[2].at - got[1].at
    assert 0.9 <= gap1 < 1.9, gap1
    assert 1.9 <= gap2 < 2.9, gap2
    assert stats["stats"]["successful"] == 1 and stats["stats"]["failed"] == 0
    assert stats["stats"]["byEvent"] == {"message.received": 1}
    assert queue["queue"] == {"pending": 0, "processing": 0, "failed": 0, "retrying": 0}


async def _stats(d, field: str, value: int) -> bool:
    status, body = await d.call("GET", "/api/webhook/stats/s1")
    return status == 200 and body["stats"][field] == value


async def test_always_failing_ends_failed(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.default = Reply(503, b"down")
    async with running_daemon(config(tmp_path, ca, retry_schedule=["0.2s", "0.2s"])) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        await eventually(lambda: _stats(d, "failed", 1))
        _, queue = await d.call("GET", "/api/webhook/queue")
        _, stats = await d.call("GET", "/api/webhook/stats/s1")
    assert len(receiver.requests) == 3
    assert queue["queue"] == {"pending": 0, "processing": 0, "failed": 1, "retrying": 0}
    assert stats["stats"] == {
        "totalSent": 1,
        "successful": 0,
        "failed": 1,
        "averageResponseTime": "0ms",
        "lastDelivery": None,
        "byEvent": {},
    }


async def test_410_fails_at_once_and_deactivates(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.default = Reply(410)
    async with running_daemon(config(tmp_path, ca)) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        await eventually(lambda: _stats(d, "failed", 1))
        _, cfg = await d.call("GET", "/api/webhook/config/s1")
        assert cfg["config"]["isActive"] is False
        # an inactive webhook gets no new deliveries
        _, answer = await d.call("POST", "/api/events", EVENT)
        assert answer["queued"] == 0
    assert len(receiver.requests) == 1


async def test_parked_while_inactive_then_resumed(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.replies = [Reply(500)]
    async with running_daemon(config(tmp_path, ca, retry_schedule=["1s"])) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        await receiver.wait_for(1)
        await configure(d, receiver, isActive=False)
        await asyncio.sleep(1.5)
        _, queue = await d.call("GET", "/api/webhook/queue")
        assert queue["queue"]["pending"] == 1 and len(receiver.requests) == 1
        await configure(d, receiver, isActive=True)
        got = await receiver.wait_for(2)
    assert got[1].headers["X-Webhook-Attempt"] == "2"


async def test_fixing_the_url_fixes_the_retries(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    async with running_daemon(config(tmp_path, ca, retry_schedule=["0.5s", "0.5s"])) as d:
        dead = f"https://127.0.0.1:{receiver.port}/hook".replace(str(receiver.port), "1")
        status, _ = await d.call("PUT", "/api/webhook/config/s1", {"url": dead, "events": ["*"]})
        assert status == 200
        await d.call("POST", "/api/events", EVENT)
        await asyncio.sleep(0.2)
        await configure(d, receiver)
        (got,) = await receiver.wait_for(1)
    assert got.headers["X-Webhook-Attempt"] == "2"
    assert verify_webhook_signature(got.body, got.headers["X-Webhook-Signature"], SECRET)


async def test_retry_after_postpones(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    receiver.replies = [Reply(429, headers={"Retry-After": "2"})]
    async with running_daemon(config(tmp_path, ca, retry_schedule=["0.2s", "5s"])) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        got = await receiver.wait_for(2, timeout_s=10)
    assert 1.9 <= got[1].at - got[0].at < 3.0


async def test_slow_receiver_does_not_hold_back_others(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    # session "slow" answers after 3 s on every attempt; session "fast" must not wait for it
    receiver.responder = lambda r: Reply(200, delay_s=3.0 if r.path == "/slow" else 0.0)
    async with running_daemon(config(tmp_path, ca, per_webhook_concurrency=2, timeout="5s")) as d:
        for session, path in (("slow", "/slow"), ("fast", "/fast")):
            url = receiver.url.replace("/hook", path)
            await d.call("PUT", f"/api/webhook/config/{session}", {"url": url, "events": ["*"]})
        slow = [{**EVENT, "sessionId": "slow", "messageId": f"m{i}"} for i in range(10)]
        await d.call("POST", "/api/events", {"events": slow})
        started = time.monotonic()
        await d.call("POST", "/api/events", {**EVENT, "sessionId": "fast"})
        await eventually(lambda: _arrived(receiver, "/fast"), timeout_s=5)
        assert time.monotonic() - started < 1.0
        # the slow one is limited to its per-webhook concurrency
        assert sum(r.path == "/slow" for r in receiver.requests) == 2


async def _arrived(rx: Receiver, path: str) -> bool:
    return any(r.path == path for r in rx.requests)


async def test_redirects_are_not_followed(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.default = Reply(302, headers={"Location": receiver.url.replace("/hook", "/other")})
    async with running_daemon(config(tmp_path, ca, retry_schedule=["0.2s"])) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        await eventually(lambda: _stats(d, "failed", 1))
    assert [r.path for r in receiver.requests] == ["/hook", "/hook"]


async def test_whole_attempt_timeout(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    receiver.replies = [Reply(200, delay_s=3.0)]
    async with running_daemon(config(tmp_path, ca, timeout="0.5s", retry_schedule=["0.1s"])) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        got = await receiver.wait_for(2, timeout_s=5)
        await eventually(lambda: _stats(d, "successful", 1))
        assert got[1].at - got[0].at < 1.5  # the first attempt was cut at 0.5 s
        _, page = await d.call("GET", "/api/webhook/deliveries/s1")
    (delivery,) = page["deliveries"]
    assert [a["error"] for a in delivery["attempts"]] == ["timeout after 500ms", None]


async def test_static_webhooks_fan_out(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    extra = f"""
[[webhook]]
session = "*"
url = "{receiver.url.replace("/hook", "/all")}"
events = ["session.disconnected"]
secret = "static-secret"

[[webhook]]
session = "s2"
url = "{receiver.url.replace("/hook", "/s2")}"
events = ["*"]
"""
    cfg = make_config(tmp_path, extra=extra, ca_file=str(ca_file(ca, tmp_path)))
    async with running_daemon(cfg) as d:
        await configure(d, receiver)  # s1's own webhook, every event
        _, a = await d.call("POST", "/api/events", EVENT)  # s1 message.received: own only
        disconnected = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}
        _, b = await d.call("POST", "/api/events", disconnected)  # own + static "*"
        _, c = await d.call(
            "POST", "/api/events", {**disconnected, "sessionId": "s2"}
        )  # both statics
        assert (a["queued"], b["queued"], c["queued"]) == (1, 2, 2)
        got = await receiver.wait_for(5)
    paths = sorted(r.path for r in got)
    assert paths == ["/all", "/all", "/hook", "/hook", "/s2"]
    signed = [r for r in got if r.path == "/all"]
    assert all(
        verify_webhook_signature(r.body, r.headers["X-Webhook-Signature"], "static-secret")
        for r in signed
    )
    assert all("X-Webhook-Signature" not in r.headers for r in got if r.path == "/s2")


async def test_clear_queue_and_stats_survive_restart(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    cfg = config(tmp_path, ca, retry_schedule=["1h"])
    receiver.responder = lambda r: Reply(
        500 if json.loads(r.body).get("messageId") == "bad" else 200
    )
    async with running_daemon(cfg) as d:
        await configure(d, receiver)
        await d.call("POST", "/api/events", EVENT)
        await d.call("POST", "/api/events", {**EVENT, "messageId": "bad"})
        await eventually(lambda: _stats(d, "successful", 1))
        await eventually(lambda: _queue(d, "retrying", 1))
        status, removed = await d.call("DELETE", "/api/webhook/queue/s1?status=pending")
        assert removed == {"success": True, "removed": {"pending": 0, "retrying": 0, "failed": 0}}
        status, removed = await d.call("DELETE", "/api/webhook/queue/s1")
        assert removed["removed"] == {"pending": 0, "retrying": 1, "failed": 0}
        status, bad = await d.call("DELETE", "/api/webhook/queue/s1?status=delivered")
        assert bad["error"]["message"].startswith("status:")
        assert status == 400
        _, before = await d.call("GET", "/api/webhook/stats/s1")
    async with running_daemon(cfg) as d:
        _, after = await d.call("GET", "/api/webhook/stats/s1")
        _, queue = await d.call("GET", "/api/webhook/queue?sessionId=s1")
    assert after == before
    assert after["stats"]["successful"] == 1
    assert after["stats"]["averageResponseTime"].endswith("ms")
    assert after["stats"]["lastDelivery"].endswith("Z")
    assert queue["queue"] == {"pending": 0, "processing": 0, "failed": 0, "retrying": 0}


async def _queue(d, state: str, value: int) -> bool:
    _, body = await d.call("GET", "/api/webhook/queue")
    return body["queue"][state] == value


async def test_zero_stats_for_a_configured_session(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    async with running_daemon(config(tmp_path, ca)) as d:
        await configure(d, receiver, session="quiet")
        status, body = await d.call("GET", "/api/webhook/stats/quiet")
        status404, _ = await d.call("GET", "/api/webhook/stats/unknown")
    assert status == 200 and status404 == 404
    assert body["stats"] == {
        "totalSent": 0,
        "successful": 0,
        "failed": 0,
        "averageResponseTime": "0ms",
        "lastDelivery": None,
        "byEvent": {},
    }
