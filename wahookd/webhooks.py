"""The one owner of webhook changes.

Every change to a webhook, whoever asks for it (the API, a config reload, a 410 answer,
an auto-disable, `wahookd webhook enable|disable`), runs here in one fixed order:

1. validate: callers hand in values already checked by `rules.py`;
2. commit: the store writes the change (the source of truth);
3. mirror: the in-memory registry takes the committed webhook;
4. notify: the scheduler re-reads the webhook's lane (parks or wakes its deliveries);
5. audit: one `wahookd.audit` line says what changed, to what, by whom and why.

A failed commit raises before anything in memory changed, so the registry and the
scheduler never run ahead of the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .audit import CONFIG as BY_CONFIG
from .audit import SYSTEM as BY_SYSTEM
from .audit import audit
from .models import Webhook
from .registry import Registry
from .store import MAX_EXTRA_WEBHOOKS, StaticRow, Store, WebhookFields

# the scheduler's hook: (the webhook as it is now, or None when gone/inactive; its id)
Notify = Callable[[Webhook | None, int], None]


@dataclass(frozen=True)
class SessionWebhookFields:
    """A session webhook's settable fields, validated."""

    url: str
    events: tuple[str, ...]
    secret: str | None
    is_active: bool
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, hook: Webhook) -> SessionWebhookFields:
        """The fields of a stored webhook (the base a partial update starts from)."""
        return cls(hook.url, hook.events, hook.secret, hook.is_active, hook.headers)


class StaticWebhook(Exception):
    """A static webhook belongs to the config file: the API cannot change it (409)."""

    def __init__(self, hook: Webhook) -> None:
        super().__init__(
            f"webhook '{hook.public_id}' is static (from the config file): change it there"
        )
        self.hook = hook


def fields_of(hook: Webhook) -> WebhookFields:
    """Every settable field of a stored webhook (the base a partial update starts from)."""
    return WebhookFields(
        url=hook.url,
        events=hook.events,
        secret=hook.secret,
        is_active=hook.is_active,
        headers=hook.headers,
        description=hook.description,
        filter_chats=hook.filter_chats,
        ordering=hook.ordering,
        rate_limit=hook.rate_limit,
    )


