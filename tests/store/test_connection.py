"""A SQLite connection on its own thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from wahookd.store.sqlite.connection import Connection


async def test_calls_run_in_order_on_one_thread_that_is_not_the_loops(tmp_path: Path) -> None:
    conn = await Connection.open(tmp_path / "x.db", "test-conn")
    threads = [await conn.run(lambda _: threading.current_thread().name) for _ in range(3)]
    assert threads == ["test-conn"] * 3
    assert threading.current_thread().name != "test-conn"
    await conn.run(lambda c: c.execute("CREATE TABLE t (x)"))
    assert await conn.run(lambda c: c.in_transaction) is False  # autocommit
    await conn.close()
    assert not any(t.name == "test-conn" for t in threading.enumerate())


async def test_an_exception_reaches_the_caller_and_the_connection_goes_on(tmp_path: Path) -> None:
    conn = await Connection.open(tmp_path / "x.db", "test-conn")
    with pytest.raises(sqlite3.OperationalError):
        await conn.run(lambda c: c.execute("SELECT * FROM nowhere"))
    assert await conn.run(lambda c: c.execute("SELECT 1").fetchone()) == (1,)
    await conn.close()


async def test_a_connection_that_cannot_open_raises(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await Connection.open(tmp_path / "missing" / "x.db", "test-conn")
