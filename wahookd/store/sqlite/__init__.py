"""The SQLite backend of the store: `SqliteStore` and its SQL, one module per concern."""

from __future__ import annotations

from ..types import MAX_EXTRA_WEBHOOKS
from .facade import SqliteStore

__all__ = ["MAX_EXTRA_WEBHOOKS", "SqliteStore"]
