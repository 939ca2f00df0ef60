"""The SQLite backend of the store: `SqliteStore` and its SQL, one module per concern."""

from __future__ import annotations

from .facade import SqliteStore

__all__ = ["SqliteStore"]
