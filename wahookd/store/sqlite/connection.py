"""One `sqlite3.Connection` and the one thread that runs everything on it.

The store's SQL is plain synchronous functions taking the connection; `run(fn)`
calls one of them on the connection's own thread, so a whole operation (a batch of
writes, a claim with its bodies) costs one thread hop however many statements it
runs. aiosqlite (no longer a dependency) has no public way to run a callable on
its thread (its public API is one hop per statement), so the store keeps its own,
built the way aiosqlite's is: a plain thread, a SimpleQueue of calls, results
handed back with `call_soon_threadsafe`. (A single-worker ThreadPoolExecutor measured 12-20 us
slower per hop: its futures take locks and chain a second future.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar

from ... import cpu

T = TypeVar("T")

# one call for the thread: the future to settle and the function of the connection
_Call = tuple[asyncio.Future[Any], Callable[[sqlite3.Connection], Any]]


class Connection:
    """A SQLite connection owned by one thread. Create with `await Connection.open()`."""

    def __init__(self, name: str, *, unpinned: bool = False) -> None:
        self._unpinned = unpinned  # off the daemon's pinned CPU (cpu.unpinned)
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._path: Path | None = None
        self._opened: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, path: Path, name: str, *, unpinned: bool = False) -> Connection:
        """Connect (autocommit: the store issues BEGIN and COMMIT itself) on a new thread.

        `unpinned`: the thread runs on any CPU, not the one the daemon's threads share
        (server.pin_cpu): for one that seldom takes the GIL.
        """
        connection = cls(name, unpinned=unpinned)
        connection._path = path
        connection._opened = asyncio.get_running_loop().create_future()
        connection._thread.start()
        await connection._opened
        return connection

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Call fn(connection) on the connection's thread; one hop whatever fn does."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Hand fn to the thread now (it may start at once); the future gets its result."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((future, fn))
        return future

    async def close(self) -> None:
        """Close the connection on its thread, then let the thread end."""
        try:
            await self.run(sqlite3.Connection.close)
        finally:
            self._calls.put(None)
            # the thread has nothing left but the sentinel: joining does not block the loop
            self._thread.join()

    def _serve(self) -> None:
        """The thread: off the pinned CPU when asked, then _run()."""
        if not self._unpinned:
            self._run()
            return
        with cpu.unpinned():
            self._run()

    def _run(self) -> None:
        """Open the connection, then run calls until the sentinel."""
        opened = self._opened
        assert opened is not None and self._path is not None
        loop = opened.get_loop()
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
        except BaseException as exc:
            loop.call_soon_threadsafe(_set_exception, opened, exc)
            return
        loop.call_soon_threadsafe(_set_result, opened, None)
        while (call := self._calls.get()) is not None:
            future, fn = call
            try:
                result = fn(conn)
            except BaseException as exc:
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the awaiting task may have been cancelled meanwhile
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
