"""Rows to values, for every backend: a webhook, a delivery and its attempts by column name.

Both `sqlite3.Row` and `asyncpg.Record` are read by name (`row["url"]`), so one mapping
serves both; each backend's SQL selects the columns named here. Also what both store
the same way: a webhook's headers as JSON, its public id, the secret's overlap.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any, Protocol

from ..models import Webhook
from .types import AttemptRow, DeliveryRow, WebhookFields

# after a secret changes, deliveries are signed with the previous one too for this long
SECRET_OVERLAP_S = 24 * 3600.0


class Row(Protocol):
    """A row read by column name: sqlite3.Row and asyncpg.Record both are."""

    def __getitem__(self, key: str, /) -> Any: ...


def new_public_id() -> str:
    """A webhook's public id: `wh_` and 16 random hex digits."""
    return "wh_" + secrets.token_hex(8)


def encode_headers(headers: Sequence[tuple[str, str]] | None) -> str | None:
    """A webhook's extra headers as stored: a JSON object, or NULL for none."""
    return json.dumps(dict(headers)) if headers else None


def encode_fields(fields: WebhookFields) -> tuple[Any, ...]:
    """(url, events, secret, headers, is_active) as stored."""
    return (
        fields.url,
        json.dumps(list(fields.events)),
        fields.secret,
        encode_headers(fields.headers),
        fields.is_active,
    )


def encode_extras(fields: WebhookFields) -> tuple[Any, ...]:
    """(description, filter_chats, ordering, rate_limit) as stored."""
    chats = None if fields.filter_chats is None else json.dumps(list(fields.filter_chats))
    return (fields.description, chats, fields.ordering, fields.rate_limit)


def webhook_of(row: Row) -> Webhook:
    """A webhook from a row of the backend's webhook select, by column name."""
    headers = tuple(json.loads(row["headers"]).items()) if row["headers"] else ()
    chats = row["filter_chats"]
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
        public_id=row["public_id"],
        description=row["description"],
        filter_chats=None if chats is None else tuple(json.loads(chats)),
        ordering=row["ordering"],
        rate_limit=row["rate_limit"],
    )


def attempt_of(row: Row) -> AttemptRow:
    """One logged attempt from a row of `attempts`."""
    return AttemptRow(
        attempt=row["attempt"],
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        outcome=row["outcome"],
        error=row["error"],
        response_body=row["response_body"],
    )


def deliveries_of(rows: Sequence[Row], attempts: Sequence[Row]) -> list[DeliveryRow]:
    """DeliveryRows from rows of the delivery select, with their attempts' rows.

    `attempts` are rows of `attempts` (with `delivery_id`) in the order to show them.
    """
    by_id: dict[int, list[AttemptRow]] = {row["id"]: [] for row in rows}
    for a in attempts:
        by_id[a["delivery_id"]].append(attempt_of(a))
    return [
        DeliveryRow(
            row_id=row["id"],
            uid=row["uid"],
            event_uid=row["event_uid"],
            session_id=row["session_id"],
            event_type=row["event_type"],
            state=row["state"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            next_attempt_at=row["next_attempt_at"],
            finished_at=row["finished_at"],
            last_status=row["last_status"],
            last_error=row["last_error"],
            webhook_id=row["webhook_id"],
            attempt_log=tuple(by_id[row["id"]]),
        )
        for row in rows
    ]
