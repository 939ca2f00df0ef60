"""What only the PostgreSQL store has: nodes sharing one database.

Several `PgStore`s on one database are several nodes: migrations run once, a delivery is
claimed by one node only, leases expire and are reclaimed, a stale outcome is fenced off,
stats rows are per node and summed, a duplicate ingested on two nodes at once is taken
once. All against the real server of tests/pg.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from pg import PgServer

from wahookd.events import validate_event
from wahookd.models import AttemptResult, Outcome, State
from wahookd.store import IngestItem, StorageError, StorageUnavailable, WebhookFields
from wahookd.store.postgres import PgStore
from wahookd.store.postgres import connection as pg_connection
from wahookd.store.postgres.connection import redact_dsn
from wahookd.store.postgres.schema import SCHEMA_VERSION

T0 = 1_700_000_000.0
LEASE = 30.0
OK = AttemptResult(200, None, 12, "OK", None, "2xx")
FAIL = AttemptResult(500, "HTTP 500", 7, "", None, "5xx")

Nodes = Callable[[], Awaitable[PgStore]]


def event(n: int, session: str = "s1", event_id: str | None = None):
    body: dict[str, object] = {"event": "session.disconnected", "sessionId": session}
    body["reason"] = f"r{n}"
    if event_id is not None:
        body["id"] = event_id
    return validate_event(body, now=int(T0))


@pytest.fixture
async def node(pg_dsn: str) -> AsyncIterator[Nodes]:
    """Opens another node on the test's database; all of them are closed at the end."""
    opened: list[PgStore] = []

    async def open_() -> PgStore:
        store = await PgStore.open(pg_dsn, "full", lease_s=LEASE)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        if not store._closing:
            await store.close()


async def queued(store: PgStore, count: int, session: str = "s1") -> tuple[int, list[int]]:
    hook, _ = await store.put_session_webhook(
        session, "https://a.example/", ["*"], None, True, [], T0
    )
    results = await store.ingest(
        [IngestItem(event(i, session), (hook.id,)) for i in range(count)], T0
    )
    return hook.id, [r.deliveries[0].id for r in results]


# ---------------------------------------------------------------- migrations
async def test_migrations_run_once_when_nodes_start_together(pg_dsn: str) -> None:
    stores = await asyncio.gather(*(PgStore.open(pg_dsn) for _ in range(4)))
    try:
        assert await stores[0].fetch("SELECT version FROM wahookd_schema") == [(SCHEMA_VERSION,)]
        assert len({s.node_id for s in stores}) == 4
    finally:
        for store in stores:
            await store.close()


async def test_a_newer_schema_is_refused(node: Nodes, pg_dsn: str) -> None:
    store = await node()
    await store.execute("UPDATE wahookd_schema SET version = $1", SCHEMA_VERSION + 1)
    with pytest.raises(StorageError, match="newer than this wahookd"):
        await PgStore.open(pg_dsn)


