"""TLS verification of receivers (SPEC §5): bad certificates are failed attempts, never bypassed.

Every case runs against a real aiohttp receiver on 127.0.0.1 whose certificate comes
from trustme; the daemon trusts only the system store plus the test CA (delivery.ca_file).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from support import (
    Daemon,
    Receiver,
    assert_readable_error,
    attempt_log,
    ca_file,
    capture_outcomes,
    eventually,
    make_config,
    running_daemon,
)

from wahookd.config import Config, ConfigError, DeliveryConfig, parse_config_text
from wahookd.delivery.sender import make_ssl_context
from wahookd.logs import TextFormatter
from wahookd.models import Outcome

EVENT = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}
# both loopback forms, so a "localhost" URL passes the network policy however it resolves
LOOPBACK = ["127.0.0.0/8", "::1/128"]


class CertReceiver(Receiver):
    """A Receiver serving a chosen certificate; `serve()` swaps it for the next handshakes."""

    def __init__(self, ca: trustme.CA, leaf: trustme.LeafCert) -> None:
        super().__init__(ca)
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self.ssl_context)

    def serve(self, leaf: trustme.LeafCert) -> None:
        """Present `leaf` from the next TLS handshake on (existing connections keep theirs)."""
        leaf.configure_cert(self.ssl_context)

    async def start(self) -> None:
        """Listen on an ephemeral loopback port with this receiver's certificate."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _self_signed() -> trustme.LeafCert:
    # a CA's own certificate served as the leaf: issued by itself, trusted by nobody
    root = trustme.CA()
    return trustme.LeafCert(root.private_key_pem.bytes(), root.cert_pem.bytes(), chain_to_ca=[])


@dataclasses.dataclass(frozen=True)
class Case:
    """A broken certificate, the URL host the daemon uses, the exact error it must give."""

    name: str
    host: str
    leaf: Callable[[trustme.CA], trustme.LeafCert]
    error: str


CASES = [
    Case(
        "unknown-ca",
        "127.0.0.1",
        # a CA the daemon has never heard of: not in ca_file, not in the system store
        lambda ca: trustme.CA().issue_cert("127.0.0.1", "localhost"),
        "TLS: certificate verify failed (unknown issuer)",
    ),
    Case(
        "self-signed",
        "127.0.0.1",
        lambda ca: _self_signed(),
        "TLS: certificate verify failed (self-signed certificate)",
    ),
    Case(
        "wrong-ip",
        "127.0.0.1",
        lambda ca: ca.issue_cert("other.example"),
        "TLS: certificate verify failed (IP address mismatch)",
    ),
    Case(
        "wrong-name",
        "localhost",
        lambda ca: ca.issue_cert("other.example"),
        "TLS: certificate verify failed (hostname mismatch)",
    ),
    Case(
        "expired",
        "127.0.0.1",
        lambda ca: ca.issue_cert(
            "127.0.0.1",
            "localhost",
            not_before=_now() - datetime.timedelta(days=30),
            not_after=_now() - datetime.timedelta(days=1),
        ),
        "TLS: certificate verify failed (certificate expired)",
    ),
]


def assert_tls_error(error: str | None, expected: str) -> None:
    """The attempt's error is exactly our text for the verification problem."""
    assert error == expected
    assert_readable_error(error)
    # never Python's own text: "[SSL: CERTIFICATE_VERIFY_FAILED] ... (_ssl.c:1006)", reprs
    for internal in ("SSL:", "Errno", "'127.0.0.1'", "'localhost'", "Cannot connect"):
        assert internal not in error, (internal, error)


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
async def bad(
    request: pytest.FixtureRequest, ca: trustme.CA
) -> AsyncIterator[tuple[CertReceiver, Case]]:
    """A receiver presenting the case's broken certificate, and the case."""
    case: Case = request.param
    rx = CertReceiver(ca, case.leaf(ca))
    await rx.start()
    yield rx, case
    await rx.stop()


