"""A claim whose answer was lost is not renewed forever (store/postgres/nodes.py).

Restarting PostgreSQL under running nodes (test_chaos_e2e.py) can cut a connection
just as a claim commits: the row is `processing` under the node's lease, but the node got
an error and never started the attempt. Its heartbeat renews only the leases of the
attempts it holds, so that row's lease runs out and another node takes it back.
"""

from __future__ import annotations

import pytest

from wahookd.events import validate_event
from wahookd.store import IngestItem, PgStore

pytestmark = pytest.mark.timeout(60)

T0 = 1_000_000.0


async def test_a_lease_the_node_does_not_know_of_runs_out(pg_dsn: str) -> None:
    a = await PgStore.open(pg_dsn, node_id="a", lease_s=30)
    b = await PgStore.open(pg_dsn, node_id="b", lease_s=30)
    try:
        hook, _ = await a.put_session_webhook("s1", "https://a.example/", ["*"], None, True, [], T0)
        body = {"event": "session.disconnected", "sessionId": "s1", "reason": "r"}
        events = [validate_event(body | {"reason": f"r{n}"}, now=int(T0)) for n in range(2)]
        results = await a.ingest([IngestItem(e, (hook.id,)) for e in events], T0)
        known, lost = (r.deliveries[0].id for r in results)
        await a.claim([known, lost], T0)
        a._leases.pop(lost)  # its answer never came back: the node does not hold it
        assert await a.heartbeat(T0 + 20) == []  # renews `known` only
        reclaimed = await b.heartbeat(T0 + 31)
        assert [item.id for item in reclaimed] == [lost]
        assert await b.heartbeat(T0 + 45) == []  # `known` is still a's, renewed at T0 + 20
    finally:
        await a.close()
        await b.close()
