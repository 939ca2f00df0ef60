"""Schemathesis fuzzes a real daemon on 127.0.0.1 from the daemon's own OpenAPI document.

No answer may be a 5xx, and every answer must be documented: its status code, content
type, required headers and body schema. Schema-invalid requests must be refused (4xx) and
schema-valid ones accepted. Most cases carry a valid admin token; the rest go without one,
with a garbage, an expired or a viewer token, so the 401 and 403 answers are fuzzed too.

The run is bounded (MAX_EXAMPLES per operation, about 15 s in all) and derandomized, so
CI sees the same cases every time; set FUZZ_EXAMPLES to fuzz longer.

Nothing the fuzzer sends can leave the machine: the daemon has no `allow_networks`, so
the network policy refuses loopback and private targets, and every outgoing connection
of the daemon is refused before it resolves or connects (see `fence`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet
from support import make_config

from wahookd.api import openapi
from wahookd.api.routes import ROUTES
from wahookd.app import build_app
from wahookd.auth import load_keys, mint_token
from wahookd.config import Config
from wahookd.delivery.pool import ConnectionPool, Origin
from wahookd.rules import MAX_HEADERS, MAX_URL_CHARS

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))

# most cases carry a valid admin token; the others exercise the 401 and 403 answers
AUTHS = ("admin",) * 8 + ("none", "garbage", "expired", "viewer")


class ThreadedDaemon:
    """The real app on a loopback port, served by its own event loop in a thread.

    Schemathesis calls synchronously (requests), so the daemon needs a loop of its own.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        # a daemon thread: should stopping fail, it still cannot hold the interpreter's exit
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fuzz-daemon", daemon=True
        )
        self.runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    def stop(self) -> None:
        if not self.thread.is_alive():
            self.loop.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            if not self.thread.is_alive():
                self.loop.close()

    async def _start(self) -> None:
        self.runner = web.AppRunner(build_app(self.config), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, role: str = "admin", ttl_s: float = 3600) -> str:
        keys = load_keys(self.config.auth, self.config.storage.path)
        return mint_token(
            self.config.auth,
            keys,
            subject="fuzz",
            role=role,  # type: ignore[arg-type]
            sessions=None,
            ttl_s=ttl_s,
            now=time.time(),
        )

    def headers(self, auth: str) -> dict[str, str]:
        if auth == "none":
            return {}
        if auth == "garbage":
            return {"Authorization": "Bearer not.a.jwt"}
        if auth == "expired":
            return {"Authorization": f"Bearer {self.token(ttl_s=-120)}"}
        return {"Authorization": f"Bearer {self.token(role=auth)}"}


@pytest.fixture(scope="module")
def fence() -> Iterator[list[str]]:
    """Refuse every outgoing connection of the daemon, before any DNS lookup or connect.

    Fuzzed webhook URLs name arbitrary hosts; POST /api/webhook/test and the deliveries
    of fuzzed events must reach none of them.
    """
    refused: list[str] = []

    async def connect(pool: ConnectionPool, origin: Origin) -> Any:
        tls, host, port = origin
        refused.append(f"{'https' if tls else 'http'}://{host}:{port}")
        raise ConnectionRefusedError("fuzz: outgoing connections are fenced off")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(ConnectionPool, "_connect", connect)
        yield refused


