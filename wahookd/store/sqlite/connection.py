"""One `sqlite3.Connection` and the one thread that runs everything on it.

The store's SQL is plain synchronous functions taking the connection; `run(fn)`
calls one of them on the connection's own thread, so a whole operation (a batch of
writes, a claim with its bodies) costs one thread hop however many statements it
runs. aiosqlite has no public way to run a callable on its thread (only one hop per
statement), so the store keeps its own: a single-worker `ThreadPoolExecutor`, the
connection opened, used and closed on that worker and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Connection:
    """A SQLite connection owned by one worker thread. Create with `await Connection.open()`."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self._executor = executor
        self._conn = conn

    @classmethod
    async def open(cls, path: Path, name: str) -> Connection:
        """Connect (autocommit: the store issues BEGIN and COMMIT itself) on a new thread."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        connect = functools.partial(sqlite3.connect, path, isolation_level=None)
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Call fn(connection) on the connection's thread; one hop whatever fn does."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def close(self) -> None:
        """Close the connection on its thread, then let the thread go."""
        try:
            await self.run(sqlite3.Connection.close)
        finally:
            # the worker is idle now: joining it does not block the loop
            self._executor.shutdown(wait=True)
