"""The SQLite schema, its migrations, and how connections are opened.

The CLI uses plain sqlite3 (short-lived, synchronous); the server uses aiosqlite so the event loop
never blocks on disk. WAL mode lets several Granian workers and the CLI share one file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

# Each entry upgrades the schema by one version; never edit a shipped entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE customers (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        email       TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id              TEXT PRIMARY KEY,
        digest          BLOB NOT NULL UNIQUE,      -- sha256(key); the key itself is never stored
        prefix          TEXT NOT NULL,             -- first characters, to recognise a key in lists
        name            TEXT NOT NULL,
        customer_id     TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','disabled','revoked')),
        rate_limit_rpm  INTEGER NOT NULL DEFAULT 0,
        rate_limit_tpm  INTEGER NOT NULL DEFAULT 0,
        allowed_models  TEXT NOT NULL DEFAULT '[]', -- JSON list; empty = every model
        created_at      TEXT NOT NULL,
        updated_at      INTEGER NOT NULL            -- ms since epoch; servers poll it to pick up changes
    );
    CREATE INDEX api_keys_updated ON api_keys(updated_at);
    CREATE TABLE request_log (
        seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id             TEXT NOT NULL,
        key_id                 TEXT NOT NULL,
        model                  TEXT NOT NULL,
        provider               TEXT NOT NULL DEFAULT '',
        endpoint_id            TEXT NOT NULL DEFAULT '',
        status                 TEXT NOT NULL,       -- success | error
        http_status            INTEGER NOT NULL,
        input_tokens           INTEGER NOT NULL DEFAULT 0,
        output_tokens          INTEGER NOT NULL DEFAULT 0,
        cached_tokens          INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens  INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens       INTEGER NOT NULL DEFAULT 0,
        cost_micro_dollars     INTEGER NOT NULL DEFAULT 0,
        latency_ms             REAL NOT NULL DEFAULT 0,
        error                  TEXT NOT NULL DEFAULT '',
        created_at             TEXT NOT NULL
    );
    CREATE INDEX request_log_request ON request_log(request_id);
    CREATE INDEX request_log_created ON request_log(created_at);
    CREATE TABLE usage_daily (
        key_id                 TEXT NOT NULL,
        day                    TEXT NOT NULL,       -- YYYY-MM-DD, UTC
        model                  TEXT NOT NULL,
        requests               INTEGER NOT NULL DEFAULT 0,
        errors                 INTEGER NOT NULL DEFAULT 0,
        input_tokens           INTEGER NOT NULL DEFAULT 0,
        output_tokens          INTEGER NOT NULL DEFAULT 0,
        cached_tokens          INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens  INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens       INTEGER NOT NULL DEFAULT 0,
        cost_micro_dollars     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, day, model)
    );
    CREATE TABLE responses (
        request_id    TEXT PRIMARY KEY,
        key_id        TEXT NOT NULL,
        status        TEXT NOT NULL,               -- pending | streaming | completed | failed
        model         TEXT NOT NULL,
        provider      TEXT NOT NULL DEFAULT '',
        created_at    TEXT NOT NULL,
        completed_at  TEXT,
        body          BLOB                          -- the InferenceResponse JSON once completed
    );
    CREATE TABLE provider_credentials (
        endpoint_id  TEXT PRIMARY KEY,
        ciphertext   BLOB NOT NULL,
        nonce        BLOB NOT NULL,
        key_version  INTEGER NOT NULL,
        hint         TEXT NOT NULL,
        updated_at   TEXT NOT NULL
    );
    """,
    # 2: batches (see the README's routes) — the native and Anthropic batch APIs and the rate-limit fallback.
    """
    CREATE TABLE batches (
        id                   TEXT PRIMARY KEY,
        key_id               TEXT NOT NULL,          -- only this key sees the batch
        origin               TEXT NOT NULL,          -- native | anthropic | fallback
        status               TEXT NOT NULL,          -- in_progress | canceling | ended
        request_count        INTEGER NOT NULL,
        created_at           TEXT NOT NULL,
        created_ms           INTEGER NOT NULL,
        ready_ms             INTEGER NOT NULL,       -- items start after this (fallback collection window)
        expires_ms           INTEGER NOT NULL,       -- items still queued then are `expired`
        ended_at             TEXT,
        cancel_initiated_at  TEXT
    );
    CREATE INDEX batches_key ON batches(key_id, created_ms);
    CREATE TABLE batch_items (
        batch_id        TEXT NOT NULL,
        idx             INTEGER NOT NULL,
        custom_id       TEXT NOT NULL,
        request_id      TEXT NOT NULL,               -- the id its request-log / usage record carries
        model           TEXT NOT NULL,
        request         BLOB NOT NULL,               -- canonical InferenceRequest JSON
        route           TEXT NOT NULL,               -- gateway | provider_batch (decided at submission)
        state           TEXT NOT NULL,               -- queued|running|submitted|succeeded|errored|canceled|expired
        not_before_ms   INTEGER NOT NULL DEFAULT 0,  -- back-off after an upstream 429
        attempts        INTEGER NOT NULL DEFAULT 0,
        lease_owner     TEXT,                        -- the worker running it; the lease lets others
        lease_until_ms  INTEGER NOT NULL DEFAULT 0,  -- take over when that worker died
        upstream_batch  TEXT,                        -- the provider's batch id (provider_batch items)
        result          BLOB,                        -- JSON {type, response | error} once finished
        finished_at     TEXT,
        PRIMARY KEY (batch_id, idx)
    );
    CREATE INDEX batch_items_work ON batch_items(state, route, not_before_ms);
    CREATE INDEX batch_items_upstream ON batch_items(upstream_batch);
    CREATE TABLE upstream_batches (
        id                TEXT PRIMARY KEY,          -- the provider's batch id
        batch_id          TEXT NOT NULL,
        provider          TEXT NOT NULL,
        endpoint_id       TEXT NOT NULL,
        status            TEXT NOT NULL,             -- in_progress | collected
        next_poll_ms      INTEGER NOT NULL,
        lease_owner       TEXT,
        lease_until_ms    INTEGER NOT NULL DEFAULT 0,
        cancel_requested  INTEGER NOT NULL DEFAULT 0,
        created_at        TEXT NOT NULL
    );
    CREATE INDEX upstream_batches_poll ON upstream_batches(status, next_poll_ms);
    """,
    # 3: the routing decision of each logged request (see docs/routing.md): why it went to its endpoint, what
    # a cache hit there was estimated to save, and how much of that was given up by going elsewhere.
    """
    ALTER TABLE request_log ADD COLUMN route_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE request_log ADD COLUMN cache_value_usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE request_log ADD COLUMN cost_penalty_usd REAL NOT NULL DEFAULT 0;
    """,
    # 4: what the Responses API keeps beside a stored answer to continue it (previous_response_id):
    # the canonical input and the echoed parameters, JSON (docs/responses.md).
    """
    ALTER TABLE responses ADD COLUMN conversation BLOB;
    """,
    # 5: stored answers keyed by (key, request id): an X-Request-ID another key reuses is another
    # row, so no key can overwrite (or hide) another's answer (docs/security.md).
    """
    CREATE TABLE responses_by_key (
        key_id        TEXT NOT NULL,
        request_id    TEXT NOT NULL,
        status        TEXT NOT NULL,               -- pending | streaming | completed | failed
        model         TEXT NOT NULL,
        provider      TEXT NOT NULL DEFAULT '',
        created_at    TEXT NOT NULL,
        completed_at  TEXT,
        body          BLOB,                         -- the InferenceResponse JSON once completed
        conversation  BLOB,                         -- what the Responses API continues from (migration 4)
        PRIMARY KEY (key_id, request_id)
    );
    INSERT INTO responses_by_key (key_id, request_id, status, model, provider, created_at, completed_at, body,
        conversation)
        SELECT key_id, request_id, status, model, provider, created_at, completed_at, body, conversation
        FROM responses;
    DROP TABLE responses;
    ALTER TABLE responses_by_key RENAME TO responses;
    """,
    # 6: spend budgets on keys and customers (see docs/budgets.md): micro-dollars per UTC period, NULL = none.
    """
    ALTER TABLE api_keys ADD COLUMN budget_micro INTEGER;
    ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'month';
    ALTER TABLE customers ADD COLUMN budget_micro INTEGER;
    ALTER TABLE customers ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'month';
    ALTER TABLE customers ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX api_keys_customer ON api_keys(customer_id);
    """,
    # 7: provider-batch budget reservations that outlive a request (see docs/budgets.md): one row per
    # item and budget it was reserved on, deleted by whoever settles it; and this database's identity,
    # which names its share of a budget's spend in Redis.
    """
    CREATE TABLE budget_holds (
        batch_id     TEXT NOT NULL,
        idx          INTEGER NOT NULL,
        scope        TEXT NOT NULL,              -- key:<key id> | customer:<customer id>
        amount       INTEGER NOT NULL,           -- micro-dollars: the item's worst case
        reserved_ms  INTEGER NOT NULL,           -- counts in the budget period containing it
        PRIMARY KEY (batch_id, idx, scope)
    );
    CREATE INDEX budget_holds_scope ON budget_holds(scope, reserved_ms);
    CREATE TABLE database_identity (id TEXT NOT NULL);
    INSERT INTO database_identity (id) VALUES (lower(hex(randomblob(8))));
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def _prepare_path(path: str) -> None:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def connect_sync(path: str) -> sqlite3.Connection:
    _prepare_path(path)
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


async def connect(path: str) -> aiosqlite.Connection:
    _prepare_path(path)
    conn = await aiosqlite.connect(path, timeout=10.0, isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA busy_timeout=10000")
    await conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _statements(script: str) -> list[str]:
    """Split a script into statements the way SQLite would (a ';' inside a comment doesn't end one)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION; returns (version before, version after)."""
    (before,) = conn.execute("PRAGMA user_version").fetchone()
    if before > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {before} is newer than this Ensemble ({SCHEMA_VERSION}); upgrade Ensemble"
        )
    for version in range(before, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            (current,) = conn.execute("PRAGMA user_version").fetchone()
            if current > version:  # another process migrated meanwhile
                conn.execute("COMMIT")
                continue
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return before, SCHEMA_VERSION