STATIC_WEBHOOK = """
[[webhook]]
session = "*"
url = "https://static.example/hook"
events = ["*"]
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, fence: list[str]) -> Iterator[ThreadedDaemon]:
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")
    # No allow_networks: the network policy refuses loopback and private targets as well.
    # The static webhook serves every session: each fuzzed event becomes a delivery (the
    # scheduler runs its ladder against the fence) and every session has stats.
    d = ThreadedDaemon(make_config(tmp_path, STATIC_WEBHOOK, allow_networks=[]))
    try:
        d.start()
        yield d
    finally:
        d.stop()


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "deterministic": True,
            "max-examples": MAX_EXAMPLES,
            "database": "none",
            # unknown query parameters are ignored by design, not refused
            "allow-extra-parameters": False,
            # the test sets the Authorization header itself
            "with-security-parameters": False,
        },
        "checks": {
            # schema-valid input: done, or refused for the token (401/403), or nothing there
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404"]},
            # schema-invalid input: a documented refusal (a huge invalid body may be a 413)
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "413", "415"]
            },
        },
        "operations": [
            {
                # a URL's host (host-name rules, the network policy) is checked beyond what
                # JSON Schema can say, so a schema-valid URL may still be a 400
                "include-operation-id": [
                    "putWebhookConfig",
                    "patchWebhookConfig",
                    "testWebhook",
                ],
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "400", "401", "403", "404"]
                    }
                },
            },
            {
                # the same for the collection; and a session has at most 16 extra webhooks
                # (409), a static one cannot change (409)
                "include-operation-id": ["createWebhook", "patchWebhook", "deleteWebhook"],
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "400", "401", "403", "404", "409"]
                    }
                },
            },
        ],
    }
)
DOC = openapi.document()
schema = schemathesis.openapi.from_dict(DOC, config=CONFIG)

# Host names from the pattern are mostly not valid host names, so the 200 path of the
# URL-taking operations would rarely run: half the schema-valid URLs become plausible
# ones under the reserved `.example` name (the fence refuses them all the same).
_URL_RE = re.compile(openapi.URL_PATTERN)
_PLAUSIBLE_URLS = st.builds(
    "https://{}.example{}".format,
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"(/[A-Za-z0-9._~-]{0,12}){0,3}(\?[a-z]=[0-9]{1,4})?", fullmatch=True),
)
_HEADER_NAMES = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)
_HEADER_VALUES = st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,40}[\x21-\x7e])?", fullmatch=True)
_HEADERS = st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=MAX_HEADERS).filter(
    lambda headers: len({name.lower() for name in headers}) == len(headers)
)


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Give half the schema-valid URLs a plausible host, and some configs extra headers.

    Only a schema-valid value is replaced by another schema-valid one, so a case stays
    as valid or invalid as it was generated.
    """
    url = body.get("url") if isinstance(body, dict) else None
    if not (isinstance(url, str) and len(url) <= MAX_URL_CHARS and _URL_RE.match(url)):
        return st.just(body)
    bodies = st.builds(lambda u: {**body, "url": u}, _PLAUSIBLE_URLS)
    op = context.operation
    is_put = op is not None and op.definition.raw.get("operationId") in (
        "putWebhookConfig",
        "patchWebhookConfig",
        "createWebhook",
    )
    if is_put and body.get("headers") is None:
        bodies = st.builds(lambda b, h: {**b, "headers": h}, bodies, _HEADERS)
    return st.one_of(st.just(body), bodies)


# (operation, status) of every answer, for the coverage check at the end
ANSWERS: collections.Counter[tuple[str, int]] = collections.Counter()


def pick_auth(case: schemathesis.Case) -> str:
    """A token kind chosen by the case's content: the same case always gets the same one."""
    body = None if isinstance(case.body, NotSet) else case.body  # NotSet's repr has an id()
    if not (case.path_parameters or case.query or body is not None):
        return "admin"  # the few cases of a route without input: keep its success path
    seen = repr((case.method, case.path_parameters, case.query, case.headers, body))
    return AUTHS[zlib.crc32(seen.encode()) % len(AUTHS)]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_answers_match_the_document(case: schemathesis.Case, daemon: ThreadedDaemon) -> None:
    response = case.call_and_validate(
        base_url=daemon.base_url, headers=daemon.headers(pick_auth(case)), timeout=10
    )
    ANSWERS[(case.operation.label, response.status_code)] += 1


# operations whose success the fuzz reaches from any state (the others need a real id)
SUCCEEDS = {
    "PUT /api/webhook/config/{sessionId}",
    "GET /api/webhook/config/{sessionId}",
    "DELETE /api/webhook/config/{sessionId}",
    "POST /api/webhook/test",
    "GET /api/webhook/queue",
    "DELETE /api/webhook/queue/{sessionId}",
    "GET /api/webhook/stats/{sessionId}",
    "GET /api/webhook/activity",
    "POST /api/events",
    "GET /api/webhooks",
    "POST /api/webhooks",
    "GET /api/openapi.json",
    "GET /healthz",
    "GET /readyz",
}


def test_the_fuzz_reached_the_interesting_answers(fence: list[str]) -> None:
    """The fuzz was not vacuous: handlers ran, successes and 401s came, the fence held."""
    ran = {label for label, _ in ANSWERS}
    every = {f"{route.method} {route.path}" for route in ROUTES}
    if ran != every:
        pytest.skip("only part of the fuzz ran (-k, or a failure before)")
    for label in sorted(every):
        statuses = {status for (lab, status), _ in ANSWERS.items() if lab == label}
        assert statuses - {401, 403, 405}, (label, statuses)  # the handler itself answered
        if label in SUCCEEDS:
            assert any(200 <= s < 300 for s in statuses), (label, statuses)
        method, path = label.split(" ")
        op = DOC["paths"][path][method.lower()]
        if path.startswith("/api/") and (op.get("parameters") or op.get("requestBody")):
            # (a route without input always gets the admin token: see pick_auth)
            assert {400, 401} <= statuses, (label, statuses)
    # POST /api/webhook/test reached the fence with a plausible URL at least once
    assert any(".example" in url for url in fence), fence[:5]
