"""Values and errors of the store, shared by its facade and its SQL."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from ..events import Event
from ..models import DueItem

IDEMPOTENCY_WINDOW_S = 24 * 3600


class StorageUnavailable(Exception):
    """The database cannot take writes right now (busy, I/O error, full disk)."""

    retry_after_s = 5


class StorageError(Exception):
    """The database file cannot be opened or is of an unknown schema."""


def new_uid(prefix: str) -> str:
    """A unique id whose leading part grows with time, so its index appends."""
    return f"{prefix}_{time.time_ns() // 1_000_000:011x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One validated event and the webhooks it fans out to."""

    event: Event
    webhook_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ingest did with one event."""

    event_uid: str
    duplicate: bool
    deliveries: tuple[DueItem, ...]


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A session's all-time delivery statistics (SPEC §6)."""

    successful: int
    failed: int
    success_ms_total: int
    last_delivery_at: float | None
    by_event: dict[str, int]
