"""The delivery log's schema in PostgreSQL: its migrations, applied once per database.

`MIGRATIONS[i]` takes the schema from version i to i + 1 (the row of `wahookd_schema`).
`migrate()` runs in one transaction under a transaction-level advisory lock, so when
several nodes start at once exactly one migrates and the others wait, then find the
schema current. The semantics are those of the SQLite schema (store/sqlite/schema.py);
what differs is named where it differs:

- times stay Unix seconds in double precision, as in SQLite, so both backends store the
  same values (`transition()`'s, to the bit);
- a delivery in flight holds a lease: the node that claimed it (`lease_node`), until
  when (`lease_until`, renewed by that node's heartbeat) and a fencing token
  (`lease_token`, from one sequence) that its outcome must present;
- session stats are one row per (session, event type, node), summed on read, so nodes
  recording at once never wait on each other's counters;
- `nodes` lists the nodes: their heartbeat, and whether they are stopping;
- (2) cluster-wide limits: claims count a webhook's deliveries in flight (all, and by
  node) through the partial index `deliveries_processing`; a webhook's rate-limit
  bucket is a row of `webhook_tokens`, and the nodes a limit held back lately are rows
  of `webhook_demand` (both UNLOGGED: claims write no WAL for them; a server crash
  empties them, which fills every bucket, as the SPEC's burst allows, and forgets
  who waited for a few seconds).
"""

from __future__ import annotations

from typing import Any

from ..types import StorageError

# the advisory lock key migrations hold (any constant; "wahookd" in ASCII)
MIGRATION_LOCK = 0x7761686F6F6B64

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE webhooks (
        id BIGSERIAL PRIMARY KEY,
        public_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('session', 'extra', 'static')),
        session_id TEXT NOT NULL,
        static_key TEXT UNIQUE,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT,
        previous_secret TEXT,
        previous_secret_until DOUBLE PRECISION,
        headers TEXT,
        is_active BOOLEAN NOT NULL DEFAULT TRUE,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        failing_since DOUBLE PRECISION,
        last_failure_at DOUBLE PRECISION,
        description TEXT,
        filter_chats TEXT,
        ordering TEXT NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'chat', 'session')),
        rate_limit INTEGER CHECK (rate_limit IS NULL OR rate_limit >= 1)
    );
    CREATE UNIQUE INDEX webhooks_session ON webhooks (session_id) WHERE kind = 'session';
    CREATE INDEX webhooks_extra ON webhooks (session_id) WHERE kind = 'extra';

    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        uid TEXT NOT NULL,
        client_id BOOLEAN NOT NULL,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        body BYTEA NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX events_client_uid ON events (session_id, uid) WHERE client_id;

    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        uid TEXT NOT NULL,
        event_id BIGINT NOT NULL,
        webhook_id BIGINT NOT NULL,
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        cycle_base INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        last_status INTEGER,
        last_error TEXT,
        order_key TEXT,
        lease_node TEXT,
        lease_until DOUBLE PRECISION,
        lease_token BIGINT
    );
    CREATE UNIQUE INDEX deliveries_uid ON deliveries (uid);
    -- next_attempt_at is set exactly while a delivery waits for an attempt it may get
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) INCLUDE (webhook_id)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX deliveries_webhook_due ON deliveries (webhook_id, next_attempt_at, id)
        WHERE next_attempt_at IS NOT NULL;
    -- the queue counts read only this index's queued part: their cost follows the queue,
    -- never the size of the log
    CREATE INDEX deliveries_state_session ON deliveries (state, session_id, id);
    CREATE INDEX deliveries_session ON deliveries (session_id, id);
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX deliveries_order ON deliveries (webhook_id, order_key, id)
        WHERE order_key IS NOT NULL AND finished_at IS NULL;
    CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);
    -- leases: a node's own (heartbeat, hand-back) and the expired ones (reclaim)
    CREATE INDEX deliveries_lease_node ON deliveries (lease_node) WHERE state = 'processing';
    CREATE INDEX deliveries_lease_until ON deliveries (lease_until) WHERE state = 'processing';
    CREATE SEQUENCE lease_tokens;

    CREATE TABLE attempts (
        id BIGSERIAL PRIMARY KEY,
        delivery_id BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        outcome TEXT NOT NULL,
        error TEXT,
        response_body TEXT
    );
    CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt);

    CREATE TABLE session_stats (
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        node_id TEXT NOT NULL,
        successful BIGINT NOT NULL DEFAULT 0,
        failed BIGINT NOT NULL DEFAULT 0,
        success_ms_total BIGINT NOT NULL DEFAULT 0,
        last_delivery_at DOUBLE PRECISION,
        PRIMARY KEY (session_id, event_type, node_id)
    );

    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        lease_s DOUBLE PRECISION NOT NULL,
        stopping BOOLEAN NOT NULL DEFAULT FALSE
    );
    """,
    # 2: cluster-wide per_webhook_concurrency and rateLimit (claims.py, limits.py)
    """
    CREATE INDEX deliveries_processing ON deliveries (webhook_id, lease_node)
        WHERE state = 'processing';
    CREATE UNLOGGED TABLE webhook_demand (
        webhook_id BIGINT NOT NULL,
        node_id TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (webhook_id, node_id)
    );
    CREATE UNLOGGED TABLE webhook_tokens (
        webhook_id BIGINT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: Any) -> int:
    """Bring the schema to SCHEMA_VERSION, once, whichever node gets here first; the version.

    One transaction under an advisory lock: a second node waits for the first one's
    migration to commit, then finds nothing left to do. A database with a newer schema
    is refused (StorageError) and left alone.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS wahookd_schema (version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT max(version) FROM wahookd_schema")
        version = int(version or 0)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"database schema version {version} is newer than this wahookd ({SCHEMA_VERSION})"
            )
        for index in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[index])
        if version < SCHEMA_VERSION:
            await conn.execute("DELETE FROM wahookd_schema")
            await conn.execute("INSERT INTO wahookd_schema VALUES ($1)", SCHEMA_VERSION)
    return SCHEMA_VERSION
