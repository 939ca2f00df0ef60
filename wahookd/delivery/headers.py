"""The headers of a delivery POST (SPEC §5), for attempts and for POST /api/webhook/test."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .. import __version__
from .signing import legacy_signature, signature_headers, standard_signatures

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


class HeaderInjection(ValueError):
    """A header name or value holds CR, LF or NUL: it would split the request."""


def header_lines(headers: Iterable[tuple[str, str]]) -> str:
    """`Name: value` lines for a request head; CR, LF or NUL would split it, so refused."""
    lines = []
    for name, value in headers:
        line = f"{name}: {value}\r\n"
        if "\r" in line[:-2] or "\n" in line[:-2] or "\0" in line:
            raise HeaderInjection(f"header {name!r} contains CR, LF or NUL")
        lines.append(line)
    return "".join(lines)


def lane_lines(custom: Iterable[tuple[str, str]] = ()) -> str:
    """The head lines every attempt to one webhook shares: its own headers, then ours.

    Same order as delivery_headers(); the webhook's names never clash with ours (rules.py).
    """
    return header_lines([*custom, ("Content-Type", "application/json"), ("User-Agent", USER_AGENT)])


def attempt_lines(
    *,
    event_type: str,
    msg_id: str,
    attempt: int,
    timestamp: int,
    body: bytes,
    secret: str | None,
    previous_secrets: Sequence[str] = (),
) -> str:
    """The head lines that differ per attempt, as delivery_headers() would give them."""
    lines = (
        f"X-Webhook-Event: {event_type}\r\nX-Webhook-Id: {msg_id}\r\n"
        f"X-Webhook-Attempt: {attempt}\r\nX-Webhook-Timestamp: {timestamp}\r\n"
    )
    if secret is None:
        return lines
    # signature_headers()'s names and order, formatted without the dict
    signatures = standard_signatures(secret, body, msg_id, timestamp, previous_secrets)
    return (
        f"{lines}X-Webhook-Signature: {legacy_signature(secret, body)}\r\n"
        f"webhook-id: {msg_id}\r\nwebhook-timestamp: {timestamp}\r\n"
        f"webhook-signature: {signatures}\r\n"
    )
