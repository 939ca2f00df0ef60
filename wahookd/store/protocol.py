"""The `Store` protocol: what the rest of wahookd asks of the delivery log.

Every backend implements it (SQLite in `sqlite/`, PostgreSQL in `postgres/`); `open_store`
(store/__init__.py) opens the one the config names.
The docstrings state the invariants the scheduler, the API and the pruner rely
on; a backend that keeps them can be swapped in without touching its callers.

Terms. A delivery is *queued* while `pending` or `retrying`; it is *due* when
queued with a next-attempt time (`next_attempt_at`), and *parked* when queued
without one (its webhook is inactive, or it is *held* behind an earlier delivery
of its ordering key: SPEC §8, `sqlite/ordering.py`). `processing` means in flight: claimed and
not yet recorded. `delivered` and `failed` are *finished*. Every write returns
only once committed (durable with `synchronous = "full"`): a 202 to a client
means committed. A write the database cannot take (busy, I/O error, full disk)
raises `StorageUnavailable` and changes nothing; a failed read raises it too.
Times are Unix seconds, passed in (`now`): a backend never reads the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..models import Claimed, DueItem, Outcome, State, Webhook
from .types import (
    DeliveryRow,
    IngestItem,
    IngestResult,
    MinuteActivity,
    RetryResult,
    SessionStats,
    StaticRow,
    WebhookFields,
    WebhookHealth,
)


@dataclass
class ClaimLimits:
    """The per-webhook limits a claim keeps, and which webhooks they held back.

    In: `per_webhook`, the most deliveries of one webhook `processing` at once
    (`per_webhook_concurrency`). Each webhook's `rateLimit` is the store's own
    (`webhooks.rate_limit`). Out: `refused`, filled by the claim: the webhooks some of
    whose ids were left due because a limit was reached, each with when a claim may
    get a token again (rate limit), or None (concurrency: when a slot frees).
    """

    per_webhook: int
    refused: dict[int, float | None] = field(default_factory=dict)


class Store(Protocol):
    """The delivery log: events, their deliveries and attempts, webhooks and stats."""

    # Called after a commit with the deliveries it made due that no caller asked
    # for: held ones whose ordering key's turn came (the scheduler pushes them).
    on_due: Callable[[Sequence[DueItem]], None] | None

    @property
    def commits(self) -> int:
        """Transactions committed so far (for metrics; each one an fsync in SQLite)."""

    @property
    def faults(self) -> int:
        """Refused writes and failed reads so far: busy, I/O error, full disk (metrics)."""

    async def close(self) -> None:
        """Commit every write already queued, then release the database.

        Writes asked for after close() began raise StorageUnavailable.
        """

    async def ping(self) -> None:
        """Return when the database answers a read; raise StorageUnavailable otherwise."""

    # ------------------------------------------------------------------- ingest

    async def ingest(self, items: Sequence[IngestItem], now: float) -> list[IngestResult]:
        """Commit events and one `pending`, due-now delivery per webhook each; one result per item.

        Each delivery keeps its ordering key (`IngestItem.order_keys`). Ordering:
        among the unfinished deliveries of one (webhook, key) only the lowest id may
        be due or in flight; a new one whose key has an unfinished delivery is
        *held* (pending, not due) and counted in `IngestResult.held`, not in its
        due `deliveries`.

        An event with a client id already ingested for its session within
        IDEMPOTENCY_WINDOW_S (or earlier in the same call) is a duplicate: nothing is
        written and its result says so. Delivery ids grow with ingest order. All of
        the call commits together or not at all.
        """

    # --------------------------------------------------------------- scheduling

    async def load_due(
        self, after: tuple[float, int] | None, limit: int, exclude_webhooks: Collection[int]
    ) -> list[DueItem]:
        """Up to `limit` due deliveries ordered by (next_attempt_at, id), after the key `after`.

        Read-only, and possibly stale by the time it returns: `claim` decides.
        Deliveries of `exclude_webhooks` are left out.
        """

    async def load_webhook_due(self, webhook_id: int, limit: int) -> list[DueItem]:
        """Up to `limit` due deliveries of one webhook, ordered by (next_attempt_at, id)."""

    async def claim(
        self, ids: Sequence[int], now: float, limits: ClaimLimits | None = None
    ) -> list[Claimed]:
        """Move those of `ids` still due to `processing`, in one transaction; return them.

        A delivery that is no longer due (claimed already, parked, finished,
        deleted) is skipped silently, so a row is never handed out twice. Each
        returned delivery has its attempt number incremented (the number of the
        attempt about to be made), its number within the current retry run
        (`cycle_attempt`), its ordering key and its event's body. A delivery that
        is not the lowest unfinished one of its ordering key is held instead, and
        that head, if held, made due now (`on_due`): the rule holds whatever the
        scheduler picked.

        `limits` (None: none) are cluster-wide where several processes share the
        store: then the claim takes at most `per_webhook` minus the webhook's
        deliveries `processing` (every node's; and while other nodes want that
        webhook's slots too, no more than this process's fair share of them), and
        at most the tokens of the webhook's rate-limit bucket (rate n/s, burst n,
        shared by every node); the ids a limit held back stay due, untouched, and
        their webhooks are put in `limits.refused`. Where one process owns the
        store (SQLite) the scheduler's window already keeps both limits in memory
        and the store may ignore them (SqliteStore does; `refused` stays empty).
        Limiting how many attempts this process runs (`concurrency`) is the
        scheduler's job.
        """

    async def record(
        self, outcomes: Sequence[Outcome], now: float, disable_after_s: float | None = None
    ) -> list[int]:
        """Log each attempt and move its delivery on, in one transaction.

        Every outcome is logged in the attempt log. Only a delivery still
        `processing` changes state (else the outcome is only logged: cleared, or
        recorded already): `delivered` or `failed` (finished, counted in the
        session stats), or for a retry `retrying` at `next_attempt_at`, parked
        `pending` when its webhook went inactive meanwhile, `failed` when it was
        deleted. A "gone"
        outcome (410) deactivates the webhook and parks its queue. Returns the
        webhooks auto-disabled: failing, with nothing delivered, for
        `disable_after_s` (None: never). A delivery with an ordering key that
        finished wakes the key's next one (due now when its webhook is active;
        told to `on_due`).
        """

    async def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        claim: Sequence[int],
        now: float,
        disable_after_s: float | None = None,
        limits: ClaimLimits | None = None,
    ) -> tuple[list[int], list[Claimed]]:
        """`record` then `claim` in one transaction: (auto-disabled webhooks, claimed).

        The claim counts the deliveries the record just finished as no longer in flight.
        """

    async def recover(self, now: float) -> int:
        """After a crash, return every `processing` delivery to the queue; how many.

        Called at startup before any claim (and at shutdown for what the grace
        period cut short). The interrupted attempt never got an answer, so it is
        made again with the same number (the attempt count goes back by one).
        Webhook active: due now, `retrying` if it was not the first attempt, else
        `pending`. Inactive: parked `pending`. Gone: `failed`, finished now.
        """

    # ----------------------------------------------------------------- webhooks

    async def webhooks(self) -> list[Webhook]:
        """Every webhook, session and static (the registry mirrors this)."""

    async def put_session_webhook(
        self,
        session_id: str,
        url: str,
        events: Sequence[str],
        secret: str | None,
        is_active: bool,
        headers: Sequence[tuple[str, str]],
        now: float,
    ) -> tuple[Webhook, bool]:
        """Create or replace a session's webhook; (it, whether this call activated it).

        A changed secret keeps the previous one valid for SECRET_OVERLAP_S (none
        when the new secret is None). Re-activating resets the failing clock.
        Inactive: its due deliveries park. Active: its parked ones become due now.
        """

    async def delete_session_webhook(self, session_id: str) -> Webhook | None:
        """Delete a session's webhook and its queued deliveries; the webhook, or None.

        Deliveries in flight stay and fail when recorded; webhook ids are never
        reused, so no delivery can reach a later webhook.
        """

    async def create_webhook(
        self, session_id: str, fields: WebhookFields, now: float, max_extra: int = 16
    ) -> Webhook:
        """Add an extra webhook (kind "extra", a new `wh_` id) to a session; return it.

        Counting the session's extra webhooks and adding one is one transaction:
        WebhookLimitReached (nothing written) when it has `max_extra` already.
        """

    async def update_webhook(
        self, webhook_id: int, fields: WebhookFields, now: float
    ) -> tuple[Webhook, bool] | None:
        """Write every field of a session's default or extra webhook; (it, whether activated).

        None when no such webhook (static ones are never changed here). The secret
        rotates and the queue parks or wakes as for `put_session_webhook`.
        """

    async def delete_webhook(self, webhook_id: int) -> Webhook | None:
        """Delete a session's default or extra webhook and its queued deliveries; it, or None.

        As `delete_session_webhook`: deliveries in flight fail when recorded. Static
        webhooks are never deleted here.
        """

    async def webhook_health(self, webhook_ids: Sequence[int]) -> dict[int, WebhookHealth]:
        """Each webhook's failing clock (`failing_since`) and newest attempt; unknown ids absent."""

    async def set_webhook_active(self, webhook_id: int, active: bool, now: float) -> None:
        """Activate or deactivate a webhook; its queued deliveries wake (due now) or park."""

    async def sync_static_webhooks(self, statics: Sequence[StaticRow], now: float) -> list[Webhook]:
        """Make the static webhooks those of the config, active, in one transaction.

        Each static is identified by its `key`. A static
        webhook that left the config is removed and its queued deliveries fail with
        a clear error, so nothing silently disappears from the queue. Returns every
        webhook (session and static) as that transaction left them, so a reload can
        mirror exactly what it committed.
        """

    # ------------------------------------------------------------- delivery log

    async def list_deliveries(
        self,
        session_id: str,
        state: State | None,
        event_type: str | None,
        before_id: int | None,
        limit: int,
        webhook_id: int | None = None,
    ) -> list[DeliveryRow]:
        """A session's deliveries, highest id first, with attempts; page with `before_id`.

        With `webhook_id`, only those to that webhook.
        """

    async def get_delivery(self, session_id: str, uid: str) -> tuple[DeliveryRow, bytes] | None:
        """One delivery of the session with its attempts and the event body; None when unknown."""

    async def retry_failed(
        self,
        session_id: str,
        now: float,
        uid: str | None = None,
        finished_since: float | None = None,
        webhook_id: int | None = None,
    ) -> RetryResult:
        """Start a new retry run for `failed` deliveries (one by uid, or all since a time).

        `webhook_id`: only the session's failed deliveries to that webhook.

        Each goes back to `pending` with its attempt count kept (the run's numbering
        restarts), no longer counted as failed in the stats; due now when its
        webhook is active, parked otherwise. Other states are left alone.
        """

    # ---------------------------------------------------------------- retention

    async def prune_finished(self, before: float, limit: int) -> tuple[int, list[int]]:
        """Delete up to `limit` deliveries finished before `before`, oldest first, with attempts.

        Returns (count, their event ids). Session stats are not touched.
        """

    async def prune_events(
        self, before: float, event_ids: Sequence[int], after_id: int, limit: int
    ) -> tuple[int, int]:
        """Delete events received before `before` that no delivery refers to.

        Checks `event_ids`, then sweeps up to `limit` events by id after `after_id`.
        Returns (count deleted, last id swept); pass that id back to resume.
        """

    # ------------------------------------------------------------ queue & stats

    async def queue_counts(self, sessions: Collection[str] | None) -> dict[str, int]:
        """Deliveries per state (pending, processing, failed, retrying), all or some sessions."""

    async def oldest_due_at(self) -> float | None:
        """The earliest next-attempt time of the due deliveries; None when none is due."""

    async def queue_counts_by_session(self) -> dict[str, dict[str, int]]:
        """`queue_counts` per session; sessions with none of those deliveries are absent."""

    async def clear_queue(
        self, session_id: str, states: Collection[State], now: float
    ) -> dict[str, int]:
        """Delete a session's deliveries in the given clearable states; how many per state.

        Never those in flight (`processing` is not clearable). An ordered delivery
        whose key's head was cleared becomes due `now` (told to `on_due`).
        """

    async def session_stats(self, session_id: str) -> SessionStats | None:
        """All-time stats of a session, None when it never finished a delivery."""

    async def sessions_stats(self, sessions: Collection[str]) -> dict[str, SessionStats]:
        """All-time stats of these sessions; those that never finished a delivery are absent."""

    async def activity(
        self, since: float, sessions: Collection[str] | None
    ) -> list[MinuteActivity]:
        """Delivered and failed deliveries per minute finished since `since`, oldest first.

        Minutes start at multiples of 60 s; a minute with none is absent. `sessions`: only
        those sessions' deliveries (None: every session). Cheap: an index range scan of the
        window, whatever the size of the log.
        """