async def test_a_server_that_cannot_be_reached_is_named_without_the_password(
    pg_server: PgServer,
) -> None:
    secret = "never-in-a-message-" + pg_server.password[:6]
    # a port nothing listens on (the server's own port + 1 is not ours: a closed socket)
    dsn = f"postgresql://wahookd:{secret}@127.0.0.1:1/wahookd"
    with pytest.raises(StorageError) as caught:
        await PgStore.open(dsn)
    assert secret not in str(caught.value)
    assert "postgresql://wahookd:****@127.0.0.1:1/wahookd" in str(caught.value)
    wrong = pg_server.dsn().replace(pg_server.password, secret)
    with pytest.raises(StorageError) as caught:
        await PgStore.open(wrong)  # the server says no: authentication failed
    assert secret not in str(caught.value) and "****" in str(caught.value)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:p%40ss@db:5432/w", "postgresql://u:****@db:5432/w"),
        ("postgres://u@db/w", "postgres://u@db/w"),
        ("host=db user=u password=secret dbname=w", "host=db user=u password=**** dbname=w"),
        ("host=db password='a b\\' c' dbname=w", "host=db password=**** dbname=w"),
    ],
)
def test_redact_dsn(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


# ------------------------------------------------------------------- claims
async def test_each_delivery_is_claimed_by_one_node_only(node: Nodes) -> None:
    a, b, c = await node(), await node(), await node()
    _, ids = await queued(a, 300)
    # every node asks for every id at once, in overlapping batches
    batches = [ids[lo : lo + 70] for lo in range(0, 300, 50)]
    results = await asyncio.gather(
        *(store.claim(batch, T0 + 1) for batch in batches for store in (a, b, c))
    )
    claimed = [x.id for got in results for x in got]
    assert sorted(claimed) == ids  # each exactly once
    rows = await a.fetch(
        "SELECT lease_node, count(*) FROM deliveries WHERE state = 'processing' GROUP BY 1"
    )
    assert sum(n for _, n in rows) == 300
    assert {node_id for node_id, _ in rows} <= {a.node_id, b.node_id, c.node_id}


async def test_a_live_nodes_leases_are_not_recovered_by_another(node: Nodes) -> None:
    a, b = await node(), await node()
    _, ids = await queued(a, 3)
    await a.claim(ids, T0 + 1)
    assert await b.recover(T0 + 2) == 0  # b starting up: a's attempts are a's
    assert await b.heartbeat(T0 + 2) == []
    counts = await b.queue_counts(None)
    assert counts[State.PROCESSING] == 3


async def test_heartbeat_renews_leases_and_an_expired_one_is_reclaimed(node: Nodes) -> None:
    a, b = await node(), await node()
    hook, ids = await queued(a, 2)
    claimed = await a.claim(ids, T0 + 1)
    await a.heartbeat(T0 + 20)  # a is alive: its leases run to T0 + 50
    assert await b.heartbeat(T0 + 40) == []
    # a stops beating (killed, frozen): past its lease, b takes its attempts back
    due = await b.heartbeat(T0 + 51)
    assert [(d.id, d.webhook_id, d.due_at) for d in due] == [(i, hook, T0 + 51) for i in ids]
    again = await b.claim(ids, T0 + 52)
    # the same delivery, the same X-Webhook-Id and attempt number as after a restart
    assert [(x.uid, x.attempt) for x in again] == [(x.uid, x.attempt) for x in claimed]


async def test_a_stale_outcome_is_fenced_off_by_the_lease_token(node: Nodes) -> None:
    a, b = await node(), await node()
    _, (delivery,) = await queued(a, 1)
    (first,) = await a.claim([delivery], T0 + 1)
    await b.heartbeat(T0 + 1 + LEASE + 1)  # a froze past its lease (SIGSTOP): reclaimed
    (second,) = await b.claim([delivery], T0 + 40)
    # a wakes up and records its old attempt: logged, but the row is b's attempt's
    await a.record([Outcome(first, T0 + 1, OK, "delivered", None)], T0 + 41)
    (row,) = await a.fetch("SELECT state, lease_node FROM deliveries WHERE id = $1", delivery)
    assert row == (State.PROCESSING, b.node_id)
    assert await a.session_stats("s1") is None  # the stale success counted nowhere
    await b.record([Outcome(second, T0 + 40, FAIL, "retry", T0 + 100)], T0 + 42)
    (row,) = await a.fetch(
        "SELECT state, next_attempt_at, lease_node FROM deliveries WHERE id = $1", delivery
    )
    assert row == (State.RETRYING, T0 + 100, None)
    log = await a.fetch(
        "SELECT attempt, outcome FROM attempts WHERE delivery_id = $1 ORDER BY id", delivery
    )
    assert log == [(1, "delivered"), (1, "retry")]  # both attempts were made: both logged


async def test_leaving_hands_the_leases_back_at_once(node: Nodes) -> None:
    a, b = await node(), await node()
    await a.heartbeat(T0)
    await b.heartbeat(T0)
    hook, ids = await queued(a, 4)
    await a.claim(ids[:3], T0 + 1)
    await b.claim(ids[3:], T0 + 1)
    listed = {n.node_id: n.holding for n in await b.cluster()}
    assert listed == {a.node_id: 3, b.node_id: 1}
    due = await a.leave(T0 + 2)  # SIGTERM: no waiting for the lease to expire
    assert [(d.id, d.webhook_id) for d in due] == [(i, hook) for i in ids[:3]]
    assert [n.node_id for n in await b.cluster()] == [b.node_id]
    again = await b.claim(ids[:3], T0 + 3)
    assert [x.attempt for x in again] == [1, 1, 1]


# -------------------------------------------------------------- stats, ingest
async def test_stats_are_exact_when_nodes_record_at_once(node: Nodes) -> None:
    stores = [await node() for _ in range(3)]
    _, ids = await queued(stores[0], 90)

    async def work(store: PgStore, mine: list[int]) -> None:
        for lo in range(0, len(mine), 5):
            claimed = await store.claim(mine[lo : lo + 5], T0 + 1)
            await store.record(
                [
                    Outcome(
                        c,
                        T0 + 1,
                        OK if c.id % 3 else FAIL,
                        "delivered" if c.id % 3 else "failed",
                        None,
                    )
                    for c in claimed
                ],
                T0 + 2,
            )

    await asyncio.gather(*(work(s, ids[i::3]) for i, s in enumerate(stores)))
    stats = await stores[1].session_stats("s1")
    assert stats is not None
    assert (stats.successful, stats.failed) == (
        sum(1 for i in ids if i % 3),
        sum(1 for i in ids if not i % 3),
    )
    assert stats.success_ms_total == 12 * stats.successful
    per_node = await stores[0].fetch("SELECT DISTINCT node_id FROM session_stats")
    assert len(per_node) == 3  # one row per node: no node waited on another's counter


async def test_a_duplicate_ingested_on_two_nodes_at_once_is_taken_once(node: Nodes) -> None:
    a, b = await node(), await node()
    hook, _ = await a.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], T0)
    for n in range(20):
        items = [IngestItem(event(n, event_id=f"e{n}"), (hook.id,))]
        results = await asyncio.gather(a.ingest(items, T0), b.ingest(items, T0))
        assert sorted(r[0].duplicate for r in results) == [False, True], n
    (count,) = await a.fetch("SELECT count(*) FROM events")
    assert count == (20,)


