"""One HTTP attempt: build the request, POST it over a pooled connection, classify the answer.

The HTTP exchange is http1.py's, the connections pool.py's (SPEC §5 "Sender"). An attempt
on an idle pooled connection runs on callbacks alone (`begin()`), no task; one that has to
connect runs as a task (`attempt()`). A request that fails on a reused connection before
any byte of the answer arrived (the receiver closed it as we reused it) is sent once
more, at once, on a new connection, within the same attempt and deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yarl
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from ..config import DeliveryConfig
from ..models import AttemptResult, Claimed, ErrorClass, Webhook
from .attempt_errors import Attempt, describe, status_text
from .headers import HeaderInjection, attempt_lines, header_lines, lane_lines
from .http1 import BadResponse, Http1Connection, Response
from .netpolicy import PolicyResolver, RefusedTarget, check_url
from .pool import ConnectionPool, Origin
from .retry import parse_retry_after

log = logging.getLogger(__name__)

RESPONSE_KEEP_BYTES = 1024
PREVIOUS_SECRET_GRACE_S = 24 * 3600
INTERNAL_ERROR = "internal error in wahookd"

# URL form and literal-address checks are pure: remember the targets that passed
MAX_TARGETS = 10_000

# what the network, the receiver or the policy can cause; a bug in us is something else
NO_ANSWER = (RefusedTarget, HeaderInjection, BadResponse, OSError)  # timeouts are OSErrors


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification always on: the system store plus the configured extra CA bundle."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def internal_error(started: float | None = None) -> AttemptResult:
    """The result of an attempt that a bug in wahookd ended: a failed attempt, logged."""
    elapsed_ms = 0 if started is None else _elapsed_ms(started)
    return AttemptResult(None, INTERNAL_ERROR, elapsed_ms, "", None, "network")


@dataclass(frozen=True, slots=True)
class Target:
    """A checked webhook URL with its request head prepared (per webhook: a lane template)."""

    origin: Origin  # where the connection goes
    host: str  # the URL's host, for error texts
    request_line: str  # "POST <path> HTTP/1.1" and the Host header
    head: str  # request_line, then the webhook's and our fixed headers


class Sender:
    """Makes attempts over pooled keep-alive connections. Create, `await start()`, `close()`.

    Every connection goes through the network policy (netpolicy.py): `resolver` (aiohttp's
    default resolver when None) answers the lookups, and the policy keeps only allowed
    addresses.
    """

    def __init__(self, config: DeliveryConfig, resolver: AbstractResolver | None = None) -> None:
        self.config = config
        self._ssl = _ssl_for(config)
        # (url, headers) that passed check_url under this config, with their request heads
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], Target] = {}
        self._upstream_resolver = resolver
        self._policy: PolicyResolver | None = None
        self._pool: ConnectionPool | None = None
        # retries of callback attempts on a new connection: keep hard references
        self._tasks: set[asyncio.Task[AttemptResult]] = set()
        # callback attempts in flight, watched by one timer at the soonest deadline:
        # a timer each (call_at, then cancel) cost more than the rest of the bookkeeping
        self._watched: dict[_CallbackAttempt, None] = {}
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool (after start())."""
        assert self._pool is not None, "Sender.start() was not awaited"
        return self._pool

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
        if self._pool is not None:
            self._pool.idle_timeout_s = config.idle_timeout_s
            if new_ssl is not None or config.allow_networks != old.allow_networks:
                # pooled connections were vetted, or verified, under the old policy
                self._pool.reset(new_ssl)

    async def start(self) -> None:
        """Open the connection pool."""
        upstream = self._upstream_resolver or DefaultResolver()
        self._policy = PolicyResolver(upstream, self.config.allow_networks)
        self._pool = ConnectionPool(
            self._policy, self._policy.open_socket, self._ssl, self.config.idle_timeout_s
        )

    async def close(self) -> None:
        """Close every connection and the resolver."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._policy is not None:
            await self._policy.close()
            self._policy = None

    # ------------------------------------------------------------------ attempts

    async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
        """Make one attempt of a claimed delivery to the webhook's current config (SPEC §5)."""
        started = time.monotonic()
        host = ""
        try:
            target = self._target(webhook.url, webhook.headers)
            host = target.host
            request = _attempt_request(target, webhook, claimed, now)
        except (RefusedTarget, HeaderInjection) as exc:
            return self._failure(exc, host, started)
        return await self._exchange(target, request, started, now)

    def begin(
        self, webhook: Webhook, claimed: Claimed, now: float
    ) -> asyncio.Future[AttemptResult] | None:
        """Start an attempt on an idle pooled connection, on callbacks alone (no task).

        The future gets the result; cancel it to cancel the attempt. None, and nothing
        started, when no idle connection to the target is at hand: then await
        `attempt()`, which connects (and says why the target is refused, when it is).
        An error while building the request propagates, no connection taken.
        """
        pool = self.pool
        started = time.monotonic()
        try:
            target = self._target(webhook.url, webhook.headers)
        except (RefusedTarget, HeaderInjection):
            return None
        if not pool.has_idle(target.origin):
            return None
        # built before a connection is taken: an error here leaves the pool as it was
        request = _attempt_request(target, webhook, claimed, now)
        conn = pool.take_idle(target.origin)
        if conn is None:
            return None
        return _CallbackAttempt(self, pool, target, conn, request, started, now).result

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], now: float
    ) -> AttemptResult:
        """POST body with exactly these headers (the test endpoint); no network error raises."""
        started = time.monotonic()
        host = ""
        try:
            target = self._target(url, ())
            host = target.host
            lines = header_lines(headers.items())
        except (RefusedTarget, HeaderInjection) as exc:
            return self._failure(exc, host, started)
        request = f"{target.request_line}{lines}Content-Length: {len(body)}\r\n\r\n"
        return await self._exchange(target, request.encode() + body, started, now)

    # ------------------------------------------------------------------- helpers

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
        host = parsed.raw_host
        port = parsed.port
        assert host is not None and port is not None  # check_url made sure
        request_line = (
            f"POST {parsed.raw_path_qs} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n"
        )
        target = Target(
            origin=(parsed.scheme == "https", host, port),
            host=host,
            request_line=request_line,
            head=request_line + lane_lines(headers),
        )
        if len(self._targets) < MAX_TARGETS:
            self._targets[key] = target
        return target

    async def _exchange(
        self, target: Target, request: bytes, started: float, now: float
    ) -> AttemptResult:
        """Send one request within the attempt timeout and classify the answer."""
        pool = self.pool
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        origin = target.origin
        conn = pool.take_idle(origin)
        try:
            if conn is not None:
                try:
                    return self._classify(await self._send(conn, request, deadline), started, now)
                except OSError as exc:
                    if not _retryable(exc, conn):
                        raise
                    # the receiver dropped it as we reused it: once more on a new one
                    pool.release(origin, conn)
                    conn = None
            async with asyncio.timeout_at(deadline):
                conn = await pool.connect(origin)
            return self._classify(await self._send(conn, request, deadline), started, now)
        except NO_ANSWER as exc:
            return self._failure(exc, target.host, started)
        finally:
            if conn is not None:
                pool.release(origin, conn)

    async def _send(self, conn: Http1Connection, request: bytes, deadline: float) -> Response:
        answer = conn.request(request, self.config.max_response)
        # one timer per attempt, cheaper than another asyncio.timeout
        timer = asyncio.get_running_loop().call_at(deadline, _time_out, answer)
        try:
            return await answer
        finally:
            timer.cancel()

    def _classify(self, response: Response, started: float, now: float) -> AttemptResult:
        """The result of an attempt that got an answer."""
        status = response.status
        if 200 <= status < 300:
            text = response.body[:RESPONSE_KEEP_BYTES].decode("utf-8", "replace")
            return AttemptResult(status, None, _elapsed_ms(started), text, None, "2xx")
        text = response.body[:RESPONSE_KEEP_BYTES].decode("utf-8", "replace")
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.retry_after, now)
        return _result(
            started, _status_class(status), status_text(status), status, text, retry_after
        )

    def _failure(self, exc: BaseException, host: str, started: float) -> AttemptResult:
        """The result of an attempt that got no answer: refused, timeout, TLS or network."""
        error_class, why = describe(exc, Attempt(host, self.config.timeout_s))
        return _result(started, error_class, why)

    def _watch(self, attempt: _CallbackAttempt) -> None:
        """Time the attempt out at its deadline, unless _unwatch() comes first."""
        self._watched[attempt] = None
        if self._sweep is None or attempt.deadline < self._sweep.when():
            self._arm(attempt.deadline)

    def _unwatch(self, attempt: _CallbackAttempt) -> None:
        self._watched.pop(attempt, None)

    def _arm(self, at: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep = asyncio.get_running_loop().call_at(at, self._expire)

    def _expire(self) -> None:
        """Time out the attempts past their deadlines; wake again at the next one."""
        self._sweep = None
        now = asyncio.get_running_loop().time()
        soonest: float | None = None
        for attempt in list(self._watched):
            if attempt.deadline <= now:
                del self._watched[attempt]
                _time_out(attempt.answer)
            elif soonest is None or attempt.deadline < soonest:
                soonest = attempt.deadline
        if soonest is not None:
            self._arm(soonest)


class _CallbackAttempt:
    """An attempt on a pooled connection, driven by the answer's callbacks (Sender.begin)."""

    __slots__ = (
        "answer",
        "conn",
        "deadline",
        "now",
        "pool",
        "request",
        "result",
        "retry",
        "sender",
        "started",
        "target",
    )

    def __init__(
        self,
        sender: Sender,
        pool: ConnectionPool,
        target: Target,
        conn: Http1Connection,
        request: bytes,
        started: float,
        now: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.sender, self.pool, self.target, self.conn = sender, pool, target, conn
        self.request, self.started, self.now = request, started, now
        self.deadline = loop.time() + sender.config.timeout_s
        self.result: asyncio.Future[AttemptResult] = loop.create_future()
        self.retry: asyncio.Task[AttemptResult] | None = None
        self.answer = conn.request(request, sender.config.max_response)
        sender._watch(self)
        self.answer.add_done_callback(self._answered)
        self.result.add_done_callback(self._ended)

    def _answered(self, answer: asyncio.Future[Response]) -> None:
        self.sender._unwatch(self)
        conn, origin = self.conn, self.target.origin
        if self.result.done() or answer.cancelled():
            # cancelled by the caller, or the pool aborted the connection (shutdown)
            self.pool.release(origin, conn)
            self.result.cancel()
            return
        try:
            exc = answer.exception()
            if exc is None:
                outcome = self.sender._classify(answer.result(), self.started, self.now)
            elif isinstance(exc, OSError) and _retryable(exc, conn):
                self.pool.release(origin, conn)
                self._retry_on_new_connection()
                return
            elif isinstance(exc, NO_ANSWER):
                outcome = self.sender._failure(exc, self.target.host, self.started)
            else:
                raise exc
        except Exception:
            # the task path's caller turns a crash into a failed attempt; so does this one
            log.exception("classifying an attempt's answer failed")
            outcome = internal_error(self.started)
        self.pool.release(origin, conn)
        self.result.set_result(outcome)

    def _retry_on_new_connection(self) -> None:
        self.retry = task = asyncio.get_running_loop().create_task(self._connect_and_send())
        tasks = self.sender._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(self._retried)

    async def _connect_and_send(self) -> AttemptResult:
        sender, pool, origin = self.sender, self.pool, self.target.origin
        conn = None
        try:
            async with asyncio.timeout_at(self.deadline):
                conn = await pool.connect(origin)
            response = await sender._send(conn, self.request, self.deadline)
            return sender._classify(response, self.started, self.now)
        except NO_ANSWER as exc:
            return sender._failure(exc, self.target.host, self.started)
        finally:
            if conn is not None:
                pool.release(origin, conn)

    def _retried(self, task: asyncio.Task[AttemptResult]) -> None:
        if self.result.done() or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("an attempt's retry on a new connection failed", exc_info=exc)
            self.result.set_result(internal_error(self.started))
        else:
            self.result.set_result(task.result())

    def _ended(self, result: asyncio.Future[AttemptResult]) -> None:
        if not result.cancelled():
            return
        if not self.answer.done():
            self.answer.cancel()  # _answered gives the connection back (aborted: not reusable)
        if self.retry is not None:
            self.retry.cancel()


def _retryable(exc: OSError, conn: Http1Connection) -> bool:
    """A reused connection failed before any byte of the answer: the receiver closed it."""
    return not conn.answer_started and not isinstance(exc, TimeoutError)


def _attempt_request(target: Target, webhook: Webhook, claimed: Claimed, now: float) -> bytes:
    """One attempt's request bytes: the lane's head, the per-attempt headers, the body."""
    timestamp = int(now)
    body = claimed.body
    previous: Sequence[str] = ()
    if webhook.previous_secret and now < (webhook.previous_secret_until or 0.0):
        previous = (webhook.previous_secret,)  # rotation: both signatures for 24 h
    lines = attempt_lines(
        event_type=claimed.event_type,
        msg_id=claimed.uid,
        attempt=claimed.attempt,
        timestamp=timestamp,
        body=body,
        secret=webhook.secret,
        previous_secrets=previous,
    )
    return f"{target.head}{lines}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _time_out(answer: asyncio.Future[Response]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _result(
    started: float,
    error_class: ErrorClass,
    error: str | None,
    status: int | None = None,
    text: str = "",
    retry_after: float | None = None,
) -> AttemptResult:
    return AttemptResult(status, error, _elapsed_ms(started), text, retry_after, error_class)


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
