"""Signature headers: the guide's X-Webhook-Signature and Standard Webhooks (SPEC §5).

Every attempt signs twice (three times during a rotation), so HMAC-SHA256 is computed
here from each key's inner and outer hash states, made once per key and copied per
message (RFC 2104): half the CPU of `hmac.digest`, which sets a key up for every call.
`tests/delivery/test_signing.py` checks it against `hmac` and the receivers' verifiers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Sequence
from typing import Final

WHSEC_PREFIX: Final = "whsec_"

_BLOCK: Final = 64  # SHA-256's block size in bytes
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


@functools.lru_cache(maxsize=1024)
def _keyed(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256's inner and outer hash states for key, each fed its padded key."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 of the concatenated parts under key (what hmac.digest gives)."""
    inner_state, outer_state = _keyed(key)
    inner = inner_state.copy()
    for part in parts:
        inner.update(part)
    outer = outer_state.copy()
    outer.update(inner.digest())
    return outer.digest()


@functools.lru_cache(maxsize=1024)
def _legacy_key(secret: str) -> bytes:
    return secret.encode("utf-8")


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
    return {
        "X-Webhook-Signature": legacy_signature(secret, body),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signatures(secret, body, msg_id, timestamp, previous_secrets),
    }


def legacy_signature(secret: str, body: bytes) -> str:
    """The guide's X-Webhook-Signature: sha256=<hex HMAC of the body, key = the secret's UTF-8>."""
    return "sha256=" + hmac_sha256(_legacy_key(secret), body).hex()


def standard_signatures(
    secret: str, body: bytes, msg_id: str, timestamp: int, previous_secrets: Sequence[str] = ()
) -> str:
    """Standard Webhooks' webhook-signature: "v1,<base64>" per secret, space separated."""
    prefix = f"{msg_id}.{timestamp}.".encode()
    # Current secret first, then the previous ones, so receivers can rotate without downtime.
    signatures = _standard_signature(secret, prefix, body)
    for previous in previous_secrets:
        signatures += " " + _standard_signature(previous, prefix, body)
    return signatures


def _standard_signature(secret: str, prefix: bytes, body: bytes) -> str:
    digest = hmac_sha256(standard_key(secret), prefix, body)
    return "v1," + binascii.b2a_base64(digest, newline=False).decode()
