"""Changes to a session's webhook: masked secrets written back, PATCH, enable/disable,
retrying failed deliveries behind an inactive webhook, and the audit line of each change."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

import pytest
import trustme
from support import Receiver, Reply, ca_file, eventually, make_config, running_daemon

from wahookd.events import format_timestamp

# the in-process daemons here run on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("daemon_backend")

EVENT = {
    "event": "message.received",
    "sessionId": "s1",
    "messageId": "m1",
    "from": "123",
    "to": "me",
    "type": "text",
}


def config(tmp_path: Path, ca: trustme.CA, **delivery: Any):
    return make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), **delivery)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wahookd.audit"]


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_masked_secret_written_back_keeps_the_secret(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    async with running_daemon(config(tmp_path, ca)) as d:
        hook = {"url": receiver.url, "events": ["*"], "secret": "your_webhook_secret_key"}
        await d.call("PUT", "/api/webhook/config/s1", hook)
        _, read = await d.call("GET", "/api/webhook/config/s1")
        shown = read["config"]
        assert shown["secret"] == "your****"
        # the operator's round trip: read, edit a field, write the whole config back
        shown["events"] = ["message.received"]
        del shown["createdAt"], shown["updatedAt"]
        status, answer = await d.call("PUT", "/api/webhook/config/s1", shown)
        assert status == 200
        assert answer["config"]["secret"] == "your_webhook_secret_key"
        assert answer["config"]["events"] == ["message.received"]
        stored = d.state.registry.session_webhook("s1")
        assert stored is not None and stored.secret == "your_webhook_secret_key"
        assert stored.previous_secret is None  # no rotation: the secret did not change
        # the same through PATCH
        status, _ = await d.call("PATCH", "/api/webhook/config/s1", {"secret": "your****"})
        assert status == 200
        await d.call("POST", "/api/events", EVENT)
        (got,) = await receiver.wait_for(1)
    assert got.headers["X-Webhook-Signature"] == signature("your_webhook_secret_key", got.body)


async def test_any_other_secret_replaces_it(tmp_path: Path, ca: trustme.CA) -> None:
    async with running_daemon(config(tmp_path, ca)) as d:
        url = "https://a.example/h"
        await d.call(
            "PUT", "/api/webhook/config/s1", {"url": url, "events": ["*"], "secret": "abcdefgh"}
        )
        await d.call(
            "PUT", "/api/webhook/config/s1", {"url": url, "events": ["*"], "secret": "abcd***"}
        )
        stored = d.state.registry.session_webhook("s1")
        assert stored is not None and stored.secret == "abcd***"
        assert stored.previous_secret == "abcdefgh"  # a real change rotates


async def test_patch_changes_only_the_fields_given(tmp_path: Path, ca: trustme.CA) -> None:
    async with running_daemon(config(tmp_path, ca)) as d:
        hook = {
            "url": "https://a.example/h",
            "events": ["message.received"],
            "secret": "supersecret",
            "headers": {"X-Api-Key": "k1"},
        }
        status, body = await d.call("PATCH", "/api/webhook/config/s1", {"isActive": False})
        assert (status, body["error"]["code"]) == (404, "not_found")
        await d.call("PUT", "/api/webhook/config/s1", hook)
        status, body = await d.call("PATCH", "/api/webhook/config/s1", {"isActive": False})
        assert status == 200
        assert body["config"] == {
            "url": "https://a.example/h",
            "events": ["message.received"],
            "secret": "supe****",
            "isActive": False,
            "headers": {"X-Api-Key": "k1"},
            "createdAt": body["config"]["createdAt"],
            "updatedAt": body["config"]["updatedAt"],
        }
        status, body = await d.call(
            "PATCH", "/api/webhook/config/s1", {"secret": None, "headers": None, "events": ["*"]}
        )
        assert status == 200
        assert body["config"]["secret"] is None and "headers" not in body["config"]
        assert body["config"]["events"] == ["*"] and body["config"]["isActive"] is False
        status, body = await d.call("PATCH", "/api/webhook/config/s1", {"isActive": "no"})
        assert (status, body["error"]["message"]) == (400, "isActive: must be true or false")
        status, body = await d.call("PATCH", "/api/webhook/config/s1", {"nope": 1})
        assert status == 400 and body["error"]["message"].startswith("nope: unknown field")
        status, _ = await d.call(
            "PATCH", "/api/webhook/config/s1", {"isActive": True}, headers=d.headers(role="viewer")
        )
        assert status == 403


async def test_retry_failed_counts_those_that_left_failed_and_says_they_are_parked(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.audit")
    receiver.replies = [Reply(410), Reply(410)]
    async with running_daemon(config(tmp_path, ca)) as d:
        await d.call("PUT", "/api/webhook/config/s1", {"url": receiver.url, "events": ["*"]})
        await d.call("POST", "/api/events", {"events": [EVENT, {**EVENT, "messageId": "m2"}]})

        async def queue() -> dict[str, int]:
            _, answer = await d.call("GET", "/api/webhook/queue")
            return answer["queue"]

        failed = {"pending": 0, "processing": 0, "failed": 2, "retrying": 0}
        for _ in range(200):
            if await queue() == failed:
                break
            await receiver.wait_for(2)
        assert await queue() == failed
        status, answer = await d.call("POST", "/api/webhook/queue/s1/retry-failed")
        assert status == 200
        assert answer == {
            "success": True,
            "retried": 2,
            "parked": 2,
            "message": "2 of them wait behind an inactive webhook until it is enabled",
        }
        assert await queue() == {"pending": 2, "processing": 0, "failed": 0, "retrying": 0}
        # a delivery that is not failed cannot be retried: the state forbids it (SPEC §3)
        _, listing = await d.call("GET", "/api/webhook/deliveries/s1")
        uid = listing["deliveries"][0]["id"]
        status, body = await d.call("POST", f"/api/webhook/deliveries/s1/{uid}/retry")
        assert (status, body["error"]["code"]) == (409, "conflict")
        # enabling the webhook sends them
        status, _ = await d.call("PATCH", "/api/webhook/config/s1", {"isActive": True})
        assert status == 200
        await receiver.wait_for(4)
        await eventually(lambda: d.state.scheduler.inflight == 0)
    lines = audit_lines(caplog)
    disabled = [line for line in lines if line.startswith("audit webhook.disable")]
    assert len(disabled) == 1, lines  # one line for the webhook, not one per 410
    assert "by=wahookd" in disabled[0] and "410 Gone" in disabled[0]
    assert any(
        line.startswith("audit queue.retry_failed session=s1 by=test: 2 failed") for line in lines
    ), lines


async def test_a_410_sets_updated_at_to_when_it_was_disabled(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    receiver.default = Reply(410)
    async with running_daemon(config(tmp_path, ca)) as d:
        await d.call("PUT", "/api/webhook/config/s1", {"url": receiver.url, "events": ["*"]})
        await d.call("POST", "/api/events", EVENT)
        await receiver.wait_for(1)
        await eventually(lambda: not d.state.registry.session_webhook("s1").is_active)  # type: ignore[union-attr]
        _, shown = await d.call("GET", "/api/webhook/config/s1")
        stored = d.state.registry.session_webhook("s1")
        row = await d.state.store.webhooks()
    assert stored is not None and shown["config"]["isActive"] is False
    # what the API shows is when the 410 turned it off, as stored
    assert [h.updated_at for h in row if h.id == stored.id] == [stored.updated_at]
    assert stored.updated_at > stored.created_at
    assert shown["config"]["updatedAt"] == format_timestamp(stored.updated_at)


async def test_every_change_gets_one_audit_line_without_secrets(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.audit")
    secret = "topsecret-value-123"
    async with running_daemon(config(tmp_path, ca)) as d:
        hook = {
            "url": "https://a.example/h",
            "events": ["*"],
            "secret": secret,
            "headers": {"X-Api-Key": "key-value-456"},
        }
        await d.call("PUT", "/api/webhook/config/s1", hook)
        await d.call("PUT", "/api/webhook/config/s1", {**hook, "events": ["message.sent"]})
        await d.call("PATCH", "/api/webhook/config/s1", {"isActive": False})
        await d.call("PATCH", "/api/webhook/config/s1", {"isActive": True})
        await d.call("DELETE", "/api/webhook/queue/s1?status=failed")
        await d.call("DELETE", "/api/webhook/config/s1")
        token = d.token()
    lines = audit_lines(caplog)
    webhook_id = lines[0].split("webhook=")[1].split()[0]
    assert lines == [
        f"audit webhook.put session=s1 webhook={webhook_id} by=test: created",
        f"audit webhook.put session=s1 webhook={webhook_id} by=test: changed events",
        f"audit webhook.patch session=s1 webhook={webhook_id} by=test:"
        " changed isActive; disabled by the operator",
        f"audit webhook.patch session=s1 webhook={webhook_id} by=test: changed isActive; enabled",
        "audit queue.clear session=s1 by=test: removed 0 pending, 0 retrying, 0 failed",
        f"audit webhook.delete session=s1 webhook={webhook_id} by=test:"
        " deleted with its queued deliveries",
    ]
    text = caplog.text
    for leaked in (secret, "key-value-456", token, token.split(".")[2]):
        assert leaked not in text


async def test_auto_disable_is_audited_with_its_reason(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.audit")
    receiver.default = Reply(500)
    cfg = config(tmp_path, ca, retry_schedule=["0.2s", "0.2s", "0.2s"], disable_after="0.3s")
    async with running_daemon(cfg) as d:
        await d.call("PUT", "/api/webhook/config/s1", {"url": receiver.url, "events": ["*"]})
        await d.call("POST", "/api/events", EVENT)
        await eventually(lambda: not d.state.registry.session_webhook("s1").is_active)  # type: ignore[union-attr]
        _, shown = await d.call("GET", "/api/webhook/config/s1")
        stored = d.state.registry.session_webhook("s1")
    assert stored is not None
    assert shown["config"]["updatedAt"] == format_timestamp(stored.updated_at)
    assert stored.updated_at > stored.created_at
    (line,) = [x for x in audit_lines(caplog) if x.startswith("audit webhook.disable")]
    assert line.endswith("by=wahookd: auto-disabled: attempts failed with no success for 0.3s"), (
        line
    )