# -------------------------------------------------------------------- faults
async def test_a_lost_connection_is_a_503_then_the_pool_reconnects(
    node: Nodes, pg_server: PgServer
) -> None:
    store = await node()
    await queued(store, 1)
    (database,) = await store.fetch("SELECT current_database()")
    # the server drops every connection of the pool (a restart, a failover, a proxy)
    pg_server.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database[0]}' AND pid <> pg_backend_pid()"
    )
    failures = 0
    for _ in range(10):  # each dead pooled connection fails once, then is replaced
        try:
            counts = await store.queue_counts(None)
            break
        except StorageUnavailable:
            failures += 1
    else:
        pytest.fail("the pool never reconnected")
    assert counts[State.PENDING] == 1
    assert store.faults == failures


async def test_injected_faults_refuse_writes_and_reads(node: Nodes) -> None:
    store = await node()
    store.write_fault = lambda: OSError("connection refused")
    with pytest.raises(StorageUnavailable, match="refused"):
        await store.set_webhook_active(1, False, 1.0)
    store.read_fault = lambda: RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):  # not a storage fault: as it is
        await store.ping()
    store.write_fault = store.read_fault = None
    assert store.faults == 1
    await store.ping()


# ----------------------------------------------------------------- ordering
async def ordered_hook(store: PgStore) -> int:
    fields = WebhookFields(url="https://a.example/h", events=("*",), secret=None, is_active=True)
    return (await store.create_webhook("s1", fields, T0)).id


async def in_play(store: PgStore, hook: int) -> list[tuple[Any, ...]]:
    """The deliveries of key "k" that are due or in flight (the invariant: at most one)."""
    return await store.fetch(
        "SELECT id, state FROM deliveries WHERE webhook_id = $1 AND order_key = 'k'"
        " AND finished_at IS NULL AND (next_attempt_at IS NOT NULL OR state = 'processing')",
        hook,
    )


async def test_one_head_per_key_when_nodes_ingest_it_at_once(node: Nodes) -> None:
    a, b = await node(), await node()
    hook = await ordered_hook(a)
    for n in range(10):
        items = [IngestItem(event(n), (hook,), ("k",))]
        await asyncio.gather(a.ingest(items, T0), b.ingest(items, T0), a.ingest(items, T0))
        assert len(await in_play(a, hook)) == 1, n


async def test_a_head_finishing_on_one_node_wakes_what_another_ingests_meanwhile(
    node: Nodes,
) -> None:
    a, b = await node(), await node()
    hook = await ordered_hook(a)
    woken: list[int] = []
    a.on_due = lambda items: woken.extend(i.id for i in items)
    for n in range(20):
        (first,) = await a.ingest([IngestItem(event(2 * n), (hook,), ("k",))], T0)
        (head,) = await a.claim([d.id for d in first.deliveries], T0 + 1)
        # the head finishes on a while b ingests the key's next delivery
        _, (second,) = await asyncio.gather(
            a.record([Outcome(head, T0 + 1, OK, "delivered", None)], T0 + 2),
            b.ingest([IngestItem(event(2 * n + 1), (hook,), ("k",))], T0 + 2),
        )
        # either b saw the head finished (due at once) or a's record woke it: never stuck
        (play,) = await in_play(a, hook)
        ids = [d.id for d in second.deliveries] + woken
        assert play[0] in ids, (n, play, ids)
        (next_head,) = await b.claim([play[0]], T0 + 3)
        await b.record([Outcome(next_head, T0 + 3, OK, "delivered", None)], T0 + 4)
        woken.clear()


async def test_a_transaction_of_a_stalled_node_is_ended_and_its_locks_freed(
    node: Nodes, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a node frozen (SIGSTOP, a paused VM) inside a transaction holds its row locks; the
    # server ends that transaction once idle for IDLE_IN_TRANSACTION_MS, not never
    monkeypatch.setattr(pg_connection, "IDLE_IN_TRANSACTION_MS", 500)
    other = await node()
    _, (delivery_id,) = await queued(other, 1)
    frozen = await pg_connection.create_pool(pg_dsn, "full")  # a node's pool, as it opens one
    try:
        conn = await frozen.acquire()
        await conn.execute("BEGIN")
        await conn.execute("SELECT id FROM deliveries WHERE id = $1 FOR UPDATE", delivery_id)
        # ... and then nothing: the other node's write waits for the lock
        loop = asyncio.get_running_loop()
        started = loop.time()
        await other.fetch(
            "UPDATE deliveries SET updated_at = $1 WHERE id = $2 RETURNING id", T0 + 1, delivery_id
        )
        assert loop.time() - started < 5.0  # not the 30 s statement timeout
        ended = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
        with pytest.raises(ended):
            await conn.execute("SELECT 1")  # the server ended the stalled session
    finally:
        frozen.terminate()
