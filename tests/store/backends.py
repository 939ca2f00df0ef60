"""The store's backends side by side for tests: open one, read and write its rows raw.

Tests that exercise the `Store` protocol run on both backends (the `backend` fixture in
tests/store/conftest.py); the raw helpers take SQLite's `?` placeholders and translate
them for PostgreSQL, so a test states its query once.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from wahookd.store import SqliteStore
from wahookd.store.postgres import PgStore

AnyStore = SqliteStore | PgStore


def to_pg(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`, ... (none inside string literals here)."""
    count = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def rows(store: AnyStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of a query, as tuples, on either backend."""
    if isinstance(store, PgStore):
        return await store.fetch(to_pg(sql), *params)

    def read(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in c.execute(sql, params).fetchall()]

    return await store.read(read)


async def one(store: AnyStore, sql: str, *params: Any) -> tuple[Any, ...] | None:
    """The first row of a query, or None."""
    found = await rows(store, sql, *params)
    return found[0] if found else None


async def execute(store: AnyStore, sql: str, *params: Any) -> None:
    """Run a statement in a transaction of its own, on either backend."""
    if isinstance(store, PgStore):
        await store.execute(to_pg(sql), *params)
        return

    def write(c: sqlite3.Connection) -> None:
        c.execute(sql, params)

    await store.write(write)
