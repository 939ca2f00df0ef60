"""The PostgreSQL backend of the store (SPEC §10): `PgStore` and its SQL, one module per
concern, mirroring store/sqlite/. Several nodes share one database."""

from __future__ import annotations

from .facade import DEFAULT_LEASE_S, PgStore

__all__ = ["DEFAULT_LEASE_S", "PgStore"]
