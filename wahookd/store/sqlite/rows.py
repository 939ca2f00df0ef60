"""Reading rows by column name where the store builds models from them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any


def named(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
    """Execute sql with a cursor whose rows read by column name (`row["url"]`).

    Per cursor, not per connection: the hot paths keep plain tuples (or one JSON row).
    """
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return cur.execute(sql, tuple(params))
