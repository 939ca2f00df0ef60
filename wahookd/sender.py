"""One HTTP attempt: build the request, POST it, classify what came back."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import yarl
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from . import __version__
from .attempt_errors import network_error, tls_error
from .config import DeliveryConfig
from .http1 import BadResponse, Http1Connection, Response
from .models import AttemptResult, Claimed, ErrorClass, Webhook
from .netpolicy import PolicyResolver, RefusedTarget, check_url
from .pool import ConnectError, ConnectionPool, Origin
from .retry import parse_retry_after
from .signing import signature_headers

log = logging.getLogger(__name__)

USER_AGENT = f"wahookd/{__version__}"
RESPONSE_KEEP_BYTES = 1024
PREVIOUS_SECRET_GRACE_S = 24 * 3600


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification always on: the system store plus the configured extra CA bundle."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


# called once with an attempt's result, or None when the attempt was cancelled
AttemptDone = Callable[[AttemptResult | None], None]

# URL form and literal-address checks are pure: remember the targets that passed
MAX_TARGETS = 10_000


@dataclass(frozen=True, slots=True)
class Target:
    """A checked webhook URL with its request head prepared."""

    origin: Origin  # where the connection goes
    request_line: str  # "POST <path> HTTP/1.1", then the Host header
    fixed_headers: str  # the webhook's own headers, Content-Type and User-Agent


class Sender:
    """Makes attempts over pooled keep-alive connections. Create, `await start()`, `close()`.

    Every connection goes through the network policy (netpolicy.py): `resolver` (aiohttp's
    default when None) answers the lookups, and the policy keeps only allowed addresses.
    The HTTP exchange itself is http1.py; the connections are pool.py's.
    """

    def __init__(self, config: DeliveryConfig, resolver: AbstractResolver | None = None) -> None:
        self.config = config
        self._ssl = _ssl_for(config)
        # (url, headers) that passed check_url under this config, with their request heads
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], Target] = {}
        self._upstream_resolver = resolver
        self._policy: PolicyResolver | None = None
        self._pool: ConnectionPool | None = None

    def reconfigure(self, config: DeliveryConfig) -> None:
        """Use a new delivery policy (SIGHUP) from the next attempt on."""
        old = self.config
        self._targets = {}
        new_ssl = None
        if config.ca_file != old.ca_file:
            self._ssl = new_ssl = _ssl_for(config)
        self.config = config
        if self._policy is not None:
            self._policy.allow_networks = config.allow_networks
        if self._pool is not None and (new_ssl or config.allow_networks != old.allow_networks):
            # pooled connections were vetted, or verified, under the old policy
            self._pool.reset(new_ssl)

    async def start(self) -> None:
        """Open the connection pool."""
        upstream = self._upstream_resolver or DefaultResolver()
        self._policy = PolicyResolver(upstream, self.config.allow_networks)
        self._pool = ConnectionPool(self._policy, self._policy.open_socket, self._ssl)

    async def close(self) -> None:
        """Close every connection and the resolver."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._policy is not None:
            await self._policy.close()
            self._policy = None

    async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
        """Make one attempt of a claimed delivery to the webhook's current config (SPEC §5)."""
        started = time.monotonic()
        try:
            target = self._target(webhook.url, webhook.headers)
        except RefusedTarget as exc:
            return _result(started, now, "refused", f"refused: {exc}")
        request = _attempt_request(target, webhook, claimed, now)
        return await self._exchange(target.origin, request, started, now)

    def begin(
        self, webhook: Webhook, claimed: Claimed, now: float, done: AttemptDone
    ) -> asyncio.Future[Response] | None:
        """Start an attempt on a pooled connection, on callbacks alone (no task).

        `done(result)` is called once it ends, `done(None)` when it was cancelled
        (cancel the returned future to cancel it). None, and nothing started, when no
        idle connection to the target is at hand: then await `attempt()`, which
        connects (and says why the target is refused, when it is).
        """
        assert self._pool is not None, "Sender.start() was not awaited"
        started = time.monotonic()
        try:
            target = self._target(webhook.url, webhook.headers)
        except RefusedTarget:
            return None
        conn = self._pool.take_idle(target.origin)
        if conn is None:
            return None
        answer = conn.request(
            _attempt_request(target, webhook, claimed, now), self.config.max_response
        )
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + self.config.timeout_s, _time_out, answer)
        answer.add_done_callback(
            functools.partial(self._answered, target.origin, conn, timer, started, now, done)
        )
        return answer

    def _answered(
        self,
        origin: Origin,
        conn: Http1Connection,
        timer: asyncio.TimerHandle,
        started: float,
        now: float,
        done: AttemptDone,
        answer: asyncio.Future[Response],
    ) -> None:
        timer.cancel()
        if self._pool is not None:
            self._pool.release(origin, conn)
        result: AttemptResult | None = None
        try:
            if not answer.cancelled():
                exc = answer.exception()
                if exc is None:
                    result = self._classify(answer.result(), started, now)
                else:
                    result = self._failure(exc, origin, started, now)
        except Exception:
            # the task path's caller turns a crash into a failed attempt; so does this one
            log.exception("classifying an attempt's answer failed")
            result = _result(started, now, "network", "internal error in wahookd")
        done(result)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], now: float
    ) -> AttemptResult:
        """POST body with exactly these headers (the test endpoint); never raises."""
        started = time.monotonic()
        try:
            target = self._target(url, ())
            lines = [target.request_line, *_header_lines(headers.items())]
        except RefusedTarget as exc:
            return _result(started, now, "refused", f"refused: {exc}")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        return await self._exchange(target.origin, "".join(lines).encode() + body, started, now)

    def _target(self, url: str, headers: tuple[tuple[str, str], ...]) -> Target:
        """The checked target; check_url again after every reconfigure (the policy may differ)."""
        key = (url, headers)
        target = self._targets.get(key)
        if target is not None:
            return target
        check_url(
            url, require_https=self.config.require_https, allow_networks=self.config.allow_networks
        )
        parsed = yarl.URL(url)
        tls = parsed.scheme == "https"
        host = parsed.raw_host
        port = parsed.port
        assert host is not None and port is not None  # check_url made sure
        target = Target(
            origin=(tls, host, port),
            request_line=(
                f"POST {parsed.raw_path_qs} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n"
            ),
            fixed_headers="".join(
                _header_lines(
                    [*headers, ("Content-Type", "application/json"), ("User-Agent", USER_AGENT)]
                )
            ),
        )
        if len(self._targets) < MAX_TARGETS:
            self._targets[key] = target
        return target

    async def _exchange(
        self, origin: Origin, request: bytes, started: float, now: float
    ) -> AttemptResult:
        """Send one request within the attempt timeout and classify the answer."""
        assert self._pool is not None, "Sender.start() was not awaited"
        pool = self._pool
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        conn = None
        try:
            conn = pool.take_idle(origin)
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await pool.connect(origin)
            answer = conn.request(request, self.config.max_response)
            # one timer per attempt, cheaper than another asyncio.timeout
            timer = loop.call_at(deadline, _time_out, answer)
            try:
                response = await answer
            finally:
                timer.cancel()
        except (RefusedTarget, BadResponse, OSError) as exc:  # timeouts, TLS: OSErrors too
            return self._failure(exc, origin, started, now)
        finally:
            if conn is not None:
                pool.release(origin, conn)
        return self._classify(response, started, now)

    def _classify(self, response: Response, started: float, now: float) -> AttemptResult:
        """The result of an attempt that got an answer."""
        status = response.status
        text = response.body[:RESPONSE_KEEP_BYTES].decode("utf-8", "replace")
        error = None if 200 <= status < 300 else f"HTTP {status}"
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.retry_after, now)
        return _result(started, now, _status_class(status), error, status, text, retry_after)

    def _failure(
        self, exc: BaseException, origin: Origin, started: float, now: float
    ) -> AttemptResult:
        """The result of an attempt that got no answer: refused, timeout, TLS or network."""
        if isinstance(exc, RefusedTarget):  # before OSError: RefusedAddress is one too
            return _result(started, now, "refused", f"refused: {exc}")
        if isinstance(exc, TimeoutError):
            return _result(started, now, "timeout", f"timed out after {self.config.timeout_s:g}s")
        if isinstance(exc, ssl.SSLError):
            return _result(started, now, "tls", tls_error(exc, origin[1], origin[2]))
        if isinstance(exc, ConnectError) and isinstance(exc.os_error, ssl.SSLError):
            return _result(started, now, "tls", tls_error(exc.os_error, exc.host, exc.port))
        if isinstance(exc, (BadResponse, OSError)):
            return _result(started, now, "network", network_error(exc))
        raise exc