def tls_config(tmp_path: Path, ca: trustme.CA, **delivery: Any) -> Config:
    delivery.setdefault("allow_networks", LOOPBACK)
    return make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), **delivery)


async def put_webhook(d: Daemon, url: str, session: str = "s1") -> None:
    status, answer = await d.call(
        "PUT", f"/api/webhook/config/{session}", {"url": url, "events": ["*"]}
    )
    assert status == 200, answer


async def test_bad_certificate_is_a_tls_failure_and_retried(
    tmp_path: Path, ca: trustme.CA, bad: tuple[CertReceiver, Case]
) -> None:
    rx, case = bad
    url = f"https://{case.host}:{rx.port}/hook"
    good = ca.issue_cert("127.0.0.1", "localhost")
    async with running_daemon(tls_config(tmp_path, ca, retry_schedule=["0.2s", "0.2s"])) as d:
        outcomes = capture_outcomes(d)
        # the receiver fixes its certificate once two attempts have failed: the third,
        # made on the ladder like after any failure, is delivered
        d.state.scheduler.on_outcome = _after(
            d.state.scheduler.on_outcome, 2, lambda: rx.serve(good)
        )
        await put_webhook(d, url)
        status, answer = await d.call("POST", "/api/events", EVENT)
        assert status == 202 and answer["queued"] == 1
        await eventually(lambda: len(outcomes) == 3)
        log = await attempt_log(d)
        (got,) = rx.requests
    assert [o.result.error_class for o in outcomes] == ["tls", "tls", "2xx"]
    assert [o.kind for o in outcomes] == ["retry", "retry", "delivered"]
    assert [row["attempt"] for row in log] == [1, 2, 3]
    for row in log[:2]:
        assert row["status_code"] is None and row["outcome"] == "retry"
        assert_tls_error(row["error"], case.error)
    assert log[2]["status_code"] == 200 and log[2]["error"] is None
    # the refused handshakes never reached HTTP: the one request is the third attempt
    assert got.headers["X-Webhook-Attempt"] == "3"


def _after(
    previous: Callable[[Outcome], None] | None, count: int, action: Callable[[], None]
) -> Callable[[Outcome], None]:
    """An on_outcome hook that runs `action` once the `count`-th outcome is recorded."""
    seen = 0

    def hook(outcome: Outcome) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            action()
        if previous is not None:
            previous(outcome)

    return hook


async def test_test_endpoint_reports_the_tls_error(
    tmp_path: Path, ca: trustme.CA, bad: tuple[CertReceiver, Case]
) -> None:
    rx, case = bad
    url = f"https://{case.host}:{rx.port}/hook"
    async with running_daemon(tls_config(tmp_path, ca)) as d:
        status, answer = await d.call("POST", "/api/webhook/test", {"url": url})
    assert status == 200
    assert answer["success"] is False and answer["statusCode"] is None
    assert_tls_error(answer["error"], case.error)
    assert rx.requests == []


async def test_tls_failures_end_failed_after_the_ladder(tmp_path: Path, ca: trustme.CA) -> None:
    rx = CertReceiver(ca, trustme.CA().issue_cert("127.0.0.1"))
    await rx.start()
    try:
        async with running_daemon(tls_config(tmp_path, ca, retry_schedule=["0.1s", "0.1s"])) as d:
            outcomes = capture_outcomes(d)
            await put_webhook(d, rx.url)
            await d.call("POST", "/api/events", EVENT)
            await eventually(lambda: len(outcomes) == 3)
            _, queue = await d.call("GET", "/api/webhook/queue")
            _, stats = await d.call("GET", "/api/webhook/stats/s1")
            log = await attempt_log(d)
    finally:
        await rx.stop()
    assert [o.kind for o in outcomes] == ["retry", "retry", "failed"]
    assert {o.result.error_class for o in outcomes} == {"tls"}
    assert queue["queue"] == {"pending": 0, "processing": 0, "failed": 1, "retrying": 0}
    assert stats["stats"]["failed"] == 1 and stats["stats"]["successful"] == 0
    assert [row["outcome"] for row in log] == ["retry", "retry", "failed"]
    assert rx.requests == []


