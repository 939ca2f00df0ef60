"""Webhooks: a session's default and extra webhooks, static ones, parking their queues.

The SQL of store/sqlite/webhooks.py in PostgreSQL's dialect; the encoded forms (JSON
text for events, headers and the chat filter) are the same, so both backends give back
the same `Webhook` values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

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
from . import notify, ordering

_QUEUED = f"('{State.PENDING}', '{State.RETRYING}')"
_CLEARABLE = "(" + ", ".join(f"'{s}'" for s in CLEARABLE_STATES) + ")"
_WEBHOOK_SELECT = (
    "SELECT id, kind, session_id, url, events, secret, headers, is_active, created_at,"
    " updated_at, static_key, previous_secret, previous_secret_until, public_id,"
    " description, filter_chats, ordering, rate_limit FROM webhooks"
)


async def webhooks(conn: asyncpg.Connection) -> list[Webhook]:
    """Every webhook, session and static."""
    return [webhook_of(r) for r in await conn.fetch(_WEBHOOK_SELECT + " ORDER BY id")]


async def webhook(conn: asyncpg.Connection, webhook_id: int) -> Webhook | None:
    """One webhook as committed; None when there is none with this id."""
    row = await conn.fetchrow(_WEBHOOK_SELECT + " WHERE id = $1", webhook_id)
    return None if row is None else webhook_of(row)


async def put_session_webhook(
    conn: asyncpg.Connection,
    session_id: str,
    url: str,
    events: Sequence[str],
    secret: str | None,
    is_active: bool,
    headers: Sequence[tuple[str, str]],
    now: float,
) -> tuple[Webhook, bool]:
    """Create or replace a session's webhook; returns it and whether it was just activated."""
    # FOR UPDATE: two nodes replacing the same session's webhook take turns
    row = await conn.fetchrow(
        _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = $1 FOR UPDATE", session_id
    )
    enc = (url, json.dumps(list(events)), secret, encode_headers(headers), is_active)
    if row is None:
        webhook_id = await conn.fetchval(
            "INSERT INTO webhooks (public_id, kind, session_id, url, events, secret, headers,"
            " is_active, created_at, updated_at)"
            " VALUES ($1, 'session', $2, $3, $4, $5, $6, $7, $8, $8)"
            # a node creating it at the same time: the other's row wins, ours updates it
            " ON CONFLICT (session_id) WHERE kind = 'session' DO NOTHING RETURNING id",
            new_public_id(),
            session_id,
            *enc,
            now,
        )
        if webhook_id is None:
            return await put_session_webhook(
                conn, session_id, url, events, secret, is_active, headers, now
            )
        was_active = True
    else:
        old = webhook_of(row)
        webhook_id, was_active = old.id, old.is_active
        await _update(conn, old, enc, now)
    await set_parked(conn, webhook_id, parked=not is_active, now=now)
    await notify.webhook_changed(conn, webhook_id)
    new = await conn.fetchrow(_WEBHOOK_SELECT + " WHERE id = $1", webhook_id)
    return webhook_of(new), is_active and not was_active


async def _update(conn: asyncpg.Connection, old: Webhook, enc: tuple[Any, ...], now: float) -> None:
    """Write (url, events, secret, headers, is_active) over a webhook; rotate the secret."""
    secret = enc[2]
    previous, until = old.previous_secret, old.previous_secret_until
    if secret is None:
        previous = until = None  # unsigned from now on: nothing to overlap with
    elif old.secret is not None and secret != old.secret:
        # rotation: receivers still holding the old secret verify for 24 h more
        previous, until = old.secret, now + SECRET_OVERLAP_S
    await conn.execute(
        "UPDATE webhooks SET url = $1, events = $2, secret = $3, headers = $4,"
        " is_active = $5, previous_secret = $6, previous_secret_until = $7,"
        # re-enabling (after a 410 or auto-disable) restarts the failing clock
        " failing_since = CASE WHEN is_active THEN failing_since ELSE NULL END,"
        " updated_at = $8 WHERE id = $9",
        *enc,
        previous,
        until,
        now,
        old.id,
    )


