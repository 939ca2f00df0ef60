"""The SQLite store with the webhook collection of SPEC §8 (several webhooks per session).

`SqliteStore` here is the facade's store plus the collection's methods: create, update
and delete a webhook by id, each one's health, and the delivery log of one webhook.
They route to `webhooks.py` and `webhook_log.py` like the facade's methods do to their
modules; so does `activity` (the console's per-minute counts, `activity.py`). (Kept beside
facade.py while that file changes on another branch; the methods move into it when the
branches meet.)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

from ...models import State, Webhook
from ..types import DeliveryRow, MinuteActivity, WebhookFields, WebhookHealth
from . import activity as activity_sql
from . import webhook_log, webhooks
from .facade import SqliteStore as SqliteFacade

# SPEC §8: a session may have up to 16 webhooks besides its default one
MAX_EXTRA_WEBHOOKS = 16


class SqliteStore(SqliteFacade):
    """The delivery log in SQLite. Create with `await SqliteStore.open(path, synchronous)`."""

    @classmethod
    async def open(cls, path: Path, synchronous: Literal["full", "normal"] = "full") -> SqliteStore:
        """Open (creating if needed, mode 0600) and migrate the database, start the writer."""
        store = await super().open(path, synchronous)
        assert isinstance(store, cls)
        return store

    async def create_webhook(
        self,
        session_id: str,
        fields: WebhookFields,
        now: float,
        max_extra: int = MAX_EXTRA_WEBHOOKS,
    ) -> Webhook:
        """Add an extra webhook to a session (WebhookLimitReached past `max_extra`)."""
        return await self.write(
            lambda c: webhooks.create_webhook(c, session_id, fields, now, max_extra)
        )

    async def update_webhook(
        self, webhook_id: int, fields: WebhookFields, now: float
    ) -> tuple[Webhook, bool] | None:
        """Write every field of a default or extra webhook; (it, whether activated), or None."""
        return await self.write(lambda c: webhooks.update_webhook(c, webhook_id, fields, now))

    async def delete_webhook(self, webhook_id: int) -> Webhook | None:
        """Delete a default or extra webhook and its queued deliveries; it, or None."""
        return await self.write(lambda c: webhooks.delete_webhook(c, webhook_id))

    async def webhook_health(self, webhook_ids: Sequence[int]) -> dict[int, WebhookHealth]:
        """Each webhook's failing clock and newest attempt."""
        return await self._in_reader(lambda c: webhooks.webhook_health(c, webhook_ids))

    async def list_deliveries(
        self,
        session_id: str,
        state: State | None,
        event_type: str | None,
        before_id: int | None,
        limit: int,
        webhook_id: int | None = None,
    ) -> list[DeliveryRow]:
        """A session's deliveries newest first (only one webhook's: `webhook_id`), with attempts."""
        if webhook_id is None:
            return await super().list_deliveries(session_id, state, event_type, before_id, limit)
        return await self._in_reader(
            lambda c: webhook_log.list_webhook_deliveries(
                c, session_id, webhook_id, state, event_type, before_id, limit
            )
        )

    async def activity(
        self, since: float, sessions: Collection[str] | None
    ) -> list[MinuteActivity]:
        """Deliveries finished per minute since `since` (all sessions, or these)."""
        return await self._in_reader(lambda c: activity_sql.activity(c, since, sessions))
