"""Webhooks: a session's default and extra webhooks, static ones, parking their queues."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...models import CLEARABLE_STATES, State, Webhook
from ..columns import (
    SECRET_OVERLAP_S,
    encode_extras,
    encode_fields,
    encode_headers,
    new_public_id,
    webhook_of,
)
from ..types import StaticRow, WebhookFields, WebhookHealth, WebhookLimitReached
from . import ordering
from .rows import named

_QUEUED = f"('{State.PENDING}', '{State.RETRYING}')"
_CLEARABLE = "(" + ", ".join(f"'{s}'" for s in CLEARABLE_STATES) + ")"
_WEBHOOK_SELECT = (
    "SELECT id, kind, session_id, url, events, secret, headers, is_active, created_at,"
    " updated_at, static_key, previous_secret, previous_secret_until, public_id,"
    " description, filter_chats, ordering, rate_limit FROM webhooks"
)


def webhooks(conn: sqlite3.Connection) -> list[Webhook]:
    """Every webhook, session and static."""
    return [webhook_of(r) for r in named(conn, _WEBHOOK_SELECT)]


def put_session_webhook(
    conn: sqlite3.Connection,
    session_id: str,
    url: str,
    events: Sequence[str],
    secret: str | None,
    is_active: bool,
    headers: Sequence[tuple[str, str]],
    now: float,
) -> tuple[Webhook, bool]:
    """Create or replace a session's webhook; returns it and whether it was just activated."""
    row = named(
        conn, _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = ?", (session_id,)
    ).fetchone()
    enc = (url, json.dumps(list(events)), secret, encode_headers(headers), is_active)
    if row is None:
        conn.execute(
            "INSERT INTO webhooks (public_id, kind, session_id, url, events, secret, headers,"
            " is_active, created_at, updated_at) VALUES (?, 'session', ?, ?, ?, ?, ?, ?, ?, ?)",
            (new_public_id(), session_id, *enc, now, now),
        )
        (webhook_id,) = conn.execute("SELECT last_insert_rowid()").fetchone()
        was_active = True
    else:
        old = webhook_of(row)
        webhook_id, was_active = old.id, old.is_active
        _update(conn, old, enc, now)
    set_parked(conn, webhook_id, parked=not is_active, now=now)
    new = named(conn, _WEBHOOK_SELECT + " WHERE id = ?", (webhook_id,)).fetchone()
    return webhook_of(new), is_active and not was_active


def _update(conn: sqlite3.Connection, old: Webhook, enc: tuple[Any, ...], now: float) -> None:
    """Write (url, events, secret, headers, is_active) over a webhook; rotate the secret."""
    secret = enc[2]
    previous, until = old.previous_secret, old.previous_secret_until
    if secret is None:
        previous = until = None  # unsigned from now on: nothing to overlap with
    elif old.secret is not None and secret != old.secret:
        # rotation: receivers still holding the old secret verify for 24 h more
        previous, until = old.secret, now + SECRET_OVERLAP_S
    conn.execute(
        "UPDATE webhooks SET url = ?, events = ?, secret = ?, headers = ?,"
        " is_active = ?, previous_secret = ?, previous_secret_until = ?,"
        # re-enabling (after a 410 or auto-disable) restarts the failing clock
        " failing_since = CASE WHEN is_active THEN failing_since ELSE NULL END,"
        " updated_at = ? WHERE id = ?",
        (*enc, previous, until, now, old.id),
    )


# ------------------------------------------------------------ the collection
def webhook_by_public_id(conn: sqlite3.Connection, public_id: str) -> Webhook | None:
    """The webhook with this `wh_...` id, if any."""
    row = named(conn, _WEBHOOK_SELECT + " WHERE public_id = ?", (public_id,)).fetchone()
    return None if row is None else webhook_of(row)


