"""Secret rotation: a changed secret keeps the previous one valid for 24 hours."""

from __future__ import annotations

import time
from pathlib import Path

import trustme
from delivery.test_signing import verify_webhook_signature
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from support import Receiver, ca_file, make_config, running_daemon

from wahookd.app import reload
from wahookd.clock import FakeClock
from wahookd.delivery.signing import signature_headers

OLD, NEW = "old_secret_for_rotation", "new_secret_for_rotation"
DAY = 24 * 3600.0
EVENT = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}


def std_verifies(secret: str, got) -> bool:
    headers = {k: got.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    try:
        StandardWebhook(secret.encode()).verify(got.body, headers)
    except WebhookVerificationError:
        return False
    return True


async def deliver_one(d, receiver: Receiver):
    before = len(receiver.requests)
    status, answer = await d.call("POST", "/api/events", EVENT)
    assert status == 202, answer
    return (await receiver.wait_for(before + 1))[before]


async def test_both_signatures_during_the_overlap_then_only_the_new(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    clock = FakeClock(time.time())
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)))
    async with running_daemon(config, clock) as d:
        put = {"url": receiver.url, "events": ["*"], "secret": OLD}
        assert (await d.call("PUT", "/api/webhook/config/s1", put))[0] == 200
        first = await deliver_one(d, receiver)
        assert len(first.headers["webhook-signature"].split(" ")) == 1

        assert (await d.call("PUT", "/api/webhook/config/s1", {**put, "secret": NEW}))[0] == 200
        during = await deliver_one(d, receiver)
        signatures = during.headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        # the guide's header uses the new secret only
        sig = during.headers["X-Webhook-Signature"]
        assert verify_webhook_signature(during.body, sig, NEW)
        assert not verify_webhook_signature(during.body, sig, OLD)
        # a Standard Webhooks receiver holding either secret accepts it
        assert std_verifies(NEW, during) and std_verifies(OLD, during)
        # GET never shows either secret
        _, got = await d.call("GET", "/api/webhook/config/s1")
        assert OLD not in str(got) and NEW not in str(got)

        clock.now += DAY + 1
        after = await deliver_one(d, receiver)
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        # standardwebhooks checks the timestamp against the real clock: compare by hand
        assert after.headers["webhook-signature"] == _only_new(after)


def _only_new(got) -> str:
    ts = int(got.headers["webhook-timestamp"])
    return signature_headers(NEW, got.body, got.headers["webhook-id"], ts)["webhook-signature"]


async def test_same_secret_again_does_not_start_an_overlap(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)))
    async with running_daemon(config) as d:
        put = {"url": receiver.url, "events": ["*"], "secret": OLD}
        assert (await d.call("PUT", "/api/webhook/config/s1", put))[0] == 200
        assert (await d.call("PUT", "/api/webhook/config/s1", put))[0] == 200
        got = await deliver_one(d, receiver)
        assert len(got.headers["webhook-signature"].split(" ")) == 1
        assert std_verifies(OLD, got)


async def test_a_static_webhook_rotates_on_reload(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    def static(secret: str) -> str:
        return (
            f'[[webhook]]\nsession = "s1"\nurl = "{receiver.url}"\nevents = ["*"]\n'
            f'secret = "{secret}"\n'
        )

    config = make_config(tmp_path, static(OLD), ca_file=str(ca_file(ca, tmp_path)))
    async with running_daemon(config) as d:
        await deliver_one(d, receiver)
        new = make_config(tmp_path, static(NEW), ca_file=str(ca_file(ca, tmp_path)))
        await reload(d.client.app, new)
        got = await deliver_one(d, receiver)
        assert std_verifies(NEW, got) and std_verifies(OLD, got)
        assert verify_webhook_signature(got.body, got.headers["X-Webhook-Signature"], NEW)
