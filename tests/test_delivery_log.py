"""The delivery log through the running daemon: auto-disable and a resuming PUT, and
static webhooks' query strings. The store-level tests are in tests/store/test_history.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import trustme
from support import Receiver, Reply, ca_file, make_config, running_daemon

# the in-process daemons here run on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("daemon_backend")


@pytest.mark.slow
async def test_the_daemon_disables_a_failing_webhook_and_a_put_resumes_it(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.default = Reply(status=500)
    config = make_config(
        tmp_path,
        ca_file=str(ca_file(ca, tmp_path)),
        retry_schedule=["0.3s"] * 20,
        disable_after="1s",
    )
    hook = {"url": receiver.url, "events": ["*"]}
    caplog.set_level(logging.WARNING, logger="wahookd")
    async with running_daemon(config) as d:
        assert (await d.call("PUT", "/api/webhook/config/s1", hook))[0] == 200
        events = [{"event": "session.disconnected", "sessionId": "s1", "reason": "x"}] * 3
        assert (await d.call("POST", "/api/events", {"events": events}))[0] == 202
        for _ in range(100):
            _, got = await d.call("GET", "/api/webhook/config/s1")
            if not got["config"]["isActive"]:
                break
            await asyncio.sleep(0.05)
        assert not got["config"]["isActive"]
        assert any("disabled" in r.getMessage() for r in caplog.records)
        assert d.state.scheduler.auto_disabled == 1
        seen = len(receiver.requests)
        await asyncio.sleep(0.7)  # parked: nothing more goes out
        assert len(receiver.requests) == seen
        receiver.default = Reply(status=200)
        assert (await d.call("PUT", "/api/webhook/config/s1", hook))[0] == 200
        for _ in range(100):
            _, queue = await d.call("GET", "/api/webhook/queue?sessionId=s1")
            if not any(queue["queue"].values()):
                break
            await asyncio.sleep(0.05)
        assert not any(queue["queue"].values())
        _, stats = await d.call("GET", "/api/webhook/stats/s1")
        assert stats["stats"]["successful"] == 3


async def test_sessions_hide_a_static_webhooks_query_string(tmp_path: Path) -> None:
    static = (
        '[[webhook]]\nsession = "*"\nurl = "https://hooks.example/in?key=SECRETKEY"\n'
        'events = ["*"]\n'
    )
    async with running_daemon(make_config(tmp_path, static)) as d:
        put = {"url": "https://own.example/h?token=mine", "events": ["*"]}
        assert (await d.call("PUT", "/api/webhook/config/s1", put))[0] == 200
        status, body = await d.call(
            "GET", "/api/webhook/sessions", headers=d.headers(role="viewer", sessions=["s1"])
        )
    assert status == 200
    assert "SECRETKEY" not in str(body)
    (s1,) = body["sessions"]
    urls = {hook["kind"]: hook["url"] for hook in s1["webhooks"]}
    assert urls == {"static": "https://hooks.example/in?…", "session": put["url"]}