def create_webhook(
    conn: sqlite3.Connection,
    session_id: str,
    fields: WebhookFields,
    now: float,
    max_extra: int,
) -> Webhook:
    """Add an extra webhook to a session; WebhookLimitReached when it has `max_extra` already."""
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM webhooks WHERE kind = 'extra' AND session_id = ?", (session_id,)
    ).fetchone()
    if count >= max_extra:
        raise WebhookLimitReached(session_id, max_extra)
    public_id = new_public_id()
    conn.execute(
        "INSERT INTO webhooks (public_id, kind, session_id, url, events, secret, headers,"
        " is_active, description, filter_chats, ordering, rate_limit, created_at, updated_at)"
        " VALUES (?, 'extra', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (public_id, session_id, *encode_fields(fields), *encode_extras(fields), now, now),
    )
    hook = webhook_by_public_id(conn, public_id)
    assert hook is not None
    return hook


def update_webhook(
    conn: sqlite3.Connection, webhook_id: int, fields: WebhookFields, now: float
) -> tuple[Webhook, bool] | None:
    """Write every field of a session's default or extra webhook; (it, whether activated).

    None when it is gone. Static webhooks belong to the config file: refused by the caller.
    """
    row = named(
        conn, _WEBHOOK_SELECT + " WHERE id = ? AND kind != 'static'", (webhook_id,)
    ).fetchone()
    if row is None:
        return None
    old = webhook_of(row)
    _update(conn, old, encode_fields(fields), now)
    conn.execute(
        "UPDATE webhooks SET description = ?, filter_chats = ?, ordering = ?, rate_limit = ?"
        " WHERE id = ?",
        (*encode_extras(fields), webhook_id),
    )
    set_parked(conn, webhook_id, parked=not fields.is_active, now=now)
    new = named(conn, _WEBHOOK_SELECT + " WHERE id = ?", (webhook_id,)).fetchone()
    return webhook_of(new), fields.is_active and not old.is_active


def delete_webhook(conn: sqlite3.Connection, webhook_id: int) -> Webhook | None:
    """Delete a session's default or extra webhook and drop its queued deliveries."""
    row = named(
        conn, _WEBHOOK_SELECT + " WHERE id = ? AND kind != 'static'", (webhook_id,)
    ).fetchone()
    if row is None:
        return None
    hook = webhook_of(row)
    _delete(conn, hook.id)
    return hook


def webhook_health(
    conn: sqlite3.Connection, webhook_ids: Sequence[int]
) -> dict[int, WebhookHealth]:
    """Each webhook's failing clock and newest attempt (status, start time).

    The newest attempt is looked up through the deliveries of the webhook (index
    deliveries_webhook); once outcomes.record keeps webhooks.last_status and
    last_attempt_at, this becomes a plain read of the row.
    """
    found: dict[int, WebhookHealth] = {}
    for webhook_id in webhook_ids:
        row = conn.execute(
            "SELECT failing_since FROM webhooks WHERE id = ?", (webhook_id,)
        ).fetchone()
        if row is None:
            continue
        last = conn.execute(
            "SELECT a.status_code, a.started_at FROM deliveries d"
            " JOIN attempts a ON a.delivery_id = d.id WHERE d.webhook_id = ?"
            " ORDER BY a.started_at DESC, a.id DESC LIMIT 1",
            (webhook_id,),
        ).fetchone()
        found[webhook_id] = WebhookHealth(
            failing_since=row[0],
            last_status=None if last is None else last[0],
            last_attempt_at=None if last is None else last[1],
        )
    return found


def delete_session_webhook(conn: sqlite3.Connection, session_id: str) -> Webhook | None:
    """Delete a session's webhook and drop its queued deliveries."""
    row = named(
        conn, _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    hook = webhook_of(row)
    _delete(conn, hook.id)
    return hook


def _delete(conn: sqlite3.Connection, webhook_id: int) -> None:
    """Delete a webhook and its queued deliveries (those in flight fail when recorded)."""
    conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
    conn.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
        f" WHERE webhook_id = ? AND state IN {_CLEARABLE})",
        (webhook_id,),
    )
    conn.execute(
        f"DELETE FROM deliveries WHERE webhook_id = ? AND state IN {_CLEARABLE}",
        (webhook_id,),
    )