def _attempt_request(target: Target, webhook: Webhook, claimed: Claimed, now: float) -> bytes:
    """One attempt's request bytes: the target's head, the delivery headers, the body."""
    timestamp = int(now)
    body = claimed.body
    head = [
        target.request_line,
        target.fixed_headers,
        f"X-Webhook-Event: {claimed.event_type}\r\nX-Webhook-Id: {claimed.uid}\r\n"
        f"X-Webhook-Attempt: {claimed.attempt}\r\nX-Webhook-Timestamp: {timestamp}\r\n",
    ]
    previous: Sequence[str] = ()
    if webhook.previous_secret and now < (webhook.previous_secret_until or 0.0):
        previous = (webhook.previous_secret,)  # rotation: both signatures for 24 h
    for name, value in signature_headers(
        webhook.secret, body, claimed.uid, timestamp, previous_secrets=previous
    ).items():
        head.append(f"{name}: {value}\r\n")
    head.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "".join(head).encode() + body


def _time_out(answer: asyncio.Future[Response]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


def _result(
    started: float,
    now: float,
    error_class: ErrorClass,
    error: str | None,
    status: int | None = None,
    text: str = "",
    retry_after: float | None = None,
) -> AttemptResult:
    elapsed_ms = round((time.monotonic() - started) * 1000)
    return AttemptResult(status, error, elapsed_ms, text, retry_after, error_class)


def _header_lines(headers: Iterable[tuple[str, str]]) -> list[str]:
    """`Name: value` lines; CR, LF or NUL would split the request, so they are refused."""
    lines = []
    for name, value in headers:
        line = f"{name}: {value}\r\n"
        if any(c in line[:-2] for c in "\r\n\0"):
            raise RefusedTarget(f"header {name!r} contains CR, LF or NUL")
        lines.append(line)
    return lines


def _ssl_for(config: DeliveryConfig) -> ssl.SSLContext:
    return make_ssl_context(str(config.ca_file) if config.ca_file else None)


def _status_class(status: int) -> ErrorClass:
    if 200 <= status < 300:
        return "2xx"
    if 300 <= status < 400:
        return "3xx"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"
