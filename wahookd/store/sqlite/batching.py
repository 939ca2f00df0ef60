"""Batching: many operations per transaction, many rows per statement.

`apply_batch` runs the group commit's operations in one transaction (the facade's
writer queue feeds it); `padded_statements`, `insert_rows` and `update_rows` send
many rows per statement. Both exist because every statement, and every row
fetched, is a round trip of the GIL between the writer thread and the busy event
loop (measured: issue 6).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any

# ids per `IN (...)` query; far below SQLite's limit on bound parameters
IN_CHUNK = 500

# rows per multi-row statement at most (fewer when the SQLite build allows fewer bound
# parameters, 999 before 3.32): a 100-event request's rows go in one statement per
# table, not two (measured: (c) batched ~4 % faster than with 64)
ROWS_PER_STATEMENT = 256


def padded_in(values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`IN (...)`'s marks and parameters for values (not empty), padded to a power of two.

    The padding repeats the first value, which an IN list ignores. So a handful of
    statement texts serve every batch size, and they stay in the connection's statement
    cache (128 statements) instead of being compiled again for each new size.
    """
    params = list(values)
    params += [params[0]] * ((1 << (len(params) - 1).bit_length()) - len(params))
    return ",".join("?" * len(params)), params


# ---------------------------------------------------------------- group commit
def is_storage_fault(exc: BaseException) -> bool:
    """True when exc means the database cannot take writes, not that one operation is wrong."""
    # OperationalError covers "database is locked", "disk I/O error" and
    # "database or disk is full"; DatabaseError covers a corrupt or vanished file.
    return isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError
    )


def apply_batch(
    conn: sqlite3.Connection, fns: Iterable[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run every operation in one transaction; one op's bug does not sink the others.

    Returns (ok, value or exception) per operation. A storage fault (busy, I/O
    error, full disk) rolls the whole transaction back and raises: nothing of the
    batch is committed.

    The batch runs first without a savepoint per operation: two statements fewer for
    each, and every statement is a GIL round trip (the module's docstring). When an
    operation fails otherwise (a bug, a change it refuses), that transaction is rolled
    back whole and the batch runs again, a savepoint around each operation, so only
    that one fails. So an operation may run twice, its first run rolled back: it keeps
    its effects to the database and its return value (the facade's writes do).
    """
    fns = list(fns)
    if len(fns) == 1:
        return [_apply_one(conn, fns[0])]
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [(True, fn(conn)) for fn in fns]
    except Exception as exc:
        _rollback(conn)
        if is_storage_fault(exc):
            raise
        return _apply_each(conn, fns)
    except BaseException:
        _rollback(conn)
        raise
    _commit(conn)
    return results


def _apply_each(
    conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """apply_batch with a savepoint around each operation: a failing one rolls back alone."""
    results: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn in fns:
            conn.execute("SAVEPOINT op")
            try:
                value = fn(conn)
            except Exception as exc:
                if is_storage_fault(exc):
                    raise
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((False, exc))
            else:
                conn.execute("RELEASE op")
                results.append((True, value))
    except BaseException:
        _rollback(conn)
        raise
    _commit(conn)
    return results


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _apply_one(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]
) -> tuple[bool, Any]:
    """apply_batch for a lone operation (the usual case): no savepoint needed.

    Every statement is a GIL round trip for this thread, and two fewer per commit
    shorten each commit while the event loop is busy.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        value = fn(conn)
    except Exception as exc:
        _rollback(conn)
        if is_storage_fault(exc):
            raise
        return (False, exc)
    except BaseException:
        _rollback(conn)
        raise
    _commit(conn)
    return (True, value)


# --------------------------------------------------------- multi-row statements
def padded_statements(
    conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]], sql: Callable[[int], str]
) -> None:
    """Run `sql(size)` once per rows_per_statement() rows, VALUES padded with NULL rows to `size`.

    One statement runs as one sqlite3_step, so the writer thread gives the GIL up and
    takes it back once per statement rather than once per row (executemany, which
    waits on the busy event loop every time). Sizes are powers of two, so a handful of
    statements serve every batch from the statement cache; the statements skip the
    NULL rows.
    """
    if not rows:
        return
    per_statement = rows_per_statement(conn, len(rows[0]))
    for lo in range(0, len(rows), per_statement):
        chunk = rows[lo : lo + per_statement]
        size = 1 << (len(chunk) - 1).bit_length()
        params = list(chain.from_iterable(chunk))
        params += [None] * (len(chunk[0]) * (size - len(chunk)))
        conn.execute(sql(size), params)


def rows_per_statement(conn: sqlite3.Connection, width: int) -> int:
    """ROWS_PER_STATEMENT, or the largest power of two of rows this build can bind."""
    fit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    return min(ROWS_PER_STATEMENT, 1 << (max(fit, 1).bit_length() - 1))


def insert_rows(conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`insert` (INSERT INTO table [(columns)]) of rows whose first value is never NULL."""
    if rows:
        width = len(rows[0])
        padded_statements(conn, rows, lambda size: _insert_sql(insert, width, size))


@functools.cache
def _insert_sql(insert: str, width: int, count: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return f"{insert} SELECT * FROM (VALUES {','.join([row] * count)}) WHERE column1 IS NOT NULL"


def update_rows(conn: sqlite3.Connection, update: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`update` (an UPDATE ... FROM (VALUES {rows}) AS v) of rows of equal width.

    The statement must match no row for the NULL padding rows (join on a column
    that is never NULL in the table).
    """
    if rows:
        width = len(rows[0])
        padded_statements(conn, rows, lambda size: _update_sql(update, width, size))


@functools.cache
def _update_sql(update: str, width: int, count: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return update.format(rows=",".join([row] * count))