async def create_webhook(
    conn: asyncpg.Connection,
    session_id: str,
    fields: WebhookFields,
    now: float,
    max_extra: int,
) -> Webhook:
    """Add an extra webhook to a session; WebhookLimitReached when it has `max_extra` already."""
    # the count and the insert must not interleave with another node's: one lock per session
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('wahookd-extra:' || $1, 0))", session_id
    )
    count = await conn.fetchval(
        "SELECT count(*) FROM webhooks WHERE kind = 'extra' AND session_id = $1", session_id
    )
    if count >= max_extra:
        raise WebhookLimitReached(session_id, max_extra)
    row = await conn.fetchrow(
        "INSERT INTO webhooks (public_id, kind, session_id, url, events, secret, headers,"
        " is_active, description, filter_chats, ordering, rate_limit, created_at, updated_at)"
        " VALUES ($1, 'extra', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)"
        " RETURNING id",
        new_public_id(),
        session_id,
        *encode_fields(fields),
        *encode_extras(fields),
        now,
    )
    await notify.webhook_changed(conn, row[0])
    hook = await conn.fetchrow(_WEBHOOK_SELECT + " WHERE id = $1", row[0])
    return webhook_of(hook)


async def update_webhook(
    conn: asyncpg.Connection, webhook_id: int, fields: WebhookFields, now: float
) -> tuple[Webhook, bool] | None:
    """Write every field of a session's default or extra webhook; (it, whether activated)."""
    row = await conn.fetchrow(
        _WEBHOOK_SELECT + " WHERE id = $1 AND kind != 'static' FOR UPDATE", webhook_id
    )
    if row is None:
        return None
    old = webhook_of(row)
    await _update(conn, old, encode_fields(fields), now)
    await conn.execute(
        "UPDATE webhooks SET description = $1, filter_chats = $2, ordering = $3,"
        " rate_limit = $4 WHERE id = $5",
        *encode_extras(fields),
        webhook_id,
    )
    await set_parked(conn, webhook_id, parked=not fields.is_active, now=now)
    await notify.webhook_changed(conn, webhook_id)
    new = await conn.fetchrow(_WEBHOOK_SELECT + " WHERE id = $1", webhook_id)
    return webhook_of(new), fields.is_active and not old.is_active


async def delete_webhook(conn: asyncpg.Connection, webhook_id: int) -> Webhook | None:
    """Delete a session's default or extra webhook and drop its queued deliveries."""
    row = await conn.fetchrow(
        _WEBHOOK_SELECT + " WHERE id = $1 AND kind != 'static' FOR UPDATE", webhook_id
    )
    if row is None:
        return None
    hook = webhook_of(row)
    await _delete(conn, hook.id)
    return hook


async def delete_session_webhook(conn: asyncpg.Connection, session_id: str) -> Webhook | None:
    """Delete a session's webhook and drop its queued deliveries."""
    row = await conn.fetchrow(
        _WEBHOOK_SELECT + " WHERE kind = 'session' AND session_id = $1 FOR UPDATE", session_id
    )
    if row is None:
        return None
    hook = webhook_of(row)
    await _delete(conn, hook.id)
    return hook


async def webhook_health(
    conn: asyncpg.Connection, webhook_ids: Sequence[int]
) -> dict[int, WebhookHealth]:
    """Each webhook's failing clock and newest attempt (status, start time); one statement."""
    rows = await conn.fetch(
        "SELECT w.id, w.failing_since, last.status_code, last.started_at FROM webhooks w"
        " LEFT JOIN LATERAL (SELECT a.status_code, a.started_at FROM deliveries d"
        "  JOIN attempts a ON a.delivery_id = d.id WHERE d.webhook_id = w.id"
        "  ORDER BY a.started_at DESC, a.id DESC LIMIT 1) last ON TRUE"
        " WHERE w.id = ANY($1::bigint[])",
        list(webhook_ids),
    )
    return {r[0]: WebhookHealth(r[1], r[2], r[3]) for r in rows}


async def _delete(conn: asyncpg.Connection, webhook_id: int) -> None:
    """Delete a webhook and its queued deliveries (those in flight fail when recorded)."""
    await conn.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
    await notify.webhook_changed(conn, webhook_id)
    await conn.execute(
        "WITH gone AS (DELETE FROM deliveries WHERE webhook_id = $1"
        f" AND state IN {_CLEARABLE} RETURNING id)"
        " DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)",
        webhook_id,
    )


