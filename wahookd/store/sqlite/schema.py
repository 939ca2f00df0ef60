"""The delivery log's schema: its migrations and the connections' setup.

`MIGRATIONS[i]` takes the schema from version i to i + 1 (`PRAGMA user_version`);
`prepare()` applies those a database lacks, each in its own transaction.
"""

from __future__ import annotations

import sqlite3

from ..types import StorageError

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('session', 'static')),
        session_id TEXT NOT NULL,
        static_key TEXT UNIQUE,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT,
        previous_secret TEXT,
        previous_secret_until REAL,
        headers TEXT,
        is_active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX webhooks_session ON webhooks(session_id) WHERE kind = 'session';

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL,
        client_id INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX events_client_uid ON events(session_id, uid) WHERE client_id = 1;

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        webhook_id INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        last_status INTEGER,
        last_error TEXT
    );
    CREATE UNIQUE INDEX deliveries_uid ON deliveries(uid);
    -- next_attempt_at is set exactly while a delivery waits for an attempt it may get:
    -- the scheduler's window refills from these two partial indexes.
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX deliveries_webhook_due ON deliveries(webhook_id, next_attempt_at, id)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX deliveries_state_session ON deliveries(state, session_id);
    CREATE INDEX deliveries_event ON deliveries(event_id);

    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_at REAL NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        outcome TEXT NOT NULL,
        error TEXT,
        response_body TEXT
    );
    CREATE INDEX attempts_delivery ON attempts(delivery_id, attempt);

    CREATE TABLE session_stats (
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        successful INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        success_ms_total INTEGER NOT NULL DEFAULT 0,
        last_delivery_at REAL,
        PRIMARY KEY (session_id, event_type)
    ) WITHOUT ROWID;
    """,
    # 2: retention prunes finished deliveries oldest first
    """
    CREATE INDEX deliveries_finished ON deliveries(finished_at) WHERE finished_at IS NOT NULL;
    """,
    # 3: the delivery log API lists a session's deliveries newest first, optionally by
    # state; a manual retry starts a new ladder run; auto-disable tracks failing webhooks
    """
    DROP INDEX deliveries_state_session;
    CREATE INDEX deliveries_state_session ON deliveries(state, session_id, id);
    CREATE INDEX deliveries_session ON deliveries(session_id, id);
    ALTER TABLE deliveries ADD COLUMN cycle_base INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE webhooks ADD COLUMN failing_since REAL;
    """,
    # 4: the refill reads (next_attempt_at, id, webhook_id) from the index alone, so
    # skipping the webhooks that reload themselves costs no table lookups
    """
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id, webhook_id)
        WHERE next_attempt_at IS NOT NULL;
    """,
    # 5: webhook ids are never reused (AUTOINCREMENT, seeded past every id a delivery
    # names), so a delivery of a deleted webhook can never reach a new one; and
    # last_failure_at lets auto-disable forget a failure followed by a quiet spell
    """
    CREATE TABLE webhooks_v5 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('session', 'static')),
        session_id TEXT NOT NULL,
        static_key TEXT UNIQUE,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT,
        previous_secret TEXT,
        previous_secret_until REAL,
        headers TEXT,
        is_active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        failing_since REAL,
        last_failure_at REAL
    );
    INSERT INTO webhooks_v5 SELECT id, kind, session_id, static_key, url, events, secret,
        previous_secret, previous_secret_until, headers, is_active, created_at, updated_at,
        failing_since, failing_since FROM webhooks;
    DROP TABLE webhooks;
    ALTER TABLE webhooks_v5 RENAME TO webhooks;
    CREATE UNIQUE INDEX webhooks_session ON webhooks(session_id) WHERE kind = 'session';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'webhooks', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'webhooks');
    UPDATE sqlite_sequence SET seq = MAX(seq,
        (SELECT COALESCE(MAX(id), 0) FROM webhooks),
        (SELECT COALESCE(MAX(webhook_id), 0) FROM deliveries)) WHERE name = 'webhooks';
    """,
    # 6: several webhooks per session (SPEC §8): a public id, extra webhooks beside the
    # session's default one, chat filter, ordering, rate limit; each delivery keeps the
    # ordering key it got at ingest, indexed for "the earliest unfinished delivery of
    # (webhook, key)"; the delivery log lists one webhook's deliveries
    """
    CREATE TABLE webhooks_v6 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        public_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('session', 'extra', 'static')),
        session_id TEXT NOT NULL,
        static_key TEXT UNIQUE,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT,
        previous_secret TEXT,
        previous_secret_until REAL,
        headers TEXT,
        is_active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        failing_since REAL,
        last_failure_at REAL,
        description TEXT,
        filter_chats TEXT,
        ordering TEXT NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'chat', 'session')),
        rate_limit INTEGER CHECK (rate_limit IS NULL OR rate_limit >= 1)
    );
    INSERT INTO webhooks_v6 (id, public_id, kind, session_id, static_key, url, events,
        secret, previous_secret, previous_secret_until, headers, is_active, created_at,
        updated_at, failing_since, last_failure_at)
        SELECT id, 'wh_' || lower(hex(randomblob(8))), kind, session_id, static_key, url,
        events, secret, previous_secret, previous_secret_until, headers, is_active,
        created_at, updated_at, failing_since, last_failure_at FROM webhooks;
    -- ids are never reused: carry the old table's sequence over (the rename keeps it)
    INSERT INTO sqlite_sequence (name, seq) SELECT 'webhooks_v6', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'webhooks_v6');
    UPDATE sqlite_sequence SET seq = MAX(seq,
        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'webhooks'), 0))
        WHERE name = 'webhooks_v6';
    DROP TABLE webhooks;
    ALTER TABLE webhooks_v6 RENAME TO webhooks;
    CREATE UNIQUE INDEX webhooks_session ON webhooks(session_id) WHERE kind = 'session';
    CREATE INDEX webhooks_extra ON webhooks(session_id) WHERE kind = 'extra';
    ALTER TABLE deliveries ADD COLUMN order_key TEXT;
    CREATE INDEX deliveries_order ON deliveries(webhook_id, order_key, id)
        WHERE order_key IS NOT NULL AND finished_at IS NULL;
    CREATE INDEX deliveries_webhook ON deliveries(webhook_id, id);
    """,
    # 8: the state index takes the id before the session. Keyed (state, session, id),
    # every claim and outcome moved an entry inside its session's range, so a batch of
    # deliveries to 200 sessions dirtied a leaf page per session: the store's CPU per
    # delivery rose by half (measured, issue 12). By id, a batch's entries sit together;
    # the session, last, still lets a per-session count read the index alone.
    """
    DROP INDEX deliveries_state_session;
    CREATE INDEX deliveries_state ON deliveries(state, id, session_id);
    """,
    # 9: no webhook-keyed due index. Keyed (webhook, next_attempt_at, id), each delivery
    # inserted an entry at its webhook's tail and its claim deleted one at its head: with
    # deliveries spread over 200 webhooks, every commit dirtied a page per webhook it
    # touched, and the WAL took 27 KB per delivery against 13 KB without the index (the
    # store's CPU per delivery 56 -> 43 us, bench (g) 126 -> 106 us; issue 12). An
    # overflowed lane reloads from deliveries_due instead, read from the index alone
    # (claims.load_webhook_due), as the global refill already skips those lanes' rows.
    """
    DROP INDEX deliveries_webhook_due;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


# ------------------------------------------------------------ connection setup
def prepare(conn: sqlite3.Connection, synchronous: str) -> None:
    """Set the writer's pragmas and migrate the schema to SCHEMA_VERSION."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    # a writer blocked by another process waits this long before SQLITE_BUSY
    conn.execute("PRAGMA busy_timeout = 5000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"database schema version {version} is newer than this wahookd ({SCHEMA_VERSION})"
        )
    for index in range(version, SCHEMA_VERSION):
        conn.executescript(
            f"BEGIN; {MIGRATIONS[index]}; PRAGMA user_version = {index + 1}; COMMIT;"
        )


def prepare_reader(conn: sqlite3.Connection) -> None:
    """Make the reader connection refuse writes."""
    conn.execute("PRAGMA query_only = ON")
