"""Webhooks: session and static webhooks, and parking their queued deliveries."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...models import CLEARABLE_STATES, State, Webhook
from .rows import named

# after a secret changes, deliveries are signed with the previous one too for this long
SECRET_OVERLAP_S = 24 * 3600.0

_QUEUED = f"('{State.PENDING}', '{State.RETRYING}')"
_CLEARABLE = "(" + ", ".join(f"'{s}'" for s in CLEARABLE_STATES) + ")"
_WEBHOOK_SELECT = (
    "SELECT id, kind, session_id, url, events, secret, headers, is_active, created_at,"
    " updated_at, static_key, previous_secret, previous_secret_until FROM webhooks"
)


def webhooks(conn: sqlite3.Connection) -> list[Webhook]:
    """Every webhook, session and static."""
    return [_webhook(r) for r in named(conn, _WEBHOOK_SELECT)]


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
    enc = (url, json.dumps(list(events)), secret, _enc_headers(headers), is_active)
    if row is None:
        conn.execute(
            "INSERT INTO webhooks (kind, session_id, url, events, secret, headers,"
            " is_active, created_at, updated_at) VALUES ('session', ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, *enc, now, now),
        )
        (webhook_id,) = conn.execute("SELECT last_insert_rowid()").fetchone()
        was_active = True
    else:
        old = _webhook(row)
        webhook_id, was_active = old.id, old.is_active
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
            (*enc, previous, until, now, webhook_id),
        )
    set_parked(conn, webhook_id, parked=not is_active, now=now)
    new = named(conn, _WEBHOOK_SELECT + " WHERE id = ?", (webhook_id,)).fetchone()
    return _webhook(new), is_active and not was_active


def delete_session_webhook(conn: sqlite3.Connection, session_id: str) -> Webhook | None:
    """Delete a session's webhook and drop its queued deliveries."""
    row = named(
        conn, _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    hook = _webhook(row)
    conn.execute("DELETE FROM webhooks WHERE id = ?", (hook.id,))
    conn.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
        f" WHERE webhook_id = ? AND state IN {_CLEARABLE})",
        (hook.id,),
    )
    conn.execute(
        f"DELETE FROM deliveries WHERE webhook_id = ? AND state IN {_CLEARABLE}",
        (hook.id,),
    )
    return hook


def set_webhook_active(conn: sqlite3.Connection, webhook_id: int, active: bool, now: float) -> None:
    """Activate or deactivate a webhook; its queued deliveries park or wake up with it."""
    conn.execute(
        "UPDATE webhooks SET is_active = ?, updated_at = ?,"
        " failing_since = CASE WHEN ? THEN NULL ELSE failing_since END WHERE id = ?",
        (active, now, active, webhook_id),
    )
    set_parked(conn, webhook_id, parked=not active, now=now)


def sync_static_webhooks(
    conn: sqlite3.Connection,
    statics: Sequence[tuple[str, str, str, Sequence[str], str | None, Any]],
    now: float,
) -> list[Webhook]:
    """Make the static webhooks those of the config; see `Store.sync_static_webhooks`."""
    keys = [s[0] for s in statics]
    for key, session, url, events, secret, headers in statics:
        conn.execute(
            "INSERT INTO webhooks (kind, session_id, static_key, url, events, secret,"
            " headers, is_active, created_at, updated_at)"
            " VALUES ('static', ?, ?, ?, ?, ?, ?, 1, ?, ?)"
            " ON CONFLICT (static_key) DO UPDATE SET url = excluded.url,"
            " events = excluded.events, secret = excluded.secret,"
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
                session,
                key,
                url,
                json.dumps(list(events)),
                secret,
                _enc_headers(headers),
                now,
                now,
                now + SECRET_OVERLAP_S,
            ),
        )
        (webhook_id,) = conn.execute(
            "SELECT id FROM webhooks WHERE static_key = ?", (key,)
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
    """Park (inactive webhook) or wake the webhook's queued deliveries."""
    if parked:
        conn.execute(
            f"UPDATE deliveries SET state = '{State.PENDING}', next_attempt_at = NULL"
            f" WHERE webhook_id = ? AND state IN {_QUEUED} AND next_attempt_at IS NOT NULL",
            (webhook_id,),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?"
            f" WHERE webhook_id = ? AND state IN {_QUEUED} AND next_attempt_at IS NULL",
            (now, webhook_id),
        )


def _enc_headers(headers: Sequence[tuple[str, str]] | None) -> str | None:
    return json.dumps(dict(headers)) if headers else None


def _webhook(row: sqlite3.Row) -> Webhook:
    """A webhook from a row of `_WEBHOOK_SELECT`, by column name."""
    headers = tuple(json.loads(row["headers"]).items()) if row["headers"] else ()
    return Webhook(
        id=row["id"],
        kind=row["kind"],
        session=row["session_id"],
        url=row["url"],
        events=tuple(json.loads(row["events"])),
        secret=row["secret"],
        headers=headers,
        is_active=bool(row["is_active"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        static_key=row["static_key"],
        previous_secret=row["previous_secret"],
        previous_secret_until=row["previous_secret_until"],
    )
