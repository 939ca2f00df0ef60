"""Reading rows by column name where the store builds models from them, and a webhook's
state as `transition()` takes it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ...delivery.transition import WebhookState

_ACTIVE = WebhookState(True)
_INACTIVE = WebhookState(False)


def named(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
    """Execute sql with a cursor whose rows read by column name (`row["url"]`).

    Per cursor, not per connection: the hot paths keep plain tuples (or one JSON row).
    """
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return cur.execute(sql, tuple(params))


def webhook_state(is_active: int | None) -> WebhookState | None:
    """The webhook for `transition()` from its is_active column; NULL (deleted): None.

    Read with a LEFT JOIN on webhooks, so a delivery whose webhook was deleted has NULL.
    """
    if is_active is None:
        return None
    return _ACTIVE if is_active else _INACTIVE
