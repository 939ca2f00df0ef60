"""Ingest: events and their deliveries in, duplicates (same session and id, 24 h) out.

A request is a few statements whatever its size: one advisory lock statement for its
client ids (so two nodes ingesting the same id at once cannot both take it), one lookup
of those ids, one draw of row ids from the sequences, and one multi-row INSERT per
table (UNNEST of arrays: one round trip for any number of rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import asyncpg

from ...models import DueItem, State
from ..types import IDEMPOTENCY_WINDOW_S, IngestItem, IngestResult, new_uids
from . import ordering

# the ordering keys of deliveries whose webhooks do not order (delivery/ordering.py)
_NO_KEYS: tuple[str | None, ...] = (None,)

_INSERT_EVENTS = (
    "INSERT INTO events (id, uid, client_id, session_id, type, body, created_at)"
    " SELECT * FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::text[], $5::text[],"
    " $6::bytea[], $7::float8[])"
)
_INSERT_DELIVERIES = (
    "INSERT INTO deliveries (id, uid, event_id, webhook_id, session_id, event_type, state,"
    " next_attempt_at, created_at, updated_at, order_key)"
    " SELECT id, uid, event_id, webhook_id, session_id, event_type, $7, due_at, $8, $8,"
    " order_key FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],"
    " $6::text[], $9::text[], $10::float8[]) AS v(id, uid, event_id, webhook_id, session_id,"
    " event_type, order_key, due_at)"
)


def client_id_lock(session_id: str, client_id: str) -> int:
    """The advisory lock key of an event's (session, client id): a signed 64-bit hash."""
    digest = hashlib.blake2b(f"{session_id}\0{client_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def ingest(
    conn: asyncpg.Connection, items: Sequence[IngestItem], now: float
) -> list[IngestResult]:
    """Insert events and their deliveries; duplicates (same session and id, 24 h) are skipped.

    Runs inside the caller's transaction.
    """
    recent = await _recent_events(conn, items, now - IDEMPOTENCY_WINDOW_S)
    seen: set[tuple[str, str]] = set()
    duplicate: list[bool] = []
    for item in items:
        ev = item.event
        if ev.event_id is not None:
            key = (ev.session_id, ev.event_id)
            if key in seen or key in recent:
                duplicate.append(True)
                continue
            seen.add(key)
        duplicate.append(False)
    new = [item for item, dup in zip(items, duplicate, strict=True) if not dup]
    # ordered deliveries wait while their key has an unfinished one (ordering.py); the
    # keys' locks make a head finishing on another node wake them, or see them
    keys = {
        (webhook_id, key)
        for item in new
        for webhook_id, key in zip(item.webhook_ids, item.order_keys, strict=False)
        if key is not None
    }
    await ordering.lock_keys(conn, keys)
    in_use = await ordering.keys_in_use(conn, keys)
    fan_out = sum(len(item.webhook_ids) for item in new)
    event_ids, delivery_ids = await _take_ids(conn, len(new), fan_out)
    event_uids = iter(new_uids("evt", len(new)))
    delivery_uids = new_uids("dlv", fan_out)
    ev_cols: list[list[Any]] = [[] for _ in range(7)]
    dl_cols: list[list[Any]] = [[] for _ in range(8)]
    results: list[IngestResult] = []
    next_event = iter(event_ids)
    next_delivery = iter(zip(delivery_ids, delivery_uids, strict=True))
    for item, dup in zip(items, duplicate, strict=True):
        ev = item.event
        if dup:
            results.append(IngestResult(ev.event_id or "", True, ()))
            continue
        client = ev.event_id is not None
        uid = ev.event_id if ev.event_id is not None else next(event_uids)
        event_id = next(next_event)
        row = (event_id, uid, client, ev.session_id, ev.type, ev.body, now)
        for col, value in zip(ev_cols, row, strict=True):
            col.append(value)
        due: list[DueItem] = []
        held = 0
        order_keys = item.order_keys or _NO_KEYS * len(item.webhook_ids)
        for webhook_id, order_key in zip(item.webhook_ids, order_keys, strict=True):
            delivery_id, delivery_uid = next(next_delivery)
            due_at: float | None = now
            if order_key is not None:
                if (webhook_id, order_key) in in_use:
                    due_at = None
                    held += 1
                else:
                    in_use.add((webhook_id, order_key))
            drow = (delivery_id, delivery_uid, event_id, webhook_id, ev.session_id, ev.type)
            for col, value in zip(dl_cols, (*drow, order_key, due_at), strict=True):
                col.append(value)
            if due_at is not None:
                due.append(DueItem(due_at, delivery_id, webhook_id))
        results.append(IngestResult(uid, False, tuple(due), held))
    if ev_cols[0]:
        await conn.execute(_INSERT_EVENTS, *ev_cols)
    if dl_cols[0]:
        await conn.execute(_INSERT_DELIVERIES, *dl_cols[:6], State.PENDING.value, now, *dl_cols[6:])
    return results


async def _take_ids(
    conn: asyncpg.Connection, events: int, deliveries: int
) -> tuple[list[int], list[int]]:
    """`events` new event ids and `deliveries` new delivery ids, each ascending; one statement.

    Sequences hand out ids in the order nodes ask, so delivery ids grow with ingest
    order across the cluster as they do in one process.
    """
    if not events:
        return [], []
    row = await conn.fetchrow(
        "SELECT array(SELECT nextval('events_id_seq') FROM generate_series(1, $1)),"
        " array(SELECT nextval('deliveries_id_seq') FROM generate_series(1, $2))",
        events,
        deliveries,
    )
    return sorted(row[0]), sorted(row[1])


async def _recent_events(
    conn: asyncpg.Connection, items: Sequence[IngestItem], since: float
) -> set[tuple[str, str]]:
    """The (session, client id) pairs of these items already ingested after `since`.

    First takes a transaction-level advisory lock per pair (in key order, so two
    requests never wait on each other in a cycle): a concurrent request with the same
    id, on this node or another, waits for this one to commit and then finds its event.
    """
    pairs = sorted(
        {(i.event.session_id, i.event.event_id) for i in items if i.event.event_id is not None}
    )
    if not pairs:
        return set()
    keys = sorted({client_id_lock(s, c) for s, c in pairs})
    await conn.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k",
        keys,
    )
    rows = await conn.fetch(
        "SELECT e.session_id, e.uid FROM events e"
        " JOIN unnest($1::text[], $2::text[]) AS v(session_id, uid)"
        " ON e.session_id = v.session_id AND e.uid = v.uid"
        " WHERE e.client_id AND e.created_at > $3",
        [s for s, _ in pairs],
        [c for _, c in pairs],
        since,
    )
    return {(r[0], r[1]) for r in rows}
