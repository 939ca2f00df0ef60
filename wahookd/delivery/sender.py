"""One HTTP attempt: build the request, POST it with aiohttp's client, classify the answer."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.resolver import DefaultResolver

from ..config import DeliveryConfig
from ..models import AttemptResult, Claimed, ErrorClass, Webhook
from .attempt_errors import Attempt, describe, status_text, timeout_text
from .headers import delivery_headers
from .netpolicy import PolicyResolver, RefusedTarget, check_url
from .retry import parse_retry_after

RESPONSE_KEEP_BYTES = 1024
PREVIOUS_SECRET_GRACE_S = 24 * 3600


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification always on: the system store plus the configured extra CA bundle."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def attempt_headers(
    webhook: Webhook, claimed: Claimed, timestamp: int, now: float
) -> dict[str, str]:
    """Every header of one attempt of a claimed delivery (SPEC §5)."""
    previous: Sequence[str] = ()
    if webhook.previous_secret and now < (webhook.previous_secret_until or 0.0):
        previous = (webhook.previous_secret,)  # rotation: both signatures for 24 h
    return delivery_headers(
        event_type=claimed.event_type,
        msg_id=claimed.uid,
        attempt=claimed.attempt,
        timestamp=timestamp,
        body=claimed.body,
        secret=webhook.secret,
        previous_secrets=previous,
        custom=webhook.headers,
    )


# URL form and literal-address checks are pure: remember the URLs that passed
MAX_CHECKED_URLS = 10_000


class Sender:
    """Makes attempts over one pooled aiohttp client session. `await start()`, `close()`.

    Every connection goes through the network policy (netpolicy.py): `resolver` (aiohttp's
    default when None) answers the lookups, and the policy keeps only allowed addresses.
    """

    def __init__(self, config: DeliveryConfig, resolver: AbstractResolver | None = None) -> None:
        self.config = config
        self._ssl = _ssl_for(config)
        # URLs that passed check_url under this config, parsed once for aiohttp
        self._checked: dict[str, yarl.URL] = {}
        self._upstream_resolver = resolver
        self._policy: PolicyResolver | None = None
        self._session: aiohttp.ClientSession | None = None
        # sessions replaced by a policy change, each closed once its attempts are over
        self._retiring: set[asyncio.Task[None]] = set()

    def reconfigure(self, config: DeliveryConfig) -> None:
        """Use a new delivery policy (SIGHUP) from the next attempt on."""
        old = self.config
        self._checked = {}
        if config.ca_file != old.ca_file:
            self._ssl = _ssl_for(config)
        self.config = config
        if self._policy is not None:
            self._policy.allow_networks = config.allow_networks
        if config.allow_networks != old.allow_networks and self._session is not None:
            # pooled connections and cached lookups were vetted under the old policy
            retired, self._session = self._session, self._open_session()
            task = asyncio.create_task(_close_later(retired, old.timeout_s + 1.0))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def start(self) -> None:
        """Open the connection pool."""
        upstream = self._upstream_resolver or DefaultResolver()
        self._policy = PolicyResolver(upstream, self.config.allow_networks)
        self._session = self._open_session()

    def _open_session(self) -> aiohttp.ClientSession:
        assert self._policy is not None
        connector = aiohttp.TCPConnector(
            limit=self.config.concurrency + 16,
            limit_per_host=0,
            ttl_dns_cache=10,
            resolver=self._policy,
            socket_factory=self._policy.open_socket,
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            # our own whole-attempt deadline governs; no per-phase limits besides it
            timeout=aiohttp.ClientTimeout(total=None),
            # never through an environment proxy: the policy must see the real target
            trust_env=False,
            # receivers' cookies are never sent back: no jar to filter at every request
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        """Close the connection pool."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._policy is not None:
            await self._policy.close()
            self._policy = None

    async def attempt(self, webhook: Webhook, claimed: Claimed, now: float) -> AttemptResult:
        """Make one attempt of a claimed delivery to the webhook's current config."""
        headers = attempt_headers(webhook, claimed, int(now), now)
        return await self.post(webhook.url, claimed.body, headers, now)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], now: float
    ) -> AttemptResult:
        """POST body to url within the attempt timeout; never raises for network trouble."""
        assert self._session is not None, "Sender.start() was not awaited"
        started = time.monotonic()
        retry_after_header: str | None = None
        target: yarl.URL | None = None
        try:
            # again after every reload: the policy may have changed since the URL was set
            target = self._checked.get(url)
            if target is None:
                check_url(
                    url,
                    require_https=self.config.require_https,
                    allow_networks=self.config.allow_networks,
                )
                target = yarl.URL(url)
                if len(self._checked) < MAX_CHECKED_URLS:
                    self._checked[url] = target
            async with asyncio.timeout(self.config.timeout_s):
                async with self._session.post(
                    target, data=body, headers=headers, allow_redirects=False, ssl=self._ssl
                ) as resp:
                    retry_after_header = resp.headers.get("Retry-After")
                    kept = await _read_capped(resp, self.config.max_response)
                    status = resp.status
        except TimeoutError:
            return _result(started, "timeout", timeout_text(self.config.timeout_s))
        # what the network, the receiver or the policy can cause; a bug in us propagates
        except (RefusedTarget, aiohttp.ClientError, OSError, HttpProcessingError) as exc:
            host = (target.raw_host or "") if target is not None else ""
            error_class, why = describe(exc, Attempt(host, self.config.timeout_s))
            return _result(started, error_class, why)
        text = kept[:RESPONSE_KEEP_BYTES].decode("utf-8", "replace")
        error = None if 200 <= status < 300 else status_text(status)
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(retry_after_header, now)
        return _result(started, _status_class(status), error, status, text, retry_after)


def _result(
    started: float,
    error_class: ErrorClass,
    error: str | None,
    status: int | None = None,
    text: str = "",
    retry_after: float | None = None,
) -> AttemptResult:
    elapsed_ms = round((time.monotonic() - started) * 1000)
    return AttemptResult(status, error, elapsed_ms, text, retry_after, error_class)


async def _close_later(session: aiohttp.ClientSession, delay_s: float) -> None:
    """Close a retired session once every attempt on it has met its timeout."""
    try:
        await asyncio.sleep(delay_s)
    finally:
        await session.close()


def _ssl_for(config: DeliveryConfig) -> ssl.SSLContext:
    return make_ssl_context(str(config.ca_file) if config.ca_file else None)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read at most `limit` bytes of the body; a longer one is cut and its connection closed."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
    if not resp.content.at_eof():
        # the rest is never read, so this connection cannot be reused
        resp.close()
    return bytes(buf)


def _status_class(status: int) -> ErrorClass:
    if 200 <= status < 300:
        return "2xx"
    if 300 <= status < 400:
        return "3xx"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"
