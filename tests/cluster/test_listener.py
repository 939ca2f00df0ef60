"""A node's LISTEN connection (store/postgres/listener.py) against a real PostgreSQL.

Two stores on one database, each with its listener, stand for two nodes: what one
commits, the other's listener hears at once (no poll in these tests runs but the
listeners' own); a listener whose connection the server drops comes back by itself and
reads every webhook again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from wahookd.clock import SystemClock
from wahookd.events import validate_event
from wahookd.models import DueItem, Webhook
from wahookd.registry import Registry
from wahookd.store import IngestItem, PgStore, WebhookFields
from wahookd.store.postgres.heartbeat import Heartbeat
from wahookd.store.postgres.listener import Listener
from wahookd.webhooks import SessionWebhookFields, WebhookService

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0


class Heard:
    """What one listener handed on."""

    def __init__(self) -> None:
        self.webhooks: list[tuple[int, Webhook | None]] = []
        self.resyncs: list[list[Webhook]] = []
        self.due: list[DueItem] = []

    def webhook(self, webhook_id: int, hook: Webhook | None) -> None:
        self.webhooks.append((webhook_id, hook))

    def resync(self, hooks: Sequence[Webhook]) -> None:
        self.resyncs.append(list(hooks))

    def on_due(self, items: Sequence[DueItem]) -> None:
        self.due += items


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@pytest.fixture
async def two_nodes(pg_dsn: str) -> AsyncIterator[tuple[PgStore, PgStore, Listener, Heard]]:
    """Nodes a and b, each listening; what b's listener hands on."""
    stores, tasks, heards, listeners = [], [], [], []
    try:
        for name in ("a", "b"):
            store = await PgStore.open(pg_dsn, node_id=name)
            stores.append(store)
            heard = Heard()
            beat = Heartbeat(store, SystemClock(), heard.on_due)
            listener = Listener(
                store, on_webhook=heard.webhook, on_resync=heard.resync, poll=beat.poll
            )
            tasks.append(asyncio.create_task(listener.run()))
            await asyncio.wait_for(listener.connected.wait(), WAIT_S)
            await eventually(lambda h=heard: len(h.resyncs) == 1, "the first resync")
            heards.append(heard)
            listeners.append(listener)
        yield stores[0], stores[1], listeners[1], heards[1]
    finally:
        for task in tasks:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for store in stores:
            await store.close()


FIELDS = WebhookFields(url="https://a.example/", events=("*",), secret=None, is_active=True)


async def test_each_webhook_change_of_another_node_is_read_back_at_once(
    two_nodes: tuple[PgStore, PgStore, Listener, Heard],
) -> None:
    a, _, _, heard = two_nodes
    now = time.time()
    hook = await a.create_webhook("s1", FIELDS, now)
    await eventually(lambda: (hook.id, hook) in heard.webhooks, "the created webhook")
    await a.set_webhook_active(hook.id, False, now + 1)
    await eventually(
        lambda: any(h is not None and not h.is_active for _, h in heard.webhooks), "disabled"
    )
    session, _ = await a.put_session_webhook("s2", "https://b.example/", ["*"], None, True, [], now)
    await eventually(lambda: (session.id, session) in heard.webhooks, "the session webhook")
    await a.delete_webhook(hook.id)
    await eventually(lambda: (hook.id, None) in heard.webhooks, "the deleted webhook")
    # a static sync (a node starting, a reload) makes every node read them all again
    await a.sync_static_webhooks([], now)
    await eventually(lambda: len(heard.resyncs) == 2, "a resync after the statics")
    assert {h.id for h in heard.resyncs[-1]} == {session.id}


async def test_deliveries_another_node_makes_due_are_polled_at_once(
    two_nodes: tuple[PgStore, PgStore, Listener, Heard],
) -> None:
    a, b, listener, heard = two_nodes
    now = time.time()
    hook, _ = await a.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], now)
    polls = listener.polls
    body = {"event": "session.disconnected", "sessionId": "s1", "reason": "r"}
    (result,) = await a.ingest([IngestItem(validate_event(body, now=int(now)), (hook.id,))], now)
    (item,) = result.deliveries
    # far sooner than the 2 s backstop, which does not run here at all
    await eventually(lambda: item.id in {d.id for d in heard.due}, "the wake-up poll")
    assert listener.polls > polls
    # a node ignores its own signal: it holds what it committed in memory already
    polls, signals = listener.polls, listener.signals
    await b.ingest(
        [IngestItem(validate_event(body | {"reason": "s"}, now=int(now)), (hook.id,))], now
    )
    await eventually(lambda: listener.signals > signals, "b's own signal sent")
    await asyncio.sleep(0.5)
    assert listener.polls == polls


async def test_a_dropped_listen_connection_comes_back_and_reads_every_webhook_again(
    two_nodes: tuple[PgStore, PgStore, Listener, Heard], pg_dsn: str
) -> None:
    a, _, listener, heard = two_nodes
    killed = await a.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'wahookd-listen' AND datname = current_database()"
    )
    assert killed == [(True,), (True,)]  # both nodes' listeners
    # a change made while it is down is not heard, but read by the resync
    hook = await a.create_webhook("s1", FIELDS, time.time())
    await eventually(lambda: listener.connections == 2, "the reconnection")
    await eventually(
        lambda: len(heard.resyncs) >= 2 and hook.id in {h.id for h in heard.resyncs[-1]},
        "the resync after reconnecting",
    )
    await a.delete_webhook(hook.id)  # and it listens again
    await eventually(lambda: (hook.id, None) in heard.webhooks, "a change after reconnecting")


async def test_a_read_that_overlaps_a_change_of_this_node_is_made_again(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the daemon starts listening while the operator already creates a webhook: the
    # resync's read predates the commit, and mirroring it would drop the new webhook
    # from the registry for a moment (an event posted then fans out to nothing)
    store = await PgStore.open(pg_dsn, node_id="a")
    registry = Registry()
    told: list[tuple[int, bool]] = []  # (webhook id, still there) the scheduler heard
    service = WebhookService(store, registry, lambda hook, i: told.append((i, hook is not None)))
    resyncs: list[int] = []

    def resync(hooks: Sequence[Webhook]) -> None:
        resyncs.append(len(hooks))
        service.mirror_all(hooks)

    snapshot_taken, go_on = asyncio.Event(), asyncio.Event()
    read_all = store.webhooks

    async def slow_read_all() -> list[Webhook]:
        hooks = await read_all()
        snapshot_taken.set()
        await go_on.wait()
        return hooks

    monkeypatch.setattr(store, "webhooks", slow_read_all)
    beat = Heartbeat(store, SystemClock(), lambda items: None)
    listener = Listener(
        store,
        on_webhook=service.mirror,
        on_resync=resync,
        poll=beat.poll,
        local_version=lambda: registry.version,
    )
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(snapshot_taken.wait(), WAIT_S)
        fields = SessionWebhookFields("https://a.example/", ("*",), None, True, ())
        hook = await service.put_session("s1", fields, now=time.time(), by="test")
        go_on.set()
        await eventually(lambda: resyncs == [1], "the resync read again, with the webhook")
        assert registry.get(hook.id) == hook
        assert (hook.id, False) not in told  # never mirrored as gone
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.close()
