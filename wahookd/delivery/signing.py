"""Signature headers: the guide's X-Webhook-Signature and Standard Webhooks (SPEC §5)."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Sequence
from typing import Final

WHSEC_PREFIX: Final = "whsec_"


@functools.lru_cache(maxsize=1024)
def standard_key(secret: str) -> bytes:
    """HMAC key for webhook-signature: base64 after "whsec_" when it decodes, else UTF-8 bytes."""
    if secret.startswith(WHSEC_PREFIX):
        encoded = secret.removeprefix(WHSEC_PREFIX)
        try:
            # Strict decode (unpadded allowed, as Svix secrets are often shared that way): a
            # lenient one would silently drop characters and sign with a key nobody holds.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            key = b""
        if key:
            return key
    return secret.encode("utf-8")


def signature_headers(
    secret: str | None,
    body: bytes,
    msg_id: str,
    timestamp: int,
    *,
    previous_secrets: Sequence[str] = (),
) -> dict[str, str]:
    """Signature headers for one attempt; {} when the webhook has no secret."""
    if secret is None:
        return {}
    legacy = hmac.digest(secret.encode("utf-8"), body, "sha256").hex()
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    # Current secret first, then the previous ones, so receivers can rotate without downtime.
    signatures = _standard_signature(secret, signed_content)
    for previous in previous_secrets:
        signatures += " " + _standard_signature(previous, signed_content)
    return {
        "X-Webhook-Signature": f"sha256={legacy}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


def _standard_signature(secret: str, signed_content: bytes) -> str:
    digest = hmac.digest(standard_key(secret), signed_content, "sha256")
    return "v1," + binascii.b2a_base64(digest, newline=False).decode()
