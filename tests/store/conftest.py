"""The store's tests on both backends: `open_store` opens a fresh SQLite file or a fresh
PostgreSQL database (tests/pg.py), as the `backend` parameter says."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from wahookd.store import SqliteStore
from wahookd.store.postgres import PgStore

from .backends import AnyStore

BACKENDS = ("sqlite", "postgres")

OpenStore = Callable[[], Awaitable[AnyStore]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test (the test id says which)."""
    return str(request.param)


@pytest.fixture
async def open_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenStore]:
    """Opens the store under test on a fresh database; every store it opened is closed."""
    opened: list[AnyStore] = []
    dsn = request.getfixturevalue("pg_dsn") if backend == "postgres" else None

    async def open_() -> AnyStore:
        store: AnyStore
        if dsn is not None:
            store = await PgStore.open(dsn, "normal")
        else:
            store = await SqliteStore.open(tmp_path / "w.db", "normal")
        opened.append(store)
        return store

    yield open_
    for store in opened:
        if not store._closing:  # a test may have closed its own
            await store.close()
