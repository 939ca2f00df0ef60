"""Operator commands that talk to the running daemon over its HTTP API.

The daemon is reached at the config's `server.listen`. Each command mints its own token
with the config's keys (role admin, valid for a minute), or uses $WAHOOKD_TOKEN when set
(for a daemon that only accepts an external issuer's tokens). A command returns a Report,
or raises OpsError carrying its exit status; cli.py prints them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from .auth import KeyError_, load_keys, mint_token
from .config import REQUIRE_HTTPS_HINT, Config
from .tables import deliveries_text, queue_line, status_text, test_webhook_text, webhooks_text

EXIT_OK: Final = 0
EXIT_API: Final = 1  # the daemon answered an error; not ready; a test webhook got no 2xx
EXIT_USAGE: Final = 2  # bad arguments or config; no key to mint a token; a token refused (401)
EXIT_DOWN: Final = 3  # the daemon is not running, or not reachable at the configured address
EXIT_NOT_FOUND: Final = 4  # the daemon answered 404: no such delivery, webhook or session

TOKEN_ENV: Final = "WAHOOKD_TOKEN"
TOKEN_TTL_S: Final = 60.0
TIMEOUT_S: Final = 30.0
# a listen address on every interface is reached on the loopback interface
_LOOPBACK: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def console_url(config: Config, token: str) -> str:
    """The console's URL on this daemon, the token in the fragment (never sent, never logged).

    Raises OpsError when the daemon listens on a Unix socket: a browser cannot open that.
    """
    listen = config.server.listen
    if listen.unix_path is not None or listen.host is None or listen.port is None:
        raise OpsError(
            f"the daemon listens on unix:{listen.unix_path}; a browser needs a TCP address"
            " (server.listen), or a reverse proxy in front of the socket",
            EXIT_USAGE,
        )
    host = _LOOPBACK.get(listen.host, listen.host)
    base = URL.build(scheme="http", host=host, port=listen.port, path="/ui/")
    return f"{base}#token={token}"


class OpsError(Exception):
    """A command failed: the message for stderr, the exit status, the API's answer if any."""

    def __init__(self, message: str, exit_code: int, answer: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.answer = answer


@dataclass(frozen=True)
class Report:
    """What a command shows: text for people, the API's JSON for --json, an exit status."""

    text: str
    data: Any
    exit_code: int = EXIT_OK
    note: str | None = None  # one line for stderr: a warning or why the exit status is not 0


class Client:
    """The daemon's API over one aiohttp session (TCP or unix socket)."""

    def __init__(self, config: Config, env: Mapping[str, str], timeout_s: float = TIMEOUT_S):
        self.config = config
        self.timeout_s = timeout_s
        listen = config.server.listen
        self.unix_path = listen.unix_path
        if listen.unix_path is not None:
            self.base = "http://localhost"
            self.where = f"unix:{listen.unix_path}"
        else:
            assert listen.host is not None and listen.port is not None
            host = _LOOPBACK.get(listen.host, listen.host)
            self.base = self.where = str(URL.build(scheme="http", host=host, port=listen.port))
        self._token: str | None = env.get(TOKEN_ENV) or None
        self._from_env = self._token is not None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        connector = aiohttp.UnixConnector(self.unix_path) if self.unix_path else None
        self._http = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        auth: bool = True,
        accept: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        """Make one request; return (status, JSON answer) for 2xx and `accept`, else raise."""
        assert self._http is not None, "use Client as an async context manager"
        headers = {"Authorization": f"Bearer {await self._bearer()}"} if auth else {}
        try:
            async with self._http.request(
                method, self.base + path, params=params, json=body, headers=headers
            ) as resp:
                status, raw = resp.status, await resp.read()
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(exc.os_error) from None
        except TimeoutError:
            raise OpsError(
                f"the daemon at {self.where} did not answer within {self.timeout_s:g}s", EXIT_DOWN
            ) from None
        except aiohttp.ClientError as exc:
            message = f"lost the connection to the daemon at {self.where}: {exc}"
            raise OpsError(message, EXIT_API) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise OpsError(
                f"{self.where} answered HTTP {status} with something else than JSON:"
                " is wahookd listening there?",
                EXIT_API,
            ) from None
        if status < 400 or status in accept:
            return status, answer
        raise self._api_error(status, answer)

    async def _bearer(self) -> str:
        if self._token is None:
            try:
                keys = load_keys(self.config.auth, self.config.storage.path, generate=False)
                self._token = mint_token(
                    self.config.auth,
                    keys,
                    subject="wahookd-cli",
                    role="admin",
                    sessions=None,
                    ttl_s=TOKEN_TTL_S,
                    now=time.time(),
                )
            except (KeyError_, OSError) as exc:
                # a daemon that is not running is the likelier news: say that first
                await self.call("GET", "/healthz", auth=False)
                reason = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else exc
                raise OpsError(f"cannot mint a token: {reason}", EXIT_USAGE) from None
        return self._token

    def _unreachable(self, error: OSError) -> OpsError:
        if isinstance(error, ConnectionRefusedError):
            return OpsError(f"daemon not running at {self.where} (connection refused)", EXIT_DOWN)
        if isinstance(error, FileNotFoundError):
            return OpsError(f"daemon not running at {self.where} (no such socket)", EXIT_DOWN)
        reason = error.strerror or str(error) or type(error).__name__
        return OpsError(f"cannot reach the daemon at {self.where}: {reason}", EXIT_DOWN)

    def _api_error(self, status: int, answer: Any) -> OpsError:
        try:
            message = str(answer["error"]["message"])
        except (TypeError, KeyError):
            message = f"HTTP {status}"
        if status == 401:
            whose = f"${TOKEN_ENV}" if self._from_env else "the token minted from this config"
            message += f" (the daemon at {self.where} refuses {whose}: is -c its config?)"
            return OpsError(message, EXIT_USAGE, answer)
        return OpsError(message, EXIT_NOT_FOUND if status == 404 else EXIT_API, answer)


Command = Callable[[Client], Awaitable[Report]]


def run(
    config: Config, env: Mapping[str, str], command: Command, timeout_s: float = TIMEOUT_S
) -> Report:
    """Run one command against the daemon of this config."""

    async def main() -> Report:
        async with Client(config, env, timeout_s) as client:
            return await command(client)

    return asyncio.run(main())


# ------------------------------------------------------------------ commands


async def status(c: Client) -> Report:
    """Health, readiness, queue totals and one row per session."""
    _, health = await c.call("GET", "/healthz", auth=False)
    ready_status, ready = await c.call("GET", "/readyz", auth=False, accept=(503,))
    data: dict[str, Any] = {"healthz": health, "readyz": ready}
    problems = []
    if ready_status != 200:
        problems.append(f"not ready: {_message(ready)}")
    queue: dict[str, int] | None = None
    sessions: list[dict[str, Any]] | None = None
    try:
        _, data["queue"] = await c.call("GET", "/api/webhook/queue")
        queue = data["queue"]["queue"]
        _, data["sessions"] = await c.call("GET", "/api/webhook/sessions")
        sessions = data["sessions"]["sessions"]
    except OpsError as exc:
        if exc.exit_code != EXIT_API:
            raise
        problems.append(exc.message)
    text = status_text(
        c.where, "healthy", "ready" if ready_status == 200 else "NOT READY", queue, sessions
    )
    note = "; ".join(problems) or None
    return Report(text, data, EXIT_API if problems else EXIT_OK, note)


async def queue(c: Client, session: str | None) -> Report:
    """Queued deliveries by state, over every session or one."""
    params = {"sessionId": session} if session else None
    _, answer = await c.call("GET", "/api/webhook/queue", params=params)
    return Report(queue_line(answer["queue"]), answer)


async def deliveries(
    c: Client, session: str, status: str | None, limit: int, webhook: str | None = None
) -> Report:
    """A session's deliveries (to one of its webhooks: `webhook`), newest first."""
    params = {"limit": str(limit), **({"status": status} if status else {})}
    if webhook:
        params["webhookId"] = webhook
    _, answer = await c.call("GET", f"/api/webhook/deliveries/{session}", params=params)
    more = answer["nextCursor"] is not None
    return Report(deliveries_text(answer["deliveries"], more), answer)


async def retry(
    c: Client,
    session: str,
    delivery_id: str | None,
    since: str | None,
    webhook: str | None = None,
) -> Report:
    """Queue one failed delivery again, or every failed one of the session (to `webhook`)."""
    if delivery_id is not None:
        path = f"/api/webhook/deliveries/{session}/{delivery_id}/retry"
        _, answer = await c.call("POST", path)
        return Report(f"{delivery_id} queued again ({answer['delivery']['status']})", answer)
    params = {"since": since} if since else {}
    if webhook:
        params["webhookId"] = webhook
    path = f"/api/webhook/queue/{session}/retry-failed"
    _, answer = await c.call("POST", path, params=params or None)
    n, parked = answer["retried"], answer.get("parked", 0)
    text = f"{n} failed {'delivery' if n == 1 else 'deliveries'} queued again"
    note = None
    if parked:
        note = (
            f"{parked} of them wait behind an inactive webhook;"
            f" enable it with: wahookd webhook enable {session}"
        )
    return Report(text, answer, note=note)


async def webhook_active(c: Client, session: str, active: bool) -> Report:
    """Enable or disable a session's webhook (after a 410 or an auto-disable, say)."""
    path = f"/api/webhook/config/{session}"
    _, answer = await c.call("PATCH", path, body={"isActive": active})
    word = "enabled" if active else "disabled"
    when = answer["config"]["updatedAt"]
    text = f"webhook of session {session} {word} at {when}"
    if active:
        text += "; its queued deliveries are due again"
    return Report(text, answer)


async def emit(c: Client, session: str, event: str, data: dict[str, Any]) -> Report:
    """Publish one event as the gateway would; the report's text is its id."""
    body = {**data, "event": event, "sessionId": session}
    _, answer = await c.call("POST", "/api/events", body=body)
    note = None
    if answer["queued"] == 0:
        note = "accepted, but nothing was queued: no active webhook takes it, or a repeated id"
    return Report(answer["ids"][0], answer, note=note)


async def test_webhook(c: Client, url: str, secret: str | None, payload: Any) -> Report:
    """One signed POST from the daemon to `url`, now; exit 1 unless the answer was 2xx."""
    body: dict[str, Any] = {"url": url}
    if secret is not None:
        body["secret"] = secret
    if payload is not None:
        body["payload"] = payload
    try:
        _, answer = await c.call("POST", "/api/webhook/test", body=body)
    except OpsError as exc:
        # the daemon refuses http:// under require_https: say which key allows it
        if urlsplit(url).scheme == "http" and "must be https" in exc.message:
            raise OpsError(
                f"{exc.message}; {REQUIRE_HTTPS_HINT}", exc.exit_code, exc.answer
            ) from None
        raise
    ok = bool(answer["success"])
    note = None if ok else "the receiver did not answer 2xx"
    return Report(test_webhook_text(answer), answer, EXIT_OK if ok else EXIT_API, note)


async def webhooks_list(c: Client, session: str | None, failing: bool) -> Report:
    """Every webhook (one session's: `session`; only failing ones: `failing`) with its health."""
    params = {"sessionId": session} if session else {}
    if failing:
        params["failing"] = "true"
    _, answer = await c.call("GET", "/api/webhooks", params=params or None)
    return Report(webhooks_text(answer["webhooks"]), answer)


async def webhooks_add(c: Client, body: dict[str, Any]) -> Report:
    """Add a webhook to a session; the report's text is its id."""
    _, answer = await c.call("POST", "/api/webhooks", body=body)
    return Report(answer["webhook"]["id"], answer)


async def webhooks_edit(c: Client, webhook_id: str, body: dict[str, Any]) -> Report:
    """Change some fields of a webhook; omitted ones keep their value."""
    _, answer = await c.call("PATCH", f"/api/webhooks/{webhook_id}", body=body)
    return Report(webhooks_text([answer["webhook"]]), answer)


async def webhooks_rm(c: Client, webhook_id: str) -> Report:
    """Remove a webhook and drop its queued deliveries."""
    _, answer = await c.call("DELETE", f"/api/webhooks/{webhook_id}")
    return Report(f"webhook {webhook_id} removed with its queued deliveries", answer)


async def webhooks_active(c: Client, webhook_id: str, active: bool) -> Report:
    """Enable or disable one webhook (any of a session's, by id)."""
    _, answer = await c.call("PATCH", f"/api/webhooks/{webhook_id}", body={"isActive": active})
    word = "enabled" if active else "disabled"
    text = f"webhook {webhook_id} {word} at {answer['webhook']['updatedAt']}"
    if active:
        text += "; its queued deliveries are due again"
    return Report(text, answer)


def _message(answer: Any) -> str:
    try:
        return str(answer["error"]["message"])
    except (TypeError, KeyError):
        return str(answer)
