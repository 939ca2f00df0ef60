"""The webhook service: every change is committed, then mirrored, then notified, then audited."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from wahookd.models import Webhook
from wahookd.registry import Registry
from wahookd.store import SqliteStore, StaticRow, StorageUnavailable, Store
from wahookd.webhooks import SessionWebhookFields, WebhookService

T0 = 1_700_000_000.0
FIELDS = SessionWebhookFields(
    "https://a.example/h", ("*",), "supersecret", True, (("X-Api-Key", "k1"),)
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await SqliteStore.open(tmp_path / "w.db", "normal")
    yield s
    await s.close()


class Notified:
    """A stand-in subscriber that remembers what it was told, in order."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        # (the notified webhook's is_active or None, its id, the registry's is_active or None)
        self.calls: list[tuple[bool | None, int, bool | None]] = []

    def __call__(self, hook: Webhook | None, webhook_id: int) -> None:
        # the registry must already hold the committed change when the scheduler hears of it
        mirrored = self.registry.get(webhook_id)
        state = None if mirrored is None else mirrored.is_active
        self.calls.append((None if hook is None else hook.is_active, webhook_id, state))


def service(store: Store) -> tuple[WebhookService, Registry, Notified]:
    registry = Registry()
    notified = Notified(registry)
    return WebhookService(store, registry, notified), registry, notified


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wahookd.audit"]


async def test_put_commits_then_mirrors_then_notifies_then_audits(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.audit")
    svc, registry, notified = service(store)
    hook = await svc.put_session("s1", FIELDS, now=T0, by="alice")
    assert await store.webhooks() == [hook]
    assert registry.session_webhook("s1") == hook
    assert notified.calls == [(True, hook.id, True)]
    # an edit that keeps it active needs no lane resync; turning it off does
    edited = await svc.put_session(
        "s1", replace(FIELDS, events=("message.sent",)), now=T0 + 1, by="alice"
    )
    off = await svc.put_session(
        "s1",
        replace(SessionWebhookFields.of(edited), is_active=False),
        now=T0 + 2,
        by="bob",
        action="webhook.patch",
    )
    assert notified.calls[1:] == [(False, off.id, False)]
    assert audit_lines(caplog) == [
        f"audit webhook.put session=s1 webhook={hook.id} by=alice: created",
        f"audit webhook.put session=s1 webhook={hook.id} by=alice: changed events",
        f"audit webhook.patch session=s1 webhook={hook.id} by=bob:"
        " changed isActive; disabled by the operator",
    ]
    assert "supersecret" not in caplog.text and "k1" not in caplog.text


async def test_a_failed_commit_changes_nothing_in_memory(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.audit")
    svc, registry, notified = service(store)
    hook = await svc.put_session("s1", FIELDS, now=T0, by="alice")

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("disk full")

    monkeypatch.setattr(store, "write", refuse)
    with pytest.raises(StorageUnavailable):
        await svc.put_session("s1", FIELDS, now=T0 + 1, by="alice")
    with pytest.raises(StorageUnavailable):
        await svc.delete_session("s1", by="alice")
    assert registry.session_webhook("s1") == hook
    assert len(notified.calls) == 1 and len(audit_lines(caplog)) == 1


async def test_delete_and_turned_off(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.audit")
    svc, registry, notified = service(store)
    hook = await svc.put_session("s1", FIELDS, now=T0, by="alice")
    turned = svc.turned_off(hook.id, now=T0 + 5, reason="the receiver answered 410 Gone")
    assert turned == hook
    mirrored = registry.get(hook.id)
    assert mirrored is not None and not mirrored.is_active and mirrored.updated_at == T0 + 5
    # a second 410 of the same batch: already off, nothing more
    assert svc.turned_off(hook.id, now=T0 + 6, reason="again") is None
    assert notified.calls[1:] == [(None, hook.id, False)]
    assert await svc.delete_session("s1", by="carol") == hook
    assert await svc.delete_session("s1", by="carol") is None
    assert registry.session_webhook("s1") is None and await store.webhooks() == []
    assert notified.calls[2:] == [(None, hook.id, None)]
    assert audit_lines(caplog)[1:] == [
        f"audit webhook.disable session=s1 webhook={hook.id} by=wahookd:"
        " the receiver answered 410 Gone",
        f"audit webhook.delete session=s1 webhook={hook.id} by=carol:"
        " deleted with its queued deliveries",
    ]


async def test_statics_are_committed_before_they_are_adopted(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wahookd.audit")
    svc, registry, notified = service(store)
    rows = [StaticRow("k1", "*", "https://a.example/h", ("*",), None)]
    hooks = await svc.sync_statics(rows, now=T0)
    assert hooks == await store.webhooks() and registry.statics() == []
    svc.adopt(hooks)
    (static,) = registry.statics()
    assert notified.calls == [(True, static.id, True)]
    svc.adopt(await svc.sync_statics([], now=T0 + 1))
    assert registry.statics() == []
    assert audit_lines(caplog) == [
        f"audit webhook.put session=* webhook={static.id} by=config: added by the config file",
        f"audit webhook.delete session=* webhook={static.id} by=config:"
        " removed from the config file",
    ]


async def test_collection_changes_commit_mirror_notify_audit(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from wahookd.store import WebhookFields, WebhookLimitReached
    from wahookd.webhooks import StaticWebhook

    caplog.set_level(logging.INFO, logger="wahookd.audit")
    svc, registry, notified = service(store)
    fields = WebhookFields("https://b.example/h", ("*",), "s3cret", True, filter_chats=("group",))
    hook = await svc.create("s1", fields, now=T0, by="ops")
    assert registry.by_public_id(hook.public_id) == hook
    assert notified.calls == [(True, hook.id, True)]
    with pytest.raises(WebhookLimitReached):
        await svc.create("s1", fields, now=T0, by="ops", max_extra=1)

    changed = await svc.update(
        hook, replace(fields, ordering="chat", description="x"), now=T0 + 1, by="ops"
    )
    assert changed is not None and registry.get(hook.id) == changed
    assert notified.calls[-1] == (True, hook.id, True)  # the lane's ordering changed
    off = await svc.set_active(changed, False, now=T0 + 2, by="ops")
    assert off is not None and not off.is_active and notified.calls[-1] == (False, hook.id, False)

    static = await store.sync_static_webhooks(
        [StaticRow("k", "*", "https://c.example/", ("*",), None)], T0
    )
    (st,) = [h for h in static if h.kind == "static"]
    with pytest.raises(StaticWebhook, match="config file"):
        await svc.update(st, fields, now=T0, by="ops")
    with pytest.raises(StaticWebhook):
        await svc.delete(st, by="ops")

    assert await svc.delete(off, by="ops") == off
    assert registry.get(hook.id) is None and notified.calls[-1] == (None, hook.id, None)
    assert await svc.delete(off, by="ops") is None
    lines = audit_lines(caplog)
    assert any("webhook.create" in line and "created" in line for line in lines)
    assert any(
        "webhook.patch" in line and "ordering" in line and "description" in line for line in lines
    )
    assert any("webhook.disable" in line for line in lines)
    assert any("webhook.delete" in line for line in lines)
    assert not any("s3cret" in line for line in lines)
