"""SPEC §8 end to end: one session, three webhooks (its default one and two extra ones with
their own secrets and chat filters), a real TLS receiver, each delivery verified with its
own webhook's secret only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trustme
from delivery.test_signing import verify_webhook_signature
from support import Receiver, ca_file, eventually, make_config, running_daemon

# the in-process daemons here run on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("daemon_backend")

SESSION = "fan"
SECRETS = {"/default": "default-secret", "/groups": "groups-secret", "/direct": "direct-secret"}
GROUP_MESSAGE = {
    "event": "message.received",
    "sessionId": SESSION,
    "messageId": "m-group",
    "from": "120363025246125486@g.us",
    "to": "me",
    "type": "text",
}
DIRECT_MESSAGE = {
    "event": "message.sent",
    "sessionId": SESSION,
    "messageId": "m-direct",
    "from": "me",
    "to": "5511999998888@s.whatsapp.net",
    "type": "text",
}
CONNECTED = {"event": "session.connected", "sessionId": SESSION, "phoneNumber": "5511"}


async def test_three_webhooks_each_get_their_events_signed_with_their_secret(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    base = receiver.url.removesuffix("/hook")
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)))
    async with running_daemon(config) as d:
        status, _ = await d.call(
            "PUT",
            f"/api/webhook/config/{SESSION}",
            {"url": f"{base}/default", "events": ["*"], "secret": SECRETS["/default"]},
        )
        assert status == 200
        extras = (
            {"url": f"{base}/groups", "events": ["*"], "filter": {"chats": ["group"]}},
            {
                "url": f"{base}/direct",
                "events": ["message.received", "message.sent"],
                "filter": {"chats": ["direct", "channel"]},
            },
        )
        ids = {}
        for extra in extras:
            path = extra["url"].removeprefix(base)  # type: ignore[union-attr]
            body = {**extra, "sessionId": SESSION, "secret": SECRETS[path]}
            status, answer = await d.call("POST", "/api/webhooks", body)
            assert status == 201, answer
            ids[path] = answer["webhook"]["id"]
        status, listed = await d.call("GET", f"/api/webhooks?sessionId={SESSION}")
        assert [(w["default"], w["url"].removeprefix(base)) for w in listed["webhooks"]] == [
            (True, "/default"),
            (False, "/groups"),
            (False, "/direct"),
        ]

        status, answer = await d.call(
            "POST", "/api/events", {"events": [GROUP_MESSAGE, DIRECT_MESSAGE, CONNECTED]}
        )
        assert status == 202 and answer["queued"] == 3 + 2 + 1, answer
        await eventually(lambda: len(receiver.requests) == 6, what="six deliveries")

        got: dict[str, list[str]] = {path: [] for path in SECRETS}
        for request in receiver.requests:
            signature = request.headers["X-Webhook-Signature"]
            for path, secret in SECRETS.items():
                # only its own webhook's secret verifies it
                assert verify_webhook_signature(request.body, signature, secret) == (
                    path == request.path
                ), (request.path, path)
            got[request.path].append(json.loads(request.body)["event"])
        assert sorted(got["/default"]) == ["message.received", "message.sent", "session.connected"]
        # the group-only webhook skipped the direct message; events without a chat pass
        assert sorted(got["/groups"]) == ["message.received", "session.connected"]
        assert got["/direct"] == ["message.sent"]

        # the delivery log of one webhook, and its health after a 200
        status, page = await d.call(
            "GET", f"/api/webhook/deliveries/{SESSION}?webhookId={ids['/groups']}"
        )
        assert status == 200
        assert {r["webhookId"] for r in page["deliveries"]} == {ids["/groups"]}
        assert len(page["deliveries"]) == 2

        # the receiver has answered; the outcome is recorded a moment later (recorder batch)
        async def answered() -> bool:
            _, one = await d.call("GET", f"/api/webhooks/{ids['/groups']}")
            return bool(one["webhook"]["health"]["lastStatus"] == 200)

        await eventually(answered, what="the 200 in the webhook's health")
        status, one = await d.call("GET", f"/api/webhooks/{ids['/groups']}")
        health = one["webhook"]["health"]
        assert (health["state"], health["lastStatus"]) == ("healthy", 200)
        assert health["lastAttemptAt"] is not None

        # the guide's stats keep their shape, over all of the session's webhooks
        async def counted() -> bool:
            _, answer = await d.call("GET", f"/api/webhook/stats/{SESSION}")
            return bool(answer["stats"]["successful"] == 6)

        await eventually(counted, what="six successful deliveries in the stats")
        _, stats = await d.call("GET", f"/api/webhook/stats/{SESSION}")
        assert stats["stats"]["byEvent"] == {
            "message.received": 2,
            "message.sent": 2,
            "session.connected": 2,
        }
