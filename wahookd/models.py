"""Plain values that flow between the store, the scheduler and the sender."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import msgspec


class State(enum.StrEnum):
    """A delivery's state, as stored and as the queue API counts it (SPEC §6)."""

    PENDING = "pending"  # due now (or parked behind an inactive webhook), not in flight
    PROCESSING = "processing"  # an attempt is in flight
    RETRYING = "retrying"  # failed at least once, waiting for its next attempt
    FAILED = "failed"  # no attempts left, or 410 Gone
    DELIVERED = "delivered"  # a 2xx arrived; not part of the queue


QUEUE_STATES: tuple[State, ...] = (
    State.PENDING,
    State.PROCESSING,
    State.FAILED,
    State.RETRYING,
)
CLEARABLE_STATES: tuple[State, ...] = (State.PENDING, State.RETRYING, State.FAILED)


WebhookKind = Literal["session", "extra", "static"]


@dataclass(frozen=True, slots=True)
class Webhook:
    """A delivery target: a session's default webhook (kind "session", the guide's
    /api/webhook/config route), one of its extra webhooks ("extra", /api/webhooks), or a
    static one from the config file ("static")."""

    id: int
    kind: WebhookKind
    session: str  # the session id, or "*" for a static webhook serving every session
    url: str
    events: tuple[str, ...]
    secret: str | None
    headers: tuple[tuple[str, str], ...]
    is_active: bool
    created_at: float
    updated_at: float
    static_key: str | None = None
    previous_secret: str | None = None
    previous_secret_until: float | None = None
    public_id: str = ""  # "wh_...": the id the API and the CLI show
    description: str | None = None
    filter_chats: tuple[str, ...] | None = None  # chat kinds it wants; None: every chat
    ordering: str = "none"  # "none" | "chat" | "session" (delivery/ordering.py)
    rate_limit: int | None = None  # attempts per second; None: no limit

    @property
    def is_default(self) -> bool:
        """True for the session's default webhook (the guide's /api/webhook/config)."""
        return self.kind == "session"


@dataclass(slots=True)
class DueItem:
    """A queued delivery the scheduler knows about: when it is due and where it goes."""

    due_at: float
    id: int
    webhook_id: int


class Claimed(msgspec.Struct, frozen=True, gc=False):
    """A delivery moved to `processing` for one attempt.

    This and the two below are msgspec Structs: one of each per attempt, and a
    frozen dataclass costs ~14x more to build.
    """

    id: int
    uid: str
    webhook_id: int
    session_id: str
    event_type: str
    attempt: int  # the number of the attempt being made, from 1
    body: bytes
    # attempts made in the current ladder run: a manual retry starts a new run
    # while X-Webhook-Attempt keeps counting
    cycle_attempt: int = 0
    # its ordering key (delivery/ordering.py): its final outcome wakes the key's next
    order_key: str | None = None

    @property
    def ladder_position(self) -> int:
        """Attempts made in this ladder run, this one included."""
        return self.cycle_attempt or self.attempt


OutcomeKind = Literal["delivered", "retry", "failed", "gone"]
ErrorClass = Literal["2xx", "3xx", "4xx", "5xx", "timeout", "network", "tls", "refused"]


class AttemptResult(msgspec.Struct, frozen=True, gc=False):
    """What one HTTP attempt produced."""

    status_code: int | None
    error: str | None
    duration_ms: int
    response_body: str  # the first 1 KiB, decoded leniently
    retry_after_s: float | None
    error_class: ErrorClass

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """An attempt's result and what it decides for the delivery."""

    claimed: Claimed
    started_at: float
    result: AttemptResult
    kind: OutcomeKind
    next_attempt_at: float | None  # set when kind == "retry"
