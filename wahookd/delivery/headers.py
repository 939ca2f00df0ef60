"""The headers of a delivery POST (SPEC §5), for attempts and for POST /api/webhook/test."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .. import __version__
from .signing import signature_headers

USER_AGENT = f"wahookd/{__version__}"


def delivery_headers(
    *,
    event_type: str,
    msg_id: str,
    attempt: int,
    timestamp: int,
    body: bytes,
    secret: str | None,
    previous_secrets: Sequence[str] = (),
    custom: Iterable[tuple[str, str]] = (),
) -> dict[str, str]:
    """Every header of one POST, custom headers first so ours win; signed when secret is set."""
    headers = dict(custom)
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    headers["X-Webhook-Event"] = event_type
    headers["X-Webhook-Id"] = msg_id
    headers["X-Webhook-Attempt"] = str(attempt)
    headers["X-Webhook-Timestamp"] = str(timestamp)
    headers.update(
        signature_headers(secret, body, msg_id, timestamp, previous_secrets=previous_secrets)
    )
    return headers
