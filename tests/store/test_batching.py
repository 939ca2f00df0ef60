"""The group commit: its transaction, its multi-row statements, and when a batch starts."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from wahookd.models import DueItem
from wahookd.store import SqliteStore
from wahookd.store.sqlite.batching import (
    ROWS_PER_STATEMENT,
    apply_batch,
    insert_rows,
    is_storage_fault,
    rows_per_statement,
    update_rows,
)


def memory() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    return conn


@pytest.mark.parametrize("count", [1, 2, 3, 63, 64, 65, 130])
def test_insert_rows_pads_to_powers_of_two_and_inserts_each_row_once(count: int) -> None:
    conn = memory()
    rows = [(i + 1, f"v{i}") for i in range(count)]
    insert_rows(conn, "INSERT INTO t (id, v)", rows)
    assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == rows


def test_update_rows_matches_only_the_given_ids() -> None:
    conn = memory()
    insert_rows(conn, "INSERT INTO t (id, v)", [(i, "old") for i in range(1, 6)])
    update_rows(
        conn,
        "UPDATE t SET v = v.column1 FROM (VALUES {rows}) AS v WHERE t.id = v.column2",
        [("new", 2), ("new", 4), ("new", 5)],
    )
    got = conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    assert got == [(1, "old"), (2, "new"), (3, "old"), (4, "new"), (5, "new")]


def test_a_failing_operation_rolls_back_alone() -> None:
    conn = memory()

    def bad(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (2, 'lost')")
        raise ValueError("a bug in one operation")

    results = apply_batch(
        conn,
        [
            lambda c: c.execute("INSERT INTO t VALUES (1, 'a')").rowcount,
            bad,
            lambda c: c.execute("INSERT INTO t VALUES (3, 'c')").rowcount,
        ],
    )
    assert [ok for ok, _ in results] == [True, False, True]
    assert isinstance(results[1][1], ValueError)
    assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (3,)]
    assert not conn.in_transaction


@pytest.mark.parametrize("ops", [1, 3])
def test_a_storage_fault_sinks_the_whole_batch(ops: int) -> None:
    conn = memory()

    def full(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (9, 'x')")
        raise sqlite3.OperationalError("database or disk is full")

    fns = [
        lambda c: c.execute("INSERT INTO t VALUES (1, 'a')"),
        lambda c: c.execute("INSERT INTO t VALUES (2, 'b')"),
        full,
    ]
    with pytest.raises(sqlite3.OperationalError):
        apply_batch(conn, fns[-ops:])
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    assert not conn.in_transaction


def test_storage_faults_are_database_states_not_bad_operations() -> None:
    assert is_storage_fault(sqlite3.OperationalError("database is locked"))
    assert is_storage_fault(sqlite3.DatabaseError("file is not a database"))
    assert not is_storage_fault(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_storage_fault(ValueError("bug"))


async def test_a_write_reaches_the_writer_thread_before_the_loop_moves_on(tmp_path: Path) -> None:
    # the thread starts inserting while the loop parses the requests that came with it
    store = await SqliteStore.open(tmp_path / "w.db")
    try:
        started, release = threading.Event(), threading.Event()

        def first(conn: sqlite3.Connection) -> int:
            started.set()
            release.wait(10)
            return 1

        one = asyncio.ensure_future(store.write(first))
        await asyncio.sleep(0)  # write() ran: its batch is on the thread already
        # the loop blocks here, on no await: only the thread itself can set `started`
        assert started.wait(5), "the batch waited for another pass of the loop"
        two = asyncio.ensure_future(store.write(lambda conn: 2))  # waits for the next batch
        await asyncio.sleep(0.05)
        assert not two.done()
        release.set()
        assert await asyncio.gather(one, two) == [1, 2]
        assert store.commits >= 2
    finally:
        release.set()
        await store.close()


def test_a_batch_runs_again_with_savepoints_only_when_an_operation_fails() -> None:
    conn = memory()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    runs = {"a": 0, "c": 0}

    def op(name: str, row: int) -> Callable[[sqlite3.Connection], int]:
        def run(c: sqlite3.Connection) -> int:
            runs[name] += 1
            return c.execute(f"INSERT INTO t VALUES ({row}, '{name}')").rowcount

        return run

    assert apply_batch(conn, [op("a", 1), op("c", 3)]) == [(True, 1), (True, 1)]
    assert not any("SAVEPOINT" in s for s in statements)  # all went well: one pass, no savepoint
    assert runs == {"a": 1, "c": 1}

    def bad(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (2, 'lost')")
        raise ValueError("a bug in one operation")

    statements.clear()
    results = apply_batch(conn, [op("a", 4), bad, op("c", 6)])
    assert [ok for ok, _ in results] == [True, False, True]
    assert runs == {"a": 3, "c": 2}  # "a" ran twice, its first run rolled back; "c" once
    assert any("SAVEPOINT" in s for s in statements)
    assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (3,), (4,), (6,)]
    assert not conn.in_transaction


async def test_a_write_that_ran_twice_announces_what_it_woke_once(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "w.db")
    announced: list[list[DueItem]] = []
    store.on_due = lambda items: announced.append(list(items))
    try:
        started, release = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            started.set()
            release.wait(10)

        def bad(conn: sqlite3.Connection) -> None:
            raise ValueError("a bug in one operation")

        def wakes(conn: sqlite3.Connection, woken: list[DueItem]) -> str:
            woken.append(DueItem(1.0, 7, 3))
            return "woke one"

        holding = asyncio.ensure_future(store.write(hold))
        assert await asyncio.to_thread(started.wait, 5)
        # both wait for the next batch: it runs `wakes` once, fails on `bad`, runs it again
        waking = asyncio.ensure_future(store._write_waking(wakes))
        failing = asyncio.ensure_future(store.write(bad))
        await asyncio.sleep(0)
        release.set()
        await holding
        assert await waking == "woke one"
        with pytest.raises(ValueError):
            await failing
        assert announced == [[DueItem(1.0, 7, 3)]]
    finally:
        release.set()
        await store.close()


def test_a_build_that_binds_fewer_parameters_gets_smaller_statements() -> None:
    conn = memory()
    assert rows_per_statement(conn, 2) == ROWS_PER_STATEMENT
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # SQLite before 3.32
    assert rows_per_statement(conn, 11) == 64  # 90 rows fit: the power of two below
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    rows = [(i + 1, f"v{i}") for i in range(700)]  # 2 parameters a row: 256 per statement
    insert_rows(conn, "INSERT INTO t (id, v)", rows)
    assert len(statements) == 3  # 256 + 256 + 188 (padded to 256)
    assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == rows
