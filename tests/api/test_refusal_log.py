"""A refused token costs one warning per reason every 10 s, naming no part of the token."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jwt
import pytest
from support import Daemon, make_config, running_daemon

from wahookd.clock import FakeClock
from wahookd.logs import RateLimitedLog

SECRET = "s" * 64  # make_config's jwt_secret
QUEUE = "/api/webhook/queue"


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "wahookd.auth"]


async def get(d: Daemon, path: str, token: str | None, method: str = "GET") -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    resp = await d.client.request(method, path, headers=headers)
    await resp.read()
    return resp.status


def test_rate_limit_per_key_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("wahookd.test"), clock, interval_s=10)
    caplog.set_level(logging.WARNING, logger="wahookd.test")
    for _ in range(5):
        limited.warning("a", "line a", extra={})
    limited.warning("b", "line b", extra={})  # another key has its own budget
    clock.advance(9.9)
    limited.warning("a", "line a", extra={})
    assert [r.getMessage() for r in caplog.records] == ["line a", "line b"]
    clock.advance(0.1)
    limited.warning("a", "line a", extra={})
    limited.warning("b", "line b", extra={})
    assert [r.getMessage() for r in caplog.records[2:]] == [
        "line a (5 more like it since the last such line, not logged)",
        "line b",
    ]
    assert [r.suppressed for r in caplog.records] == [0, 0, 5, 0]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


async def test_refused_tokens_are_logged_once_per_reason_per_10_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(time.time())
    caplog.set_level(logging.INFO, logger="wahookd")
    expired = jwt.encode({"exp": int(time.time()) - 3600}, SECRET, algorithm="HS256")
    async with running_daemon(make_config(tmp_path), clock) as d:
        for _ in range(3):
            assert await get(d, QUEUE, expired) == 401
        assert await get(d, QUEUE, None) == 401
        viewer = d.token(role="viewer")
        assert await get(d, "/api/webhook/queue/s1", viewer, "DELETE") == 403
        lines = [r.getMessage() for r in refusals(caplog)]
        assert lines == [
            "refused a token (401 expired) on GET /api/webhook/queue from 127.0.0.1",
            "refused a token (401 missing) on GET /api/webhook/queue from 127.0.0.1",
            "refused a token (403 role_too_low) on DELETE /api/webhook/queue/{sessionId}"
            " from 127.0.0.1",
        ]
        assert all(r.levelno == logging.WARNING for r in refusals(caplog))
        assert refusals(caplog)[0].client == "127.0.0.1"  # type: ignore[attr-defined]
        clock.advance(5)
        assert await get(d, QUEUE, expired) == 401
        assert len(refusals(caplog)) == 3
        clock.advance(5)
        assert await get(d, QUEUE, expired) == 401
        last = refusals(caplog)[-1]
        assert last.getMessage() == (
            "refused a token (401 expired) on GET /api/webhook/queue from 127.0.0.1"
            " (3 more like it since the last such line, not logged)"
        )
        # an accepted token logs nothing here
        assert await get(d, QUEUE, d.token()) == 200
        assert len(refusals(caplog)) == 4


async def test_the_log_never_shows_the_token_or_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(time.time())
    tokens = [
        jwt.encode({"exp": now - 3600, "sub": "alice"}, SECRET, algorithm="HS256"),  # expired
        jwt.encode({"exp": now + 600}, "w" * 64, algorithm="HS256"),  # wrong key
        jwt.encode({"exp": now + 600}, SECRET, algorithm="HS512"),  # alg not accepted
        jwt.encode({"exp": "9999999999", "sub": "bob"}, SECRET, algorithm="HS256"),
        jwt.encode({"exp": now + 600, "role": "root-7f3a"}, SECRET, algorithm="HS256"),
        jwt.encode({"exp": now + 600, "role": "viewer"}, SECRET, algorithm="HS256"),  # 403
        "not-a-jwt-9c1e",
        "x" * 9000,
    ]
    async with running_daemon(make_config(tmp_path), FakeClock(now)) as d:
        for token in tokens:
            status = await get(d, "/api/webhook/queue/s1", token, "DELETE")
            assert status in (401, 403)
            d.state.clock.advance(11)  # type: ignore[attr-defined]  # every refusal logged
        assert await get(d, "/api/webhook/queue/s1", None, "DELETE") == 401
        assert await get(d, "/api/webhook/queue/s1", "", "DELETE") == 401
    logged = caplog.text + "".join(repr(vars(r)) for r in caplog.records)
    assert len(refusals(caplog)) == len(tokens) + 2
    for token in tokens:
        for part in token.split("."):
            assert part[:16] not in logged
    for claim in ("alice", "bob", "root-7f3a", "HS512", "9999999999"):
        assert claim not in logged
    assert SECRET not in logged and SECRET[:16] not in logged
