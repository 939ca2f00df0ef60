"""The operator commands (status, queue, deliveries, retry, emit, test-webhook), end to end.

The real CLI runs as a subprocess against one real daemon subprocess shared by the module,
which delivers to a real TLS receiver. The receiver and the daemon's asyncio handle live
on a loop in a background thread, so the tests are plain functions that block on the CLI
while the receiver keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from daemon_proc import DaemonProcess, cli, free_port
from support import Received, Receiver, Reply, ca_file, eventually_sync

from wahookd.cli import main
from wahookd.tables import deliveries_text, status_text, table, when

T = TypeVar("T")
FAILING = "broken"  # the receiver answers 500 to this session's events while `failing` is set
STATIC = "static-s"  # served by a [[webhook]] of the config file


class LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Setup:
    """The shared daemon, its config and its receiver."""

    config: Path
    port: int
    rx: Receiver
    failing: threading.Event
    work: Path

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Run:
    """One CLI run."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


STATUS_COLUMNS = [
    "SESSION",
    "WEBHOOK",
    "ACTIVE",
    "PENDING",
    "PROCESSING",
    "RETRYING",
    "FAILED",
    "DELIVERED",
    "AVERAGE RESPONSE",
    "LAST DELIVERY",
]


def columns(header: str) -> list[str]:
    """A table's header cut into its labels (columns are two or more spaces apart)."""
    return re.split(r"\s{2,}", header.strip())


def write_config(path: Path, port: int, data: Path, extra: str = "") -> Path:
    """No [auth] key: the daemon generates jwt.secret and the CLI reads it, as on a server."""
    ca = data.parent / "test-ca.pem"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{data / "wahookd.db"}"\n'
        "[delivery]\n"
        + (f'ca_file = "{ca}"\n' if ca.exists() else "")
        + 'allow_networks = ["127.0.0.0/8"]\ntimeout = "2s"\n'
        "retry_schedule = []\n"  # one attempt: a 500 fails the delivery at once
        f"{extra}"
    )
    return path


