"""Signature headers (SPEC §5) against independent computations and the receivers' verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from wahookd.delivery.headers import USER_AGENT, attempt_lines, delivery_headers, lane_lines
from wahookd.delivery.signing import hmac_sha256, signature_headers, standard_key

BODY = (
    '{"event":"message.received","sessionId":"5bc99cea8975b95fe7077c64a3312145",'
    '"messageId":"msg_1","from":"1234567890","to":"me","type":"text",'
    '"text":"Hola 👋 ünïcödé","timestamp":"2024-01-01T12:00:00.000Z"}'
).encode()
GUIDE_SECRET = "your_webhook_secret_key"  # the secret the guide configures
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


# Copied verbatim from seed/webhooks-guide.md, "Verify Signature (Python)", except for the
# trailing spaces on its blank lines; kept out of the formatter so it stays the guide's code.
# fmt: off
def verify_webhook_signature(payload, signature, secret):
    expected_signature = hmac.new(
        secret.encode('utf-8'),
        payload,
        hashlib.sha256
    ).hexdigest()

    expected_header = f"sha256={expected_signature}"

    return hmac.compare_digest(signature, expected_header)
# fmt: on


# Copied verbatim from seed/webhooks-guide.md, "Verify Signature (Node.js)", plus a harness
# that feeds it the raw body as a Buffer, as the guide's express.raw() middleware does.
NODE_VERIFIER = """
const crypto = require('crypto');

function verifyWebhookSignature(payload, signature, secret) {
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(payload, 'utf8')
    .digest('hex');

  const expectedHeader = `sha256=${expectedSignature}`;

  return crypto.timingSafeEqual(
    Buffer.from(signature),
    Buffer.from(expectedHeader)
  );
}

