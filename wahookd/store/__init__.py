"""The delivery log: the `Store` protocol, its values and errors, and its backends.

`Store` (protocol.py) is what the rest of wahookd calls; `await Store.open(path,
synchronous)` opens the one backend there is, `SqliteStore` (sqlite/). The values
and errors callers see are in types.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    # mypy checks here that the SQLite backend implements every method of the protocol
    _sqlite_store: type[Store] = SqliteStore

__all__ = [
    "IDEMPOTENCY_WINDOW_S",
    "MAX_EXTRA_WEBHOOKS",
    "AttemptRow",
    "DeliveryRow",
    "IngestItem",
    "IngestResult",
    "MinuteActivity",
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
]
