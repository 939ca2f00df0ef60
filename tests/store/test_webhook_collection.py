"""The webhook collection on SQLite and PostgreSQL: extra webhooks, their limit, updates,
ordering keys."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from wahookd.events import validate_event
from wahookd.store import (
    MAX_EXTRA_WEBHOOKS,
    IngestItem,
    SqliteStore,
    WebhookFields,
    WebhookLimitReached,
)
from wahookd.store.columns import SECRET_OVERLAP_S

from .backends import AnyStore, rows
from .conftest import OpenStore

T0 = 1_700_000_000.0
FIELDS = WebhookFields(
    url="https://a.example/h",
    events=("*",),
    secret="first-secret",
    is_active=True,
    description="groups",
    filter_chats=("group",),
    ordering="chat",
    rate_limit=5,
)


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[AnyStore]:
    yield await open_store()


async def test_extra_webhooks_up_to_the_limit(store: AnyStore) -> None:
    default, _ = await store.put_session_webhook(
        "s1", "https://d.example/", ["*"], None, True, [], T0
    )
    made = [await store.create_webhook("s1", FIELDS, T0) for _ in range(MAX_EXTRA_WEBHOOKS)]
    with pytest.raises(WebhookLimitReached, match="16 extra webhooks"):
        await store.create_webhook("s1", FIELDS, T0)
    await store.create_webhook("s2", FIELDS, T0)  # per session
    hook = made[0]
    assert (hook.kind, hook.session, hook.description) == ("extra", "s1", "groups")
    assert (hook.filter_chats, hook.ordering, hook.rate_limit) == (("group",), "chat", 5)
    assert len({h.public_id for h in [default, *made]}) == 17
    assert default.kind == "session" and default.public_id.startswith("wh_")
    # a removed one frees its place
    assert await store.delete_webhook(hook.id) == hook
    assert await store.delete_webhook(hook.id) is None
    await store.create_webhook("s1", FIELDS, T0)


async def test_update_rotates_the_secret_and_parks_the_queue(store: AnyStore) -> None:
    hook = await store.create_webhook("s1", FIELDS, T0)
    event = validate_event(
        {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}, now=T0
    )
    await store.ingest([IngestItem(event, (hook.id,), ("s1",))], T0)
    done = await store.update_webhook(
        hook.id, replace(FIELDS, secret="second-secret", is_active=False, filter_chats=None), T0 + 1
    )
    assert done is not None
    new, activated = done
    assert not activated and new.filter_chats is None and not new.is_active
    assert (new.previous_secret, new.previous_secret_until) == (
        "first-secret",
        T0 + 1 + SECRET_OVERLAP_S,
    )
    assert await store.load_webhook_due(hook.id, 10) == []  # parked
    done = await store.update_webhook(hook.id, replace(FIELDS, secret="second-secret"), T0 + 2)
    assert done is not None and done[1] is True
    assert len(await store.load_webhook_due(hook.id, 10)) == 1
    assert await store.update_webhook(10_000, FIELDS, T0) is None


async def test_ingest_stores_each_deliverys_ordering_key(store: AnyStore) -> None:
    ordered = await store.create_webhook("s1", FIELDS, T0)
    plain = await store.create_webhook("s1", replace(FIELDS, ordering="none"), T0)
    event = validate_event(
        {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}, now=T0
    )
    await store.ingest(
        [
            IngestItem(event, (ordered.id, plain.id), ("1@g.us", None)),
            IngestItem(event, (plain.id,)),
        ],
        T0,
    )

    found = await rows(store, "SELECT webhook_id, order_key FROM deliveries ORDER BY id")
    assert found == [(ordered.id, "1@g.us"), (plain.id, None), (plain.id, None)]
    if not isinstance(store, SqliteStore):
        return  # PostgreSQL's planner picks by statistics: no plan to pin on a tiny table

    def read(conn: sqlite3.Connection) -> str:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(id) FROM deliveries"
            " WHERE webhook_id = ? AND order_key = ? AND order_key IS NOT NULL"
            " AND finished_at IS NULL",
            (ordered.id, "1@g.us"),
        ).fetchall()
        return " ".join(str(row[-1]) for row in plan)

    plan = await store.read(read)
    # "the earliest unfinished delivery of (webhook, key)" is one index lookup
    assert "deliveries_order" in plan, plan


async def test_health_and_the_delivery_log_of_one_webhook(store: AnyStore) -> None:
    a = await store.create_webhook("s1", FIELDS, T0)
    b = await store.create_webhook("s1", FIELDS, T0)
    event = validate_event(
        {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}, now=T0
    )
    await store.ingest([IngestItem(event, (a.id, b.id))], T0)
    rows = await store.list_deliveries("s1", None, None, None, 10, webhook_id=b.id)
    assert [r.webhook_id for r in rows] == [b.id]
    assert len(await store.list_deliveries("s1", None, None, None, 10)) == 2
    health = await store.webhook_health([a.id, 999])
    assert list(health) == [a.id]
    assert health[a.id].last_status is None and health[a.id].failing_since is None
