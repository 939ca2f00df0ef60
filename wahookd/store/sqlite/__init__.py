"""The SQLite backend of the store: `SqliteStore` and its SQL, one module per concern."""

from __future__ import annotations

from .collection import MAX_EXTRA_WEBHOOKS, SqliteStore

__all__ = ["MAX_EXTRA_WEBHOOKS", "SqliteStore"]
