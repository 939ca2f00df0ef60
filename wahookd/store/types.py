"""Values and errors of the store, shared by its facade and its SQL."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import msgspec

from ..events import Event
from ..models import DueItem

IDEMPOTENCY_WINDOW_S = 24 * 3600
# SPEC §8: a session may have up to 16 webhooks besides its default one
MAX_EXTRA_WEBHOOKS = 16


class StorageUnavailable(Exception):
    """The database cannot take writes right now (busy, I/O error, full disk)."""

    retry_after_s = 5


class StorageError(Exception):
    """The database file cannot be opened or is of an unknown schema."""


def new_uid(prefix: str) -> str:
    """A unique id whose leading part grows with time, so its index appends."""
    return f"{prefix}_{time.time_ns() // 1_000_000:011x}{secrets.token_hex(6)}"


def new_uids(prefix: str, count: int) -> list[str]:
    """`count` ids like new_uid's, from one clock reading and one read of randomness."""
    head = f"{prefix}_{time.time_ns() // 1_000_000:011x}"
    noise = secrets.token_hex(6 * count)  # one urandom call instead of one per id
    return [head + noise[i : i + 12] for i in range(0, 12 * count, 12)]


# Structs rather than frozen dataclasses: made for every ingested event, and a frozen
# dataclass's __init__ costs six times as much. gc=False: they hold no cycles.
class IngestItem(msgspec.Struct, frozen=True, gc=False):
    """One validated event and the webhooks it fans out to.

    `order_keys`, when given, is parallel to `webhook_ids`: each delivery's ordering key
    (delivery/ordering.py), None for a webhook without ordering.
    """

    event: Event
    webhook_ids: tuple[int, ...]
    order_keys: tuple[str | None, ...] = ()


class IngestResult(msgspec.Struct, frozen=True, gc=False):
    """What ingest did with one event."""

    event_uid: str
    duplicate: bool
    deliveries: tuple[DueItem, ...]  # due now
    # queued behind an earlier delivery of their ordering key (not due: the head's
    # outcome wakes them)
    held: int = 0


class WebhookLimitReached(Exception):
    """A session has as many extra webhooks as it may (SPEC §8: 16)."""

    def __init__(self, session_id: str, limit: int) -> None:
        super().__init__(f"session '{session_id}' has {limit} extra webhooks already, the most")
        self.session_id = session_id
        self.limit = limit


@dataclass(frozen=True, slots=True)
class WebhookFields:
    """Every settable field of a session's default or extra webhook, validated."""

    url: str
    events: tuple[str, ...]
    secret: str | None
    is_active: bool
    headers: tuple[tuple[str, str], ...] = ()
    description: str | None = None
    filter_chats: tuple[str, ...] | None = None  # chat kinds; None: every chat
    ordering: str = "none"
    rate_limit: int | None = None


@dataclass(frozen=True, slots=True)
class StaticRow:
    """A config file `[[webhook]]` as the store syncs it (`key`: its identity)."""

    key: str
    session: str
    url: str
    events: tuple[str, ...]
    secret: str | None
    headers: tuple[tuple[str, str], ...] = ()
    description: str | None = None
    filter_chats: tuple[str, ...] | None = None
    ordering: str = "none"
    rate_limit: int | None = None


@dataclass(frozen=True, slots=True)
class WebhookHealth:
    """What the store knows of a webhook's recent attempts (SPEC §8 `health`)."""

    failing_since: float | None
    last_status: int | None
    last_attempt_at: float | None


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a manual retry did: the deliveries due now, and how many left `failed`.

    `parked` of the `retried` deliveries wait behind an inactive webhook (not in `due`).
    """

    due: list[DueItem]
    retried: int
    parked: int


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A session's all-time delivery statistics (SPEC §6)."""

    successful: int
    failed: int
    success_ms_total: int
    last_delivery_at: float | None
    by_event: dict[str, int]


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One logged attempt of a delivery."""

    attempt: int
    started_at: float
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery as the delivery log API shows it."""

    row_id: int
    uid: str
    event_uid: str
    session_id: str
    event_type: str
    state: str
    attempts: int
    created_at: float
    updated_at: float
    next_attempt_at: float | None
    finished_at: float | None
    last_status: int | None
    last_error: str | None
    webhook_id: int
    attempt_log: tuple[AttemptRow, ...] = ()


@dataclass(frozen=True, slots=True)
class MinuteActivity:
    """Deliveries that finished in one minute (`minute`: Unix seconds at its start)."""

    minute: int
    delivered: int
    failed: int
