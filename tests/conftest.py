"""Shared fixtures: a test CA, a TLS receiver, a daemon wired to trust it; event loops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest
import support
import trustme
import uvloop
from support import Receiver

# a real PostgreSQL server for the session and a database per test (pg_server, pg_dsn)
pytest_plugins = ["pg"]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# the daemon runs on uvloop, whose transports differ from asyncio's (its SSL transport is
# not an asyncio.Transport, for one): the tests of the sender's sockets run on both loops
BOTH_LOOPS: Mapping[str, LoopFactory] = {
    "asyncio": asyncio.SelectorEventLoop,
    "uvloop": uvloop.new_event_loop,
}
ON_BOTH_LOOPS = frozenset(  # under tests/
    {"delivery/test_http1.py", "delivery/test_hostile.py", "delivery/test_tls.py"}
)
TESTS_DIR = Path(__file__).parent
# every other async test: the loop pytest-asyncio makes without the hook; a single factory
# leaves the test id as it was
DEFAULT_LOOP: Mapping[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}


@pytest.fixture(params=["sqlite", "postgres"])
def daemon_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's in-process daemons on SQLite, then on a fresh PostgreSQL database.

    For modules with `pytestmark = pytest.mark.usefixtures("daemon_backend")`: their
    `make_config` names the backend (support.BACKEND_DSN). Without a PostgreSQL server
    the postgres run skips with the reason (tests/pg.py).
    """
    if request.param == "postgres":
        support.BACKEND_DSN = request.getfixturevalue("pg_dsn")
    try:
        yield str(request.param)
    finally:
        support.BACKEND_DSN = None


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """pytest-asyncio's hook: the event loops an async test runs on, by name (the id part)."""
    return (
        BOTH_LOOPS if item.path.relative_to(TESTS_DIR).as_posix() in ON_BOTH_LOOPS else DEFAULT_LOOP
    )


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
async def receiver(ca: trustme.CA) -> AsyncIterator[Receiver]:
    """A running TLS receiver on 127.0.0.1."""
    rx = Receiver(ca)
    await rx.start()
    yield rx
    await rx.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh directory for a daemon's files."""
    return tmp_path