def wahookd(config: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run `wahookd ARGS -c CONFIG` and capture what it printed."""
    clean = {k: v for k, v in os.environ.items() if k not in ("WAHOOKD_CONFIG", "WAHOOKD_TOKEN")}
    proc = subprocess.run(
        cli(*args, "-c", str(config)),
        capture_output=True,
        text=True,
        timeout=40,
        env={**clean, **(env or {})},
        cwd=config.parent,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def one_line(err: str) -> str:
    """A CLI error: exactly one line on stderr, no traceback."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("ops")
    ca_file(ca, work)
    port = free_port()
    static = f'[[webhook]]\nsession = "{STATIC}"\nurl = "URL"\nevents = ["*"]\n'
    failing = threading.Event()
    loop = LoopThread()

    def respond(got: Received) -> Reply:
        if failing.is_set() and json.loads(got.body).get("sessionId") == FAILING:
            return Reply(status=500, body=b"down for maintenance")
        if got.path == "/fail":
            return Reply(status=503, body=b"try later")
        return Reply()

    async def start() -> tuple[Receiver, DaemonProcess]:
        rx = Receiver(ca)
        rx.responder = respond
        await rx.start()
        config = write_config(work / "wahookd.toml", port, work / "data", static)
        config.write_text(config.read_text().replace("URL", rx.url))
        daemon = DaemonProcess(config, port, work)
        await daemon.start()
        return rx, daemon

    rx, daemon = loop.run(start())
    try:
        yield Setup(work / "wahookd.toml", port, rx, failing, work)
    finally:
        loop.run(daemon.stop())
        loop.run(rx.stop())
        loop.close()


def api(s: Setup, method: str, path: str, body: Any) -> Any:
    """A call with a token from `wahookd token` (for setting up webhooks)."""
    token = wahookd(s.config, "token").out.strip()
    request = urllib.request.Request(
        s.address + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(check: Callable[[], T | None], timeout_s: float = 15.0) -> T:
    """Call `check` until it returns something."""
    return eventually_sync(check, timeout_s)


def delivery(s: Setup, session: str, status: str) -> dict[str, Any] | None:
    """The session's newest delivery in this state, if any (via `deliveries --json`)."""
    run = wahookd(s.config, "deliveries", session, "--status", status, "--json", "--limit", "1")
    assert run.code == 0, run.err
    found = run.json()["deliveries"]
    return found[0] if found else None


# ------------------------------------------------------------------ no daemon


def test_not_running_names_the_address(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "wahookd.toml", port, tmp_path / "data")
    for args in (("status",), ("deliveries", "s1", "--json"), ("emit", "s1", "session.connected")):
        run = wahookd(config, *args)
        assert run.code == 3, (args, run)
        assert run.out == ""
        assert one_line(run.err) == (
            f"wahookd: daemon not running at http://127.0.0.1:{port} (connection refused)"
        )
    # the CLI reads the generated key but never creates it (the daemon does)
    assert not (tmp_path / "data").exists()

    sock = tmp_path / "wahookd.sock"
    config.write_text(config.read_text().replace(f"127.0.0.1:{port}", f"unix:{sock}"))
    run = wahookd(config, "status")
    assert run.code == 3
    assert one_line(run.err) == f"wahookd: daemon not running at unix:{sock} (no such socket)"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path / "wahookd.toml", free_port(), tmp_path / "data")
    for args in (
        ("deliveries", "bad id"),
        ("deliveries", "s1", "--limit", "0"),
        ("deliveries", "s1", "--failed", "--status", "delivered"),
        ("retry", "s1"),
        ("retry", "s1", "nope"),
        ("retry", "s1", "dlv_0123456789abcdef", "--since", "1h"),
        ("emit", "s1", "message.received", "--data", "[1]"),
        ("emit", "s1", "message.received", "--data", '{"sessionId": "s2"}'),
        ("test-webhook",),
    ):
        run = wahookd(config, *args)
        assert run.code == 2, (args, run)
        assert "Traceback" not in run.err and run.err.strip(), args
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "nowhere"\n')
    run = wahookd(bad, "status")
    assert run.code == 2 and "server.listen" in run.err


# ------------------------------------------------------------------ against the daemon


def test_status_table_and_json(setup: Setup) -> None:
    run = wahookd(setup.config, "status")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"wahookd at {setup.address}: healthy, ready"
    assert lines[1].startswith("queue: ") and lines[1].endswith(" failed")
    assert columns(lines[3]) == STATUS_COLUMNS
    row = next(line for line in lines if line.startswith(STATIC))
    assert f"static {setup.rx.url}" in row and " yes " in row

    data = wahookd(setup.config, "status", "--json").json()
    assert data["healthz"] == {"status": "ok"} and data["readyz"] == {"status": "ready"}
    assert set(data["queue"]["queue"]) == {"pending", "processing", "retrying", "failed"}
    (static,) = [s for s in data["sessions"]["sessions"] if s["sessionId"] == STATIC]
    assert static["webhooks"] == [{"kind": "static", "url": setup.rx.url, "isActive": True}]


def test_emit_then_see_the_delivery(setup: Setup) -> None:
    run = wahookd(
        setup.config,
        "emit",
        STATIC,
        "message.received",
        "--data",
        '{"messageId": "m1", "from": "123", "to": "me", "type": "text", "text": "hi"}',
    )
    assert run.code == 0, run.err
    event_id = run.out.strip()
    assert event_id.startswith("evt_") and run.err == ""
    found = wait_for(lambda: delivery(setup, STATIC, "delivered"))
    assert found["eventId"] == event_id and found["lastStatusCode"] == 200

    table = wahookd(setup.config, "deliveries", STATIC)
    assert table.code == 0
    header, *rows = table.out.splitlines()
    assert header.split()[:4] == ["ID", "EVENT", "STATUS", "ATTEMPTS"]
    row = next(r for r in rows if r.startswith(found["id"]))
    assert row.split()[1:4] == ["message.received", "delivered", "1"]
    assert row.rstrip().endswith("  HTTP 200")

    # nothing takes an event of a session without a webhook: exit 0, a warning on stderr
    run = wahookd(
        setup.config, "emit", "nobody", "session.disconnected", "--data", '{"reason":"x"}', "--json"
    )
    assert run.code == 0 and run.json()["queued"] == 0
    assert "nothing was queued" in one_line(run.err)
    # the daemon refuses an invalid event: exit 1, its message
    run = wahookd(setup.config, "emit", STATIC, "message.received")
    assert run.code == 1 and "messageId" in one_line(run.err)


def test_failed_delivery_found_and_retried(setup: Setup) -> None:
    api(setup, "PUT", f"/api/webhook/config/{FAILING}", {"url": setup.rx.url, "events": ["*"]})
    setup.failing.set()
    run = wahookd(setup.config, "emit", FAILING, "session.disconnected", "--data", '{"reason":"x"}')
    assert run.code == 0, run.err
    failed = wait_for(lambda: delivery(setup, FAILING, "failed"))
    assert failed["lastError"] == "HTTP 500"

    listing = wahookd(setup.config, "deliveries", FAILING, "--failed")
    assert listing.code == 0
    (row,) = [r for r in listing.out.splitlines() if r.startswith(failed["id"])]
    assert row.split()[2] == "failed" and row.rstrip().endswith("HTTP 500")
    status = wahookd(setup.config, "status")
    (srow,) = [r for r in status.out.splitlines() if r.startswith(FAILING + " ")]
    assert srow.split()[1:3] == [setup.rx.url, "yes"] and srow.split()[6] == "1"  # FAILED

    setup.failing.clear()
    run = wahookd(setup.config, "retry", FAILING, failed["id"])
    assert run.code == 0, run.err
    assert run.out.strip() == f"{failed['id']} queued again (pending)"
    done = wait_for(lambda: delivery(setup, FAILING, "delivered"))
    assert done["id"] == failed["id"] and done["attemptCount"] == 2

    # not failed any more: the daemon says why, exit 1; --json prints its answer
    run = wahookd(setup.config, "retry", FAILING, failed["id"], "--json")
    assert run.code == 1 and "only failed deliveries" in one_line(run.err)
    assert run.json()["error"]["code"] == "conflict"
    run = wahookd(setup.config, "retry", FAILING, "dlv_0123456789abcdef")
    assert run.code == 4
    assert one_line(run.err) == "wahookd: no delivery dlv_0123456789abcdef in this session"
    run = wahookd(setup.config, "retry", FAILING, "--all-failed", "--since", "1h")
    assert (run.code, run.out) == (0, "0 failed deliveries queued again\n")
    assert wahookd(setup.config, "retry", FAILING, "--all-failed", "--json").json() == {
        "success": True,
        "retried": 0,
        "parked": 0,
    }


def test_queue(setup: Setup) -> None:
    run = wahookd(setup.config, "queue", STATIC)
    assert run.code == 0
    assert run.out.strip().endswith(" failed") and run.out.count(",") == 3
    data = wahookd(setup.config, "queue", "--json").json()
    assert data["success"] is True and set(data["queue"]) >= {"pending", "failed"}


def config_with_http_webhook(work: Path) -> Path:
    """A config whose static webhook is http://, which require_https (the default) refuses."""
    path = work / "http-webhook.toml"
    path.write_text('[[webhook]]\nsession = "s"\nurl = "http://example.com/x"\nevents = ["*"]\n')
    return path


def test_test_webhook(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    seen = len(setup.rx.requests)
    run = wahookd(setup.config, "test-webhook", setup.rx.url, "--secret", "s" * 16)
    assert run.code == 0, run.err
    first, body = run.out.splitlines()
    assert first.startswith("ok: 200 in ") and first.endswith("ms") and body == "OK"
    got = setup.rx.requests[seen]
    assert got.headers["X-Webhook-Event"] == "test" and "X-Webhook-Signature" in got.headers

    failed = setup.rx.url.replace("/hook", "/fail")
    run = wahookd(setup.config, "test-webhook", failed, "--json")
    assert run.code == 1
    assert run.json()["statusCode"] == 503 and run.json()["responseBody"] == "try later"
    assert one_line(run.err) == "wahookd: the receiver did not answer 2xx"
    first, error, body = wahookd(setup.config, "test-webhook", failed).out.splitlines()
    assert first.startswith("failed: 503 in ") and error == "error: HTTP 503"
    assert body == "try later"

    run = wahookd(setup.config, "test-webhook", "http://example.com/x")  # https required
    assert run.code == 1
    # the hint check-config gives for an http:// static webhook, word for word
    assert one_line(run.err) == (
        "wahookd: url: URL scheme must be https, got 'http'; "
        "set delivery.require_https = false to allow"
    )
    assert main(["check-config", "-c", str(config_with_http_webhook(setup.work))]) == 2
    assert "is not https; set delivery.require_https = false to allow" in capsys.readouterr().err


def test_a_config_with_other_keys_is_a_config_error(setup: Setup) -> None:
    other = setup.work / "other.toml"
    other.write_text(
        f'[server]\nlisten = "127.0.0.1:{setup.port}"\n[auth]\njwt_secret = "{"o" * 64}"\n'
    )
    run = wahookd(other, "deliveries", STATIC)
    assert run.code == 2
    assert "is -c its config?" in one_line(run.err)
    # a token from elsewhere ($WAHOOKD_TOKEN) is used as is
    token = wahookd(setup.config, "token", "--role", "viewer").out.strip()
    run = wahookd(other, "deliveries", STATIC, env={"WAHOOKD_TOKEN": token})
    assert run.code == 0, run.err


def test_table_alignment() -> None:
    text = table(("NAME", "N", "NOTE"), [["a", 5, None], ["long name", 120, "x  "]])
    assert text.splitlines() == [
        "NAME       N    NOTE",
        "a            5  -",
        "long name  120  x",
    ]
    assert table(("A", "B"), []) == "A  B"
    assert when("2024-01-01T12:00:00.123Z") == "2024-01-01T12:00:00Z" and when(None) == "-"


def test_webhook_disable_then_enable_with_parked_retries(setup: Setup) -> None:
    session = "toggle"
    api(setup, "PUT", f"/api/webhook/config/{session}", {"url": setup.rx.url, "events": ["*"]})
    run = wahookd(setup.config, "webhook", "disable", session)
    assert run.code == 0, run.err
    assert run.out.startswith(f"webhook of session {session} disabled at 20")
    config = api(setup, "GET", f"/api/webhook/config/{session}", None)["config"]
    assert config["isActive"] is False and run.out.split(" at ")[1].strip() == config["updatedAt"]
    emitted = wahookd(
        setup.config, "emit", session, "session.connected", "--data", '{"phoneNumber": "1"}'
    )
    assert emitted.code == 0 and "nothing was queued" in emitted.err

    run = wahookd(setup.config, "webhook", "enable", session)
    assert run.code == 0, run.err
    assert run.out.startswith(f"webhook of session {session} enabled at 20")
    assert api(setup, "GET", f"/api/webhook/config/{session}", None)["config"]["isActive"] is True
    run = wahookd(setup.config, "webhook", "enable", "nobody-here")
    assert run.code == 4
    assert one_line(run.err) == "wahookd: no webhook configured for session 'nobody-here'"


def test_retry_all_failed_says_when_they_wait_behind_an_inactive_webhook(setup: Setup) -> None:
    session = FAILING
    setup.failing.set()
    try:
        api(setup, "PUT", f"/api/webhook/config/{session}", {"url": setup.rx.url, "events": ["*"]})
        wahookd(setup.config, "retry", session, "--all-failed")  # none left from other tests
        emitted = wahookd(
            setup.config, "emit", session, "session.connected", "--data", '{"phoneNumber": "1"}'
        )
        uid = emitted.out.strip()
        wait_for(lambda: delivery(setup, session, "failed"))
        assert wahookd(setup.config, "webhook", "disable", session).code == 0
        run = wahookd(setup.config, "retry", session, "--all-failed")
        assert run.code == 0, run.err
        assert run.out == "1 failed delivery queued again\n"
        assert one_line(run.err) == (
            "wahookd: 1 of them wait behind an inactive webhook;"
            f" enable it with: wahookd webhook enable {session}"
        )
        pending = delivery(setup, session, "pending")
        assert pending is not None and pending["eventId"] == uid
    finally:
        setup.failing.clear()
        wahookd(setup.config, "webhook", "enable", session)


def test_status_columns_are_labelled_in_words() -> None:
    session = {
        "sessionId": "s1",
        "webhooks": [{"kind": "api", "url": "https://a.example/h", "isActive": True}],
        "queue": {"pending": 1, "processing": 0, "retrying": 2, "failed": 3},
        "stats": {"successful": 9, "averageResponseTime": "145ms", "lastDelivery": None},
    }
    queue = {"pending": 1, "processing": 0, "retrying": 2, "failed": 3}
    text = status_text("http://127.0.0.1:8787", "healthy", "ready", queue, [session])
    header, row = text.splitlines()[-2:]
    assert columns(header) == STATUS_COLUMNS
    assert all(word.isalpha() for label in columns(header) for word in label.split())
    assert columns(row) == [
        "s1",
        "https://a.example/h",
        "yes",
        "1",
        "0",
        "2",
        "3",
        "9",
        "145ms",
        "-",
    ]


def test_deliveries_last_result_has_one_format() -> None:
    def dlv(n: int, code: int | None, error: str | None) -> dict[str, Any]:
        return {
            "id": f"dlv_{n:016x}",
            "event": "message.received",
            "status": "failed",
            "attemptCount": 1,
            "createdAt": "2024-06-01T09:00:00.000Z",
            "nextAttemptAt": None,
            "finishedAt": "2024-06-01T09:00:01.000Z",
            "lastStatusCode": code,
            "lastError": error,
        }

    rows = [
        dlv(1, 200, None),
        dlv(2, 503, "HTTP 503"),
        dlv(3, None, "timed out after 5s"),
        dlv(4, None, None),
        dlv(5, 500, "static webhook removed from the config file"),
    ]
    header, *lines = deliveries_text(rows, more=False).splitlines()
    assert columns(header)[-1] == "LAST RESULT"
    assert [columns(line)[-1] for line in lines] == [
        "HTTP 200",
        "HTTP 503",
        "timed out after 5s",
        "-",
        "HTTP 500; static webhook removed from the config file",
    ]


def test_webhooks_add_list_edit_toggle_and_remove(setup: Setup) -> None:
    session = "wcli"
    run = wahookd(
        setup.config,
        "webhooks",
        "add",
        session,
        setup.rx.url,
        "--chats",
        "group",
        "--secret",
        "groups-secret",
        "--description",
        "groups only",
        "--ordering",
        "chat",
        "--rate-limit",
        "5",
    )
    assert run.code == 0, run.err
    webhook_id = run.out.strip()
    assert re.fullmatch(r"wh_[0-9a-f]{16}", webhook_id), run.out

    run = wahookd(setup.config, "webhooks", "list", "--session", session)
    assert run.code == 0, run.err
    header, row = run.out.splitlines()
    assert columns(header)[:8] == [
        "ID",
        "SESSION",
        "KIND",
        "HEALTH",
        "LAST",
        "CHATS",
        "ORDER",
        "RATE",
    ]
    assert columns(row)[:8] == [
        webhook_id,
        session,
        "extra",
        "healthy",
        "-",
        "group",
        "chat",
        "5/s",
    ]
    listed = wahookd(setup.config, "webhooks", "list", "--json").json()["webhooks"]
    static = next(w for w in listed if w["static"])
    assert any(w["id"] == webhook_id and w["secret"] == "grou****" for w in listed)

    # the group filter: a direct message does not reach it, a group message does
    for sender in ("5511999998888@c.us", "120363025246125486@g.us"):
        data = json.dumps({"messageId": sender, "from": sender, "to": "me", "type": "text"})
        emitted = wahookd(setup.config, "emit", session, "message.received", "--data", data)
        assert emitted.code == 0, emitted.err

    def delivered() -> list[dict[str, Any]] | None:
        run = wahookd(setup.config, "deliveries", session, "--webhook", webhook_id, "--json")
        assert run.code == 0, run.err
        found = run.json()["deliveries"]
        return found if found and found[0]["status"] == "delivered" else None

    (only,) = wait_for(delivered)
    assert only["webhookId"] == webhook_id and only["attempts"][0]["statusCode"] == 200

    run = wahookd(setup.config, "webhooks", "edit", webhook_id, "--all-chats", "--no-rate-limit")
    assert run.code == 0, run.err
    assert columns(run.out.splitlines()[1])[5:8] == ["all", "chat", "-"]
    run = wahookd(setup.config, "webhooks", "disable", webhook_id)
    assert run.code == 0 and run.out.startswith(f"webhook {webhook_id} disabled at 20"), run
    run = wahookd(setup.config, "webhooks", "enable", webhook_id)
    assert run.code == 0 and "due again" in run.out, run

    run = wahookd(setup.config, "webhooks", "disable", static["id"])
    assert run.code == 1 and "static" in one_line(run.err)
    run = wahookd(setup.config, "webhooks", "rm", webhook_id)
    assert run.code == 0 and run.out.startswith(f"webhook {webhook_id} removed"), run
    run = wahookd(setup.config, "webhooks", "rm", webhook_id)
    assert run.code == 4 and one_line(run.err) == f"wahookd: no webhook '{webhook_id}'"


def test_webhooks_usage_errors(setup: Setup) -> None:
    run = wahookd(setup.config, "webhooks", "edit", "wh_0123456789abcdef")
    assert run.code == 2 and "nothing to change" in one_line(run.err)
    run = wahookd(setup.config, "webhooks", "rm", "hook-1")
    assert run.code == 2 and "invalid webhook id" in run.err
    run = wahookd(setup.config, "webhooks", "add", "wcli2", setup.rx.url, "--chats", "groups")
    assert run.code == 1 and "unknown chat kind 'groups'" in one_line(run.err)
