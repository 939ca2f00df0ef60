"""The connection pool, what counts as a storage fault, and a DSN safe to show.

A node holds one asyncpg pool. Every store call takes one connection from it for one
transaction (or one read), so concurrent requests run side by side and PostgreSQL's
own group commit shares the WAL flush of transactions that commit together.
"""

from __future__ import annotations

from typing import Any, Literal

import asyncpg

from ...dsn import redact as redact_dsn

__all__ = ["connect", "create_pool", "is_storage_fault", "redact_dsn"]

# connections per node: a few for the API's reads and writes beside the scheduler's
POOL_MIN = 2
POOL_MAX = 10
# a statement that waits this long on a lock or a busy server is a storage fault (503)
STATEMENT_TIMEOUT_MS = 30_000
# how long connecting may take before the store gives up (a 503, not a hang)
CONNECT_TIMEOUT_S = 10.0
# a transaction left open this long with nothing sent (its node stalled: SIGSTOP, a VM
# paused) is ended by the server, and its row and advisory locks with it; otherwise
# every other node's statement on those rows waits out STATEMENT_TIMEOUT_MS, fails
# and waits again, for as long as the node stays frozen. A claim sets a shorter one
# for itself (limits.py, from the lease)
IDLE_IN_TRANSACTION_MS = 10_000

# connection problems and a server that cannot work right now: a 503 with Retry-After,
# never a lost or half-written batch (the transaction rolled back, or never began)
_FAULTS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,
    asyncpg.PostgresConnectionError,  # 08xxx
    asyncpg.InterfaceError,  # the connection closed under the call
    asyncpg.exceptions.InternalClientError,  # a connection the server dropped while idle
    asyncpg.InsufficientResourcesError,  # 53xxx: disk full, out of memory, too many connections
    asyncpg.OperatorInterventionError,  # 57xxx: shutdown, cannot connect now, cancelled
    asyncpg.TransactionRollbackError,  # 40xxx: serialization failure, deadlock: try again
    asyncpg.ReadOnlySQLTransactionError,  # a standby (failover in progress)
)


def is_storage_fault(exc: BaseException) -> bool:
    """True when exc means the database cannot serve now, not that the operation is wrong."""
    return isinstance(exc, _FAULTS)


def _settings(synchronous: Literal["full", "normal"], name: str = "wahookd") -> dict[str, str]:
    return {
        "statement_timeout": str(STATEMENT_TIMEOUT_MS),
        "synchronous_commit": "on" if synchronous == "full" else "off",
        "application_name": name,
    }


async def connect(dsn: str) -> Any:
    """One connection outside the pool (the LISTEN connection).

    It commits only its wake-up signals: with `synchronous_commit = off`, so a signal
    never waits for a WAL flush (a signal lost in a server crash costs a poll's delay).
    """
    return await asyncpg.connect(
        dsn,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=STATEMENT_TIMEOUT_MS / 1000 + 5,
        # its own name: pg_stat_activity tells it from the pool's connections
        server_settings=_settings("normal", "wahookd-listen"),
    )


async def create_pool(dsn: str, synchronous: Literal["full", "normal"]) -> Any:
    """An asyncpg pool; "normal" commits without waiting for the WAL flush.

    With `synchronous_commit = off` a commit survives a crash of wahookd but not of the
    PostgreSQL server (its last few hundred milliseconds), as "normal" does for SQLite.
    """
    settings = _settings(synchronous)
    settings["idle_in_transaction_session_timeout"] = str(IDLE_IN_TRANSACTION_MS)
    return await asyncpg.create_pool(
        dsn,
        min_size=POOL_MIN,
        max_size=POOL_MAX,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=STATEMENT_TIMEOUT_MS / 1000 + 5,
        server_settings=settings,
        # our statements are few and fixed: asyncpg's prepared-statement cache serves them
        statement_cache_size=256,
    )
