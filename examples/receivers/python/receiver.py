#!/usr/bin/env python3
"""A minimal wahookd webhook receiver (Python 3.11+, aiohttp).

    pip install aiohttp
    WEBHOOK_SECRET=your_webhook_secret_key PORT=3000 python3 receiver.py

It verifies X-Webhook-Signature in constant time (401 otherwise) and, when present, the
Standard Webhooks headers; answers 200 at once and does the work after, in a task;
processes each X-Webhook-Id once; and has a handler for each of the eight event types.

It listens on 127.0.0.1 over plain HTTP: put a TLS reverse proxy in front (wahookd sends
to https:// URLs only, unless its config says `require_https = false`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("receiver")

Event = dict[str, Any]

SECRET = os.environ["WEBHOOK_SECRET"]  # fail at start, not on the first request
PORT = int(os.environ.get("PORT", "3000"))
RECEIVED_LOG = os.environ.get("RECEIVED_LOG")  # a JSON line per processed delivery (tests)
MAX_SEEN_IDS = 10_000
# Standard Webhooks: refuse a webhook-timestamp further than this from now (replays)
TOLERANCE_S = 5 * 60


def verify_signature(body: bytes, header: str | None) -> bool:
    """X-Webhook-Signature: "sha256=" + hex HMAC-SHA256(secret, raw body)."""
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    # bytes, not str: compare_digest raises TypeError on a non-ASCII str, and a missing
    # header must be a 401, not a 500
    return hmac.compare_digest(expected.encode(), (header or "").encode())


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks key: base64 after "whsec_", else the secret's UTF-8 bytes."""
    if secret.startswith("whsec_"):
        encoded = secret.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            key = b""
        if key:
            return key
    return secret.encode()


def verify_standard(body: bytes, headers: Any) -> bool | None:
    """webhook-id/-timestamp/-signature; None when absent, else whether one v1 matches."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return None
    try:
        if abs(time.time() - int(timestamp)) > TOLERANCE_S:
            return False
    except ValueError:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(standard_key(SECRET), signed, hashlib.sha256).digest())
    # several space-separated signatures while a secret rotates: any one may match
    return any(
        version == "v1" and hmac.compare_digest(expected, sig.encode())
        for version, _, sig in (part.partition(",") for part in signatures.split())
    )


class SeenIds:
    """The last MAX_SEEN_IDS delivery ids, oldest dropped first.

    In memory, so a restart forgets them: a real app keeps them where its data is (a
    unique key in its database) and records the id in the same transaction as the work.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ids: OrderedDict[str, None] = OrderedDict()

    def add(self, delivery_id: str) -> bool:
        """Remember the id; False when it was already there."""
        if delivery_id in self.ids:
            return False
        self.ids[delivery_id] = None
        if len(self.ids) > self.limit:
            self.ids.popitem(last=False)
        return True


# ---- one handler per event type: replace the log lines with your work ----


async def on_message_received(event: Event) -> None:
    log.info("message %s from %s: %s", event["messageId"], event["from"], event.get("text"))


async def on_message_sent(event: Event) -> None:
    log.info("message %s sent to %s", event["messageId"], event["to"])


async def on_message_delivered(event: Event) -> None:
    log.info("message %s delivered to %s", event["messageId"], event["to"])


async def on_message_read(event: Event) -> None:
    log.info("message %s read by %s", event["messageId"], event["to"])


async def on_session_connected(event: Event) -> None:
    log.info("session %s connected as %s", event["sessionId"], event["phoneNumber"])


async def on_session_disconnected(event: Event) -> None:
    log.info("session %s disconnected: %s", event["sessionId"], event["reason"])


async def on_session_qr_generated(event: Event) -> None:
    log.info("session %s: new QR code, expires %s", event["sessionId"], event["expiresAt"])


async def on_contact_updated(event: Event) -> None:
    log.info("contact %s updated: %s", event["phoneNumber"], event["contact"].get("name"))


HANDLERS: dict[str, Callable[[Event], Awaitable[None]]] = {
    "message.received": on_message_received,
    "message.sent": on_message_sent,
    "message.delivered": on_message_delivered,
    "message.read": on_message_read,
    "session.connected": on_session_connected,
    "session.disconnected": on_session_disconnected,
    "session.qr_generated": on_session_qr_generated,
    "contact.updated": on_contact_updated,
}


SEEN = web.AppKey("seen", SeenIds)
TASKS = web.AppKey("tasks", set[asyncio.Task[None]])


async def process(delivery_id: str, event: Event, standard: bool | None) -> None:
    """The work, after the 200 has gone out."""
    handler = HANDLERS.get(event.get("event", ""))
    try:
        if handler is None:
            log.warning("unknown event type %r (delivery %s)", event.get("event"), delivery_id)
        else:
            await handler(event)
    except Exception:
        # the sender already has its 200 and will not retry: log, or queue it for a retry
        log.exception("handling delivery %s failed", delivery_id)
    if RECEIVED_LOG:
        line = {"id": delivery_id, "event": event.get("event"), "verified": True}
        line["standardWebhooks"] = standard is True
        record(RECEIVED_LOG, line)


def record(path: str, line: dict[str, Any]) -> None:
    """Append one JSON line (a small local write: not worth a thread)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


async def webhook(request: web.Request) -> web.Response:
    """POST /webhook: verify, dedupe, answer 200, then process."""
    body = await request.read()  # the raw bytes: the signature covers them, not parsed JSON
    if not verify_signature(body, request.headers.get("X-Webhook-Signature")):
        return web.Response(status=401, text="Unauthorized")
    standard = verify_standard(body, request.headers)
    if standard is False:
        return web.Response(status=401, text="Unauthorized")
    try:
        event = json.loads(body)
    except ValueError:
        return web.Response(status=400, text="Bad Request")
    if not isinstance(event, dict):
        return web.Response(status=400, text="Bad Request")

    delivery_id = request.headers.get("X-Webhook-Id", "")
    # every attempt of one delivery has the same id: a retry after a lost 200 is a no-op
    if delivery_id and not request.app[SEEN].add(delivery_id):
        return web.Response(text="OK (duplicate)")

    task = asyncio.create_task(process(delivery_id, event, standard))
    # keep a hard reference or the task may be garbage-collected before it runs
    tasks = request.app[TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return web.Response(text="OK")


async def drain(app: web.Application) -> None:
    """On shutdown, let the work already acknowledged finish."""
    pending = app[TASKS]
    if pending:
        await asyncio.wait(pending, timeout=10)


def make_app() -> web.Application:
    """The receiver's aiohttp application."""
    app = web.Application(client_max_size=1024 * 1024)
    app[SEEN] = SeenIds(MAX_SEEN_IDS)
    app[TASKS] = set()
    app.router.add_post("/webhook", webhook)
    app.on_shutdown.append(drain)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    web.run_app(make_app(), host="127.0.0.1", port=PORT, print=None)
