"""The delivery log of one webhook (`?webhookId=`, SPEC §8), on the index deliveries_webhook."""

from __future__ import annotations

import sqlite3
from typing import Any

from ...models import State
from ..types import DeliveryRow
from .history import _DELIVERY_SELECT, _with_attempts
from .rows import named


def list_webhook_deliveries(
    conn: sqlite3.Connection,
    session_id: str,
    webhook_id: int,
    state: State | None,
    event_type: str | None,
    before_id: int | None,
    limit: int,
) -> list[DeliveryRow]:
    """A session's deliveries to one webhook, newest first, with attempts; page with before_id."""
    where = ["d.webhook_id = ?", "d.session_id = ?"]
    params: list[Any] = [webhook_id, session_id]
    if state is not None:
        where.append("d.state = ?")
        params.append(state.value)
    if event_type is not None:
        where.append("d.event_type = ?")
        params.append(event_type)
    if before_id is not None:
        where.append("d.id < ?")
        params.append(before_id)
    rows = named(
        conn,
        f"{_DELIVERY_SELECT} WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return _with_attempts(conn, rows)