def set_webhook_active(conn: sqlite3.Connection, webhook_id: int, active: bool, now: float) -> None:
    """Activate or deactivate a webhook; its queued deliveries park or wake up with it."""
    conn.execute(
        "UPDATE webhooks SET is_active = ?, updated_at = ?,"
        " failing_since = CASE WHEN ? THEN NULL ELSE failing_since END WHERE id = ?",
        (active, now, active, webhook_id),
    )
    set_parked(conn, webhook_id, parked=not active, now=now)


def sync_static_webhooks(
    conn: sqlite3.Connection, statics: Sequence[StaticRow], now: float
) -> list[Webhook]:
    """Make the static webhooks those of the config; see `Store.sync_static_webhooks`."""
    keys = [s.key for s in statics]
    for s in statics:
        conn.execute(
            "INSERT INTO webhooks (public_id, kind, session_id, static_key, url, events,"
            " secret, headers, is_active, created_at, updated_at, description, filter_chats,"
            " ordering, rate_limit)"
            " VALUES (?, 'static', ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (static_key) DO UPDATE SET url = excluded.url,"
            " events = excluded.events, secret = excluded.secret,"
            " description = excluded.description, filter_chats = excluded.filter_chats,"
            " ordering = excluded.ordering, rate_limit = excluded.rate_limit,"
            # a changed secret keeps the old one valid for the overlap, as for the API
            " previous_secret = CASE WHEN excluded.secret IS NULL THEN NULL"
            "  WHEN webhooks.secret IS NOT excluded.secret AND webhooks.secret IS NOT NULL"
            "  THEN webhooks.secret ELSE webhooks.previous_secret END,"
            " previous_secret_until = CASE WHEN excluded.secret IS NULL THEN NULL"
            "  WHEN webhooks.secret IS NOT excluded.secret AND webhooks.secret IS NOT NULL"
            "  THEN ? ELSE webhooks.previous_secret_until END,"
            " failing_since = CASE WHEN webhooks.is_active THEN webhooks.failing_since END,"
            " headers = excluded.headers, is_active = 1, updated_at = excluded.updated_at",
            (
                new_public_id(),
                s.session,
                s.key,
                s.url,
                json.dumps(list(s.events)),
                s.secret,
                encode_headers(s.headers),
                now,
                now,
                s.description,
                None if s.filter_chats is None else json.dumps(list(s.filter_chats)),
                s.ordering,
                s.rate_limit,
                now + SECRET_OVERLAP_S,
            ),
        )
        (webhook_id,) = conn.execute(
            "SELECT id FROM webhooks WHERE static_key = ?", (s.key,)
        ).fetchone()
        set_parked(conn, webhook_id, parked=False, now=now)
    gone = [
        row["id"]
        for row in named(conn, "SELECT id, static_key FROM webhooks WHERE kind = 'static'")
        if row["static_key"] not in keys
    ]
    for webhook_id in gone:
        conn.execute(
            f"UPDATE deliveries SET state = '{State.FAILED}', next_attempt_at = NULL,"
            " finished_at = ?, updated_at = ?,"
            " last_error = 'static webhook removed from the config file'"
            f" WHERE webhook_id = ? AND state IN {_QUEUED}",
            (now, now, webhook_id),
        )
        conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
    return webhooks(conn)


def set_parked(conn: sqlite3.Connection, webhook_id: int, *, parked: bool, now: float) -> None:
    """Park (inactive webhook) or wake the webhook's queued deliveries.

    Waking leaves the ordered deliveries held behind their key's head (ordering.py):
    only unkeyed ones and each key's lowest unfinished one become due.
    """
    if parked:
        conn.execute(
            f"UPDATE deliveries SET state = '{State.PENDING}', next_attempt_at = NULL"
            f" WHERE webhook_id = ? AND state IN {_QUEUED} AND next_attempt_at IS NOT NULL",
            (webhook_id,),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?"
            f" WHERE webhook_id = ? AND state IN {_QUEUED} AND next_attempt_at IS NULL"
            f" AND (order_key IS NULL OR {ordering.IS_LOWEST})",
            (now, webhook_id),
        )
