"""The delivery log: the `Store` protocol, its values and errors, and its backends.

`Store` (protocol.py) is what the rest of wahookd calls; `await open_store(storage,
cluster)` opens the backend the config names: `SqliteStore` (sqlite/, the default) or
`PgStore` (postgres/, several nodes on one database). The values and errors callers see
are in types.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import ClusterConfig, StorageConfig
from ..dsn import resolve as resolve_dsn
from .postgres import PgStore
from .protocol import Store
from .sqlite import MAX_EXTRA_WEBHOOKS, SqliteStore
from .types import (
    IDEMPOTENCY_WINDOW_S,
    AttemptRow,
    DeliveryRow,
    IngestItem,
    IngestResult,
    MinuteActivity,
    RetryResult,
    SessionStats,
    StaticRow,
    StorageError,
    StorageUnavailable,
    WebhookFields,
    WebhookHealth,
    WebhookLimitReached,
    new_uid,
)

if TYPE_CHECKING:
    # mypy checks here that both backends implement every method of the protocol
    _sqlite_store: type[Store] = SqliteStore
    _pg_store: type[Store] = PgStore


async def open_store(storage: StorageConfig, cluster: ClusterConfig | None = None) -> Store:
    """Open the delivery log the config names, creating and migrating it.

    SQLite: the file at `storage.path` (mode 0600, directory 0700). PostgreSQL: a pool
    on `storage.dsn` (or the DSN in `dsn_file`, read now), this process one node of the
    cluster with `cluster.lease`. Raises StorageError when the database cannot be opened
    or has a newer schema; its message never shows a DSN's password.
    """
    if storage.backend == "postgres":
        try:
            dsn = resolve_dsn(storage.dsn, storage.dsn_file)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StorageError(f"storage.dsn_file: {exc}") from None
        lease_s = (cluster or ClusterConfig()).lease_s
        return await PgStore.open(dsn, storage.synchronous, lease_s=lease_s)
    return await SqliteStore.open(storage.path, storage.synchronous)


__all__ = [
    "IDEMPOTENCY_WINDOW_S",
    "MAX_EXTRA_WEBHOOKS",
    "AttemptRow",
    "DeliveryRow",
    "IngestItem",
    "IngestResult",
    "MinuteActivity",
    "PgStore",
    "RetryResult",
    "SessionStats",
    "SqliteStore",
    "StaticRow",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "WebhookFields",
    "WebhookHealth",
    "WebhookLimitReached",
    "new_uid",
    "open_store",
]
