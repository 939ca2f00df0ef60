"""What a transaction tells the other nodes at its commit (NOTIFY), and how to read it.

PostgreSQL delivers a NOTIFY to every listening connection when (and only if) the
transaction that sent it commits, and folds identical ones sent by one transaction into
one. Two channels, each with a compact payload (far under the 8000-byte limit):

- `wahookd_webhooks`: a webhook was created, changed, deleted, activated or
  deactivated (API, 410, auto-disable, `wahookd webhooks enable|disable`). Payload: its
  internal id, or `*` when the static webhooks were synced (a reload or a node starting:
  the listener reads every webhook again). The listener re-reads the webhook, so the
  payload never carries a webhook's fields (nor its secret).
- `wahookd_due`: deliveries became due now (ingest, manual retry, an ordering key's
  turn, a reclaim or a hand-back of leases). Payload: the id of the node that committed
  them (it holds them in memory already and ignores its own signal); the others run one
  bounded poll of the due index at once instead of waiting for the backstop. Sent by
  the node's listener on its own connection just after those commits, coalesced, never
  inside them: PostgreSQL serializes the commits of notifying transactions (a global
  lock held through the WAL flush), which would undo the group commit of concurrent
  ingests (measured: 16 committers, ~6000 tx/s plain, ~3200 tx/s with a NOTIFY each).
"""

from __future__ import annotations

from typing import Any

WEBHOOKS = "wahookd_webhooks"
DUE = "wahookd_due"
ALL_WEBHOOKS = "*"

Conn = Any  # an asyncpg connection


async def webhook_changed(conn: Conn, webhook_id: int | None) -> None:
    """Tell every node, at commit, that this webhook changed (None: maybe all of them)."""
    payload = ALL_WEBHOOKS if webhook_id is None else str(webhook_id)
    await conn.execute("SELECT pg_notify($1, $2)", WEBHOOKS, payload)


async def due(conn: Conn, node_id: str) -> None:
    """Tell the other nodes that deliveries became due now (a statement of its own)."""
    await conn.execute("SELECT pg_notify($1, $2)", DUE, node_id)


def webhook_id_of(payload: str) -> int | None:
    """The webhook id a `wahookd_webhooks` payload names; None for `*` or a bad payload."""
    try:
        return int(payload)
    except ValueError:
        return None
