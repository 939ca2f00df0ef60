"""Ingest: events and their deliveries in, duplicates (same session and id, 24 h) out."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...models import DueItem, State
from ..types import IDEMPOTENCY_WINDOW_S, IngestItem, IngestResult, new_uids
from . import ordering
from .batching import insert_rows

# event ids looked up per query; far below SQLite's limit on bound parameters
_LOOKUP_CHUNK = 500
# the ordering keys of deliveries whose webhooks do not order (delivery/ordering.py)
_NO_KEYS: tuple[str | None, ...] = (None,)


@dataclass(slots=True)
class Ids:
    """The next free event and delivery row ids; only the writer thread takes from it."""

    next_event: int
    next_delivery: int

    def take_event(self) -> int:
        """Hand out the next event id."""
        event_id = self.next_event
        self.next_event += 1
        return event_id

    def take_delivery(self) -> int:
        """Hand out the next delivery id."""
        delivery_id = self.next_delivery
        self.next_delivery += 1
        return delivery_id


def next_ids(conn: sqlite3.Connection) -> Ids:
    """The ids after the highest event and delivery ids in use."""
    (events,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
    (deliveries,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deliveries").fetchone()
    return Ids(next_event=int(events) + 1, next_delivery=int(deliveries) + 1)


def ingest(
    conn: sqlite3.Connection, ids: Ids, items: Sequence[IngestItem], now: float
) -> list[IngestResult]:
    """Insert events and their deliveries; duplicates (same session and id, 24 h) are skipped."""
    results: list[IngestResult] = []
    event_rows: list[tuple[Any, ...]] = []
    delivery_rows: list[tuple[Any, ...]] = []
    recent = _recent_events(conn, items, now - IDEMPOTENCY_WINDOW_S)
    seen: set[tuple[str, str]] = set()
    # ids drawn for the whole request at once: one clock reading, one urandom call
    event_uids = iter(new_uids("evt", len(items)))
    delivery_uids = iter(new_uids("dlv", sum(len(item.webhook_ids) for item in items)))
    pending = State.PENDING.value
    # ordered deliveries wait while their key has an unfinished one (ordering.py)
    in_use = ordering.keys_in_use(
        conn,
        (
            (webhook_id, key)
            for item in items
            for webhook_id, key in zip(item.webhook_ids, item.order_keys, strict=False)
            if key is not None
        ),
    )
    for item in items:
        ev = item.event
        client_id = ev.event_id
        if client_id is None:
            uid = next(event_uids)
        else:
            key = (ev.session_id, client_id)
            if key in seen or key in recent:
                results.append(IngestResult(client_id, True, ()))
                continue
            seen.add(key)
            uid = client_id
        event_id = ids.take_event()
        event_rows.append(
            (event_id, uid, client_id is not None, ev.session_id, ev.type, ev.body, now)
        )
        due: list[DueItem] = []
        held = 0
        keys = item.order_keys or _NO_KEYS * len(item.webhook_ids)
        for webhook_id, order_key in zip(item.webhook_ids, keys, strict=True):
            delivery_id = ids.take_delivery()
            due_at: float | None = now
            if order_key is not None:
                if (webhook_id, order_key) in in_use:
                    due_at = None
                    held += 1
                else:
                    in_use.add((webhook_id, order_key))
            delivery_rows.append(
                (
                    delivery_id,
                    next(delivery_uids),
                    event_id,
                    webhook_id,
                    ev.session_id,
                    ev.type,
                    pending,
                    due_at,
                    now,
                    now,
                    order_key,
                )
            )
            if due_at is not None:
                due.append(DueItem(due_at, delivery_id, webhook_id))
        results.append(IngestResult(uid, False, tuple(due), held))
    insert_rows(
        conn,
        "INSERT INTO events (id, uid, client_id, session_id, type, body, created_at)",
        event_rows,
    )
    insert_rows(
        conn,
        "INSERT INTO deliveries (id, uid, event_id, webhook_id, session_id, event_type,"
        " state, next_attempt_at, created_at, updated_at, order_key)",
        delivery_rows,
    )
    return results


def _recent_events(
    conn: sqlite3.Connection, items: Sequence[IngestItem], since: float
) -> set[tuple[str, str]]:
    """The (session, client id) pairs of these items already ingested after `since`."""
    by_session: dict[str, set[str]] = {}
    for item in items:
        if item.event.event_id is not None:
            by_session.setdefault(item.event.session_id, set()).add(item.event.event_id)
    found: set[tuple[str, str]] = set()
    for session_id, client_ids in by_session.items():
        wanted = sorted(client_ids)
        for lo in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[lo : lo + _LOOKUP_CHUNK]
            rows = conn.execute(
                "SELECT uid FROM events WHERE session_id = ? AND client_id = 1"
                f" AND uid IN ({','.join('?' * len(chunk))}) AND created_at > ?",
                (session_id, *chunk, since),
            )
            found.update((session_id, uid) for (uid,) in rows)
    return found