async def set_webhook_active(
    conn: asyncpg.Connection, webhook_id: int, active: bool, now: float
) -> None:
    """Activate or deactivate a webhook; its queued deliveries park or wake up with it."""
    await conn.execute(
        "UPDATE webhooks SET is_active = $1, updated_at = $2,"
        " failing_since = CASE WHEN $1 THEN NULL ELSE failing_since END WHERE id = $3",
        active,
        now,
        webhook_id,
    )
    await set_parked(conn, webhook_id, parked=not active, now=now)
    await notify.webhook_changed(conn, webhook_id)


async def sync_static_webhooks(
    conn: asyncpg.Connection, statics: Sequence[StaticRow], now: float
) -> list[Webhook]:
    """Make the static webhooks those of the config; see `Store.sync_static_webhooks`.

    Nodes starting together all sync the same file: one at a time (an advisory lock),
    each finding the others' rows.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('wahookd-statics', 0))")
    keys = [s.key for s in statics]
    for s in statics:
        webhook_id = await conn.fetchval(
            "INSERT INTO webhooks AS w (public_id, kind, session_id, static_key, url, events,"
            " secret, headers, is_active, created_at, updated_at, description, filter_chats,"
            " ordering, rate_limit)"
            " VALUES ($1, 'static', $2, $3, $4, $5, $6, $7, TRUE, $8, $8, $10, $11, $12, $13)"
            " ON CONFLICT (static_key) DO UPDATE SET url = excluded.url,"
            " events = excluded.events, secret = excluded.secret,"
            " description = excluded.description, filter_chats = excluded.filter_chats,"
            " ordering = excluded.ordering, rate_limit = excluded.rate_limit,"
            # a changed secret keeps the old one valid for the overlap, as for the API
            " previous_secret = CASE WHEN excluded.secret IS NULL THEN NULL"
            "  WHEN w.secret IS DISTINCT FROM excluded.secret AND w.secret IS NOT NULL"
            "  THEN w.secret ELSE w.previous_secret END,"
            " previous_secret_until = CASE WHEN excluded.secret IS NULL THEN NULL"
            "  WHEN w.secret IS DISTINCT FROM excluded.secret AND w.secret IS NOT NULL"
            "  THEN $9 ELSE w.previous_secret_until END,"
            " failing_since = CASE WHEN w.is_active THEN w.failing_since END,"
            " headers = excluded.headers, is_active = TRUE, updated_at = excluded.updated_at"
            " RETURNING id",
            new_public_id(),
            s.session,
            s.key,
            s.url,
            json.dumps(list(s.events)),
            s.secret,
            encode_headers(s.headers),
            now,
            now + SECRET_OVERLAP_S,
            s.description,
            None if s.filter_chats is None else json.dumps(list(s.filter_chats)),
            s.ordering,
            s.rate_limit,
        )
        await set_parked(conn, webhook_id, parked=False, now=now)
    gone = [
        r[0]
        for r in await conn.fetch("SELECT id, static_key FROM webhooks WHERE kind = 'static'")
        if r[1] not in keys
    ]
    for webhook_id in gone:
        await conn.execute(
            f"UPDATE deliveries SET state = '{State.FAILED}', next_attempt_at = NULL,"
            " finished_at = $1, updated_at = $1,"
            " last_error = 'static webhook removed from the config file'"
            f" WHERE webhook_id = $2 AND state IN {_QUEUED}",
            now,
            webhook_id,
        )
        await conn.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
    # every node reads them all again (a node starting, or a reload on one node)
    await notify.webhook_changed(conn, None)
    return await webhooks(conn)


async def set_parked(
    conn: asyncpg.Connection, webhook_id: int, *, parked: bool, now: float
) -> None:
    """Park (inactive webhook) or wake the webhook's queued deliveries."""
    if parked:
        await conn.execute(
            f"UPDATE deliveries SET state = '{State.PENDING}', next_attempt_at = NULL"
            f" WHERE webhook_id = $1 AND state IN {_QUEUED} AND next_attempt_at IS NOT NULL",
            webhook_id,
        )
    else:
        await conn.execute(
            "UPDATE deliveries d SET next_attempt_at = $1"
            f" WHERE d.webhook_id = $2 AND d.state IN {_QUEUED} AND d.next_attempt_at IS NULL"
            # held ordered ones stay held: only unkeyed ones and each key's head wake
            f" AND (d.order_key IS NULL OR {ordering.IS_LOWEST})",
            now,
            webhook_id,
        )