class WebhookService:
    """Validate → commit → mirror in the registry → notify the scheduler → audit."""

    def __init__(self, store: Store, registry: Registry, notify: Notify | None = None) -> None:
        self.store = store
        self.registry = registry
        # the scheduler subscribes when it is built (Scheduler.__init__)
        self.notify: Notify = notify or _nobody

    async def put_session(
        self,
        session_id: str,
        fields: SessionWebhookFields,
        *,
        now: float,
        by: str | None,
        action: str = "webhook.put",
    ) -> Webhook:
        """Create or replace a session's webhook."""
        old = self.registry.session_webhook(session_id)
        hook, _ = await self.store.put_session_webhook(
            session_id,
            fields.url,
            list(fields.events),
            fields.secret,
            fields.is_active,
            list(fields.headers),
            now,
        )
        self.registry.put(hook)
        if old is None or old.is_active != hook.is_active:
            self.notify(hook, hook.id)
        audit(action, by=by, session=session_id, webhook=hook.id, details=_changes(old, hook))
        return hook

    async def delete_session(self, session_id: str, *, by: str | None) -> Webhook | None:
        """Delete a session's webhook and its queued deliveries; None when there was none."""
        hook = await self.store.delete_session_webhook(session_id)
        if hook is None:
            return None
        self.registry.remove(hook.id)
        self.notify(None, hook.id)
        audit(
            "webhook.delete",
            by=by,
            session=session_id,
            webhook=hook.id,
            details="deleted with its queued deliveries",
        )
        return hook

    async def create(
        self,
        session_id: str,
        fields: WebhookFields,
        *,
        now: float,
        by: str | None,
        max_extra: int = MAX_EXTRA_WEBHOOKS,
    ) -> Webhook:
        """Add an extra webhook to a session (WebhookLimitReached past `max_extra`)."""
        hook = await self.store.create_webhook(session_id, fields, now, max_extra)
        self.registry.put(hook)
        self.notify(hook, hook.id)
        audit("webhook.create", by=by, session=session_id, webhook=hook.id, details="created")
        return hook

    async def update(
        self,
        hook: Webhook,
        fields: WebhookFields,
        *,
        now: float,
        by: str | None,
        action: str = "webhook.patch",
    ) -> Webhook | None:
        """Write a default or extra webhook's fields; None when it is gone meanwhile.

        StaticWebhook for a static one: the config file owns it.
        """
        if hook.kind == "static":
            raise StaticWebhook(hook)
        done = await self.store.update_webhook(hook.id, fields, now)
        if done is None:
            self.registry.remove(hook.id)
            return None
        new, _ = done
        old = self.registry.get(hook.id)
        self.registry.put(new)
        if old is None or _lane_fields(old) != _lane_fields(new):
            self.notify(new, new.id)
        audit(action, by=by, session=new.session, webhook=new.id, details=_changes(old, new))
        return new

    async def delete(self, hook: Webhook, *, by: str | None) -> Webhook | None:
        """Delete a default or extra webhook and its queued deliveries; None when gone already.

        StaticWebhook for a static one.
        """
        if hook.kind == "static":
            raise StaticWebhook(hook)
        gone = await self.store.delete_webhook(hook.id)
        self.registry.remove(hook.id)
        if gone is None:
            return None
        self.notify(None, gone.id)
        audit(
            "webhook.delete",
            by=by,
            session=gone.session,
            webhook=gone.id,
            details="deleted with its queued deliveries",
        )
        return gone

    async def set_active(
        self, hook: Webhook, active: bool, *, now: float, by: str | None
    ) -> Webhook | None:
        """Enable or disable a default or extra webhook (`wahookd webhooks enable|disable`)."""
        action = "webhook.enable" if active else "webhook.disable"
        return await self.update(
            hook, replace(fields_of(hook), is_active=active), now=now, by=by, action=action
        )

    def turned_off(self, webhook_id: int, *, now: float, reason: str) -> Webhook | None:
        """Mirror a webhook the store turned inactive in an outcome's commit (410, auto-disable).

        The commit is done: this only mirrors, notifies and audits, once per webhook.
        Returns the webhook when this call turned it off, None when it was off or gone.
        """
        hook = self.registry.get(webhook_id)
        if hook is None or not hook.is_active:
            return None
        # updated_at as the store set it in the same commit: it shows when it was disabled
        self.registry.put(replace(hook, is_active=False, updated_at=now))
        self.notify(None, webhook_id)
        audit(
            "webhook.disable",
            by=BY_SYSTEM,
            session=hook.session,
            webhook=webhook_id,
            details=reason,
        )
        return hook

    async def sync_statics(self, rows: Sequence[StaticRow], *, now: float) -> list[Webhook]:
        """Commit the config file's static webhooks; returns every webhook as committed.

        The caller swaps the registry in (`adopt`) when the rest of a reload is ready.
        """
        # the webhooks as committed, read in the same transaction: nothing can slip between
        return await self.store.sync_static_webhooks(rows, now)

    def adopt(self, hooks: Sequence[Webhook]) -> None:
        """Mirror a committed set of webhooks (after a reload) and notify each changed lane."""
        before = self.registry.statics()
        self.registry.replace_all(hooks)
        after = {hook.id: hook for hook in self.registry.statics()}
        for webhook_id in {hook.id for hook in before} | set(after):
            # re-read each static lane: a reload may re-activate one or drop its queue
            self.notify(after.get(webhook_id), webhook_id)
        _audit_statics(before, list(after.values()))

    def mirror(self, webhook_id: int, hook: Webhook | None) -> None:
        """Mirror a change committed elsewhere: `hook` as read back after another node's
        NOTIFY (store/postgres/listener.py), None when it is gone.

        Only mirrors and notifies the scheduler's lane when what the lane depends on
        changed; no audit line (the node that made the change wrote it). A change this
        node made itself comes back too and finds the registry up to date already.
        """
        old = self.registry.get(webhook_id)
        if hook is None:
            if old is not None:
                self.registry.remove(webhook_id)
                self.notify(None, webhook_id)
            return
        if old == hook:
            return
        self.registry.put(hook)
        if old is None or _lane_fields(old) != _lane_fields(hook):
            self.notify(hook, webhook_id)

    def mirror_all(self, hooks: Sequence[Webhook]) -> None:
        """Mirror every webhook as committed (the listener reconnected: a change may have
        been missed); those not among `hooks` were deleted meanwhile."""
        now = {hook.id: hook for hook in hooks}
        for webhook_id in sorted({hook.id for hook in self.registry.all()} | set(now)):
            self.mirror(webhook_id, now.get(webhook_id))


def _nobody(webhook: Webhook | None, webhook_id: int) -> None:
    """No scheduler subscribed (yet)."""


def _changes(old: Webhook | None, new: Webhook) -> str:
    """What a write changed, by field name only: an audit line never shows values."""
    if old is None:
        return "created"
    fields = [
        name
        for name, before, after in (
            ("url", old.url, new.url),
            ("events", old.events, new.events),
            ("secret", old.secret, new.secret),
            ("headers", old.headers, new.headers),
            ("isActive", old.is_active, new.is_active),
            ("description", old.description, new.description),
            ("filter", old.filter_chats, new.filter_chats),
            ("ordering", old.ordering, new.ordering),
            ("rateLimit", old.rate_limit, new.rate_limit),
        )
        if before != after
    ]
    details = "changed " + ", ".join(fields) if fields else "unchanged"
    if old.is_active != new.is_active:
        details += "; enabled" if new.is_active else "; disabled by the operator"
    return details


def _lane_fields(hook: Webhook) -> tuple[object, ...]:
    """What the scheduler's lane of a webhook depends on."""
    return (hook.is_active, hook.ordering, hook.rate_limit)


def _audit_statics(before: list[Webhook], after: list[Webhook]) -> None:
    """One audit line per static webhook a reload added, changed or removed."""
    old = {hook.id: hook for hook in before}
    new = {hook.id: hook for hook in after}
    for webhook_id in sorted(old.keys() | new.keys()):
        was, now = old.get(webhook_id), new.get(webhook_id)
        if now is None:
            action, details, hook = "webhook.delete", "removed from the config file", was
        elif was is None:
            action, details, hook = "webhook.put", "added by the config file", now
        elif _static_fields(was) != _static_fields(now):
            action, details, hook = "webhook.put", "changed by the config file", now
        else:
            continue
        assert hook is not None
        audit(action, by=BY_CONFIG, session=hook.session, webhook=webhook_id, details=details)


def _static_fields(hook: Webhook) -> tuple[object, ...]:
    return (hook.url, hook.events, hook.secret, hook.headers, hook.is_active)