const [bodyBase64, signature, secret] = process.argv.slice(2);
const payload = Buffer.from(bodyBase64, 'base64');
process.stdout.write(String(verifyWebhookSignature(payload, signature, secret)));
"""


def test_no_secret_no_headers() -> None:
    assert signature_headers(None, BODY, "msg_1", 1704110400) == {}


def test_known_vector_computed_by_hand() -> None:
    headers = signature_headers(GUIDE_SECRET, BODY, "msg_1", 1704110400)
    hex_mac = hmac.new(GUIDE_SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    std_mac = hmac.new(GUIDE_SECRET.encode(), b"msg_1.1704110400." + BODY, hashlib.sha256)
    assert headers == {
        "X-Webhook-Signature": "sha256=" + hex_mac,
        "webhook-id": "msg_1",
        "webhook-timestamp": "1704110400",
        "webhook-signature": "v1," + base64.b64encode(std_mac.digest()).decode(),
    }


def test_standard_webhooks_published_vector() -> None:
    # The test vector of the Standard Webhooks / Svix documentation.
    headers = signature_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        b'{"test": 2432232314}',
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_whsec_secret_signs_with_decoded_key_but_legacy_header_with_whole_secret() -> None:
    headers = signature_headers(WHSEC, BODY, "msg_1", 1704110400)
    std_mac = hmac.new(b"0123456789abcdef0123456789abcdef", b"msg_1.1704110400." + BODY, "sha256")
    assert headers["webhook-signature"] == "v1," + base64.b64encode(std_mac.digest()).decode()
    # The guide's verifier uses the configured secret string as it is, prefix included.
    assert verify_webhook_signature(BODY, headers["X-Webhook-Signature"], WHSEC)


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        ("plain secret", b"plain secret"),
        ("sécret🔑", "sécret🔑".encode()),
        ("whsec_" + base64.b64encode(b"\x00\xffkey").decode(), b"\x00\xffkey"),
        ("whsec_" + base64.b64encode(b"abcd1").decode().rstrip("="), b"abcd1"),  # unpadded
        ("whsec_not base64!", b"whsec_not base64!"),  # does not decode: used as text
        ("whsec_", b"whsec_"),  # decodes to an empty key: used as text
        ("xwhsec_YWJj", b"xwhsec_YWJj"),
    ],
)
def test_standard_key(secret: str, key: bytes) -> None:
    assert standard_key(secret) == key


@pytest.mark.parametrize("secret", [GUIDE_SECRET, "sécret🔑", WHSEC])
def test_guide_python_verifier_accepts_our_header(secret: str) -> None:
    signature = signature_headers(secret, BODY, "msg_1", 1704110400)["X-Webhook-Signature"]
    assert verify_webhook_signature(BODY, signature, secret)
    assert not verify_webhook_signature(BODY + b" ", signature, secret)
    assert not verify_webhook_signature(BODY, signature, secret + "x")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("secret", [GUIDE_SECRET, "sécret🔑", WHSEC])
def test_guide_node_verifier_accepts_our_header(secret: str, tmp_path: Path) -> None:
    script = tmp_path / "verify.js"
    script.write_text(NODE_VERIFIER)
    signature = signature_headers(secret, BODY, "msg_1", 1704110400)["X-Webhook-Signature"]

    def node_verifies(body: bytes) -> str:
        node = shutil.which("node")
        assert node is not None
        result = subprocess.run(
            [node, str(script), base64.b64encode(body).decode(), signature, secret],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout

    assert node_verifies(BODY) == "true"
    assert node_verifies(BODY[:-1] + b"]") == "false"


def test_standard_webhooks_library_accepts_whsec_secret() -> None:
    now = int(time.time())  # the library rejects timestamps more than 5 minutes off
    headers = signature_headers(WHSEC, BODY, "msg_2", now)
    assert Webhook(WHSEC).verify(BODY, headers)["text"] == "Hola 👋 ünïcödé"
    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(BODY.replace(b"Hola", b"Hole"), headers)


def test_standard_webhooks_library_accepts_plain_secret_as_raw_key() -> None:
    # The library reads a str secret as base64 only; a plain secret is handed over as the raw
    # key bytes, which is what SPEC §5 signs with.
    now = int(time.time())
    headers = signature_headers(GUIDE_SECRET, BODY, "msg_3", now)
    assert Webhook(GUIDE_SECRET.encode()).verify(BODY, headers)["event"] == "message.received"
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another secret").verify(BODY, headers)


def test_previous_secrets_each_verify() -> None:
    now = int(time.time())
    old_whsec = "whsec_" + base64.b64encode(b"old key material, 24 bytes").decode()
    headers = signature_headers(
        GUIDE_SECRET, BODY, "msg_4", now, previous_secrets=[old_whsec, "older"]
    )
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 3
    assert all(s.startswith("v1,") for s in signatures)
    assert signatures[0] == signature_headers(GUIDE_SECRET, BODY, "msg_4", now)["webhook-signature"]
    assert Webhook(GUIDE_SECRET.encode()).verify(BODY, headers)
    assert Webhook(old_whsec).verify(BODY, headers)
    assert Webhook(b"older").verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"never used").verify(BODY, headers)
    # The guide's single-signature header stays with the current secret only.
    assert verify_webhook_signature(BODY, headers["X-Webhook-Signature"], GUIDE_SECRET)
    assert not verify_webhook_signature(BODY, headers["X-Webhook-Signature"], "older")


def test_signature_binds_id_and_timestamp() -> None:
    base = signature_headers(GUIDE_SECRET, BODY, "msg_1", 1704110400)["webhook-signature"]
    assert signature_headers(GUIDE_SECRET, BODY, "msg_2", 1704110400)["webhook-signature"] != base
    assert signature_headers(GUIDE_SECRET, BODY, "msg_1", 1704110401)["webhook-signature"] != base


@given(key=st.binary(max_size=200), parts=st.lists(st.binary(max_size=300), max_size=4))
def test_hmac_sha256_is_hmac(key: bytes, parts: list[bytes]) -> None:
    # keys past the 64-byte block are hashed first (RFC 2104); empty parts change nothing
    assert hmac_sha256(key, *parts) == hmac.digest(key, b"".join(parts), "sha256")
    assert hmac_sha256(key, *parts) == hmac_sha256(key, *parts)  # the cached states are copied


@pytest.mark.parametrize("secret", [None, GUIDE_SECRET, WHSEC])
def test_attempt_lines_are_delivery_headers_in_order(secret: str | None) -> None:
    custom = [("Authorization", "Bearer t")]
    attempt: dict[str, Any] = {
        "event_type": "message.received",
        "msg_id": "msg_1",
        "attempt": 2,
        "timestamp": 1704110400,
        "body": BODY,
        "secret": secret,
        "previous_secrets": ["older"],
    }
    headers = delivery_headers(**attempt, custom=custom)
    lines = lane_lines(custom) + attempt_lines(**attempt)
    assert lines == "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    assert f"User-Agent: {USER_AGENT}\r\n" in lines