async def test_tls_error_reads_without_python_internals(
    tmp_path: Path, ca: trustme.CA, bad: tuple[CertReceiver, Case], caplog: pytest.LogCaptureFixture
) -> None:
    rx, case = bad
    url = f"https://{case.host}:{rx.port}/hook"
    caplog.set_level(logging.INFO, logger="wahookd.scheduler")
    async with running_daemon(tls_config(tmp_path, ca, retry_schedule=["1h"])) as d:
        outcomes = capture_outcomes(d)
        await put_webhook(d, url)
        await d.call("POST", "/api/events", EVENT)
        await eventually(lambda: len(outcomes) == 1)
        (row,) = await attempt_log(d)
        _, tested = await d.call("POST", "/api/webhook/test", {"url": url})
    (line,) = [TextFormatter().format(r) for r in caplog.records if r.msg.startswith("attempt ")]
    for error in (row["error"], tested["error"]):
        assert_tls_error(error, case.error)
    # the daemon's own log line names the reason too, not only the class
    assert f"s1 session.disconnected: {case.error} in " in line, line


# ------------------------------------------------------------ verification is always on

DISABLING_KEYS = ["verify_tls", "tls_verify", "verify_ssl", "ssl_verify", "insecure", "verify"]


@pytest.mark.parametrize("key", DISABLING_KEYS)
def test_no_delivery_key_turns_verification_off(tmp_path: Path, key: str) -> None:
    text = f"[delivery]\n{key} = false\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, source=None, base_dir=tmp_path)
    (error,) = info.value.errors
    assert f"delivery.{key}" in error or f"unknown key '{key}'" in error, error
    assert "unknown key" in error and "known:" in error, error


@pytest.mark.parametrize("key", ["verify_tls", "insecure"])
def test_no_static_webhook_key_turns_verification_off(tmp_path: Path, key: str) -> None:
    text = f"""
[delivery]
allow_networks = ["127.0.0.0/8"]
[[webhook]]
session = "*"
url = "https://127.0.0.1:8443/hook"
events = ["*"]
{key} = false
"""
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, source=None, base_dir=tmp_path)
    assert any(key in e and "unknown" in e for e in info.value.errors), info.value.errors


async def test_the_api_has_no_switch_either(tmp_path: Path, ca: trustme.CA) -> None:
    url = "https://127.0.0.1:9/hook"
    async with running_daemon(tls_config(tmp_path, ca)) as d:
        for field in ("verifyTls", "insecure", "rejectUnauthorized"):
            body = {"url": url, "events": ["*"], field: False}
            status, answer = await d.call("PUT", "/api/webhook/config/s1", body)
            assert status == 400, answer
            assert answer["error"]["message"].startswith(f"{field}: unknown field"), answer
            status, answer = await d.call("POST", "/api/webhook/test", {"url": url, field: False})
            assert status == 400, answer
            assert answer["error"]["message"].startswith(f"{field}: unknown field"), answer


def test_the_delivery_policy_has_no_verification_field() -> None:
    names = {f.name for f in dataclasses.fields(DeliveryConfig)}
    assert not {n for n in names if "verify" in n or "insecure" in n}, names


@pytest.mark.parametrize("with_ca_file", [False, True])
def test_every_client_context_verifies(tmp_path: Path, ca: trustme.CA, with_ca_file: bool) -> None:
    path = str(ca_file(ca, tmp_path)) if with_ca_file else None
    ctx = make_ssl_context(path)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    # the system store is loaded too, not replaced by the extra bundle
    assert ctx.cert_store_stats()["x509_ca"] >= (1 if with_ca_file else 0)
