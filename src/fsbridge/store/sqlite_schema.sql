-- fsbridge SQLite schema, version 1. Times are Unix seconds (REAL).

CREATE TABLE IF NOT EXISTS inbox (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    stream        TEXT NOT NULL DEFAULT '',
    dedup_key     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    body          BLOB NOT NULL,
    received_at   REAL NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending',   -- pending | dispatched
    lease_until   REAL,
    dispatched_at REAL,
    UNIQUE (source, dedup_key)
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (received_at) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS quarantine (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    stream      TEXT NOT NULL DEFAULT '',
    dedup_key   TEXT NOT NULL,
    body        BLOB NOT NULL,
    error       TEXT NOT NULL,
    received_at REAL NOT NULL,
    status      TEXT NOT NULL DEFAULT 'quarantined',  -- quarantined | replayed
    UNIQUE (source, dedup_key)
);

CREATE TABLE IF NOT EXISTS deliveries (
    id               TEXT PRIMARY KEY,
    inbox_id         TEXT NOT NULL,
    flow             TEXT NOT NULL,
    destination      TEXT NOT NULL,
    message_id       TEXT NOT NULL UNIQUE,
    body             BLOB NOT NULL,
    status           TEXT NOT NULL,                  -- pending | delivered | dead | parked | dry_run
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    received_at      REAL NOT NULL,
    retry_started_at REAL NOT NULL,
    next_attempt_at  REAL NOT NULL,
    lease_until      REAL,
    send_alone       INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT,
    last_response    TEXT,                           -- first 2 KiB of the last response
    delivered_at     REAL,
    action           TEXT NOT NULL DEFAULT '',       -- track, identify, users.create, users.delete
    sync_scope       TEXT,                           -- e.g. fullstory.users:<uid>, for redundant-call suppression
    content_hash     TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries (status, created_at);
CREATE INDEX IF NOT EXISTS deliveries_by_flow ON deliveries (flow, status);

CREATE TABLE IF NOT EXISTS attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      TEXT NOT NULL,
    attempted_at     REAL NOT NULL,
    duration_ms      REAL NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_delivery ON attempts (delivery_id);

CREATE TABLE IF NOT EXISTS flow_outcomes (
    inbox_id TEXT NOT NULL,
    flow     TEXT NOT NULL,
    outcome  TEXT NOT NULL,   -- filtered
    reason   TEXT NOT NULL,
    at       REAL NOT NULL,
    PRIMARY KEY (inbox_id, flow)
);

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, key)
);

CREATE TABLE IF NOT EXISTS destination_state (
    name          TEXT PRIMARY KEY,
    parked_reason TEXT,
    parked_at     REAL,
    paused        INTEGER NOT NULL DEFAULT 0   -- an operator's pause survives restarts; parking does not
);

-- The last content successfully synced per scope (a Fullstory uid): an identical update is not sent again.
CREATE TABLE IF NOT EXISTS sync_snapshots (
    scope        TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    synced_at    REAL NOT NULL
);

-- Which Segment userId an identifier belongs to; the first claim wins, later contrary claims are conflicts.
CREATE TABLE IF NOT EXISTS identity_links (
    kind       TEXT NOT NULL,   -- anonymous_id | email | email_sha256 | fullstory_uid
    value      TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    PRIMARY KEY (kind, value)
);

CREATE TABLE IF NOT EXISTS identity_conflicts (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    value        TEXT NOT NULL,
    kept_user_id TEXT NOT NULL,
    claimed_by   TEXT NOT NULL,
    seen_at      REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS group_members (
    group_id  TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE IF NOT EXISTS audience_membership (
    user_id      TEXT NOT NULL,
    audience_key TEXT NOT NULL,
    member       INTEGER NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (user_id, audience_key)
);

-- Health alerts: one row per condition, so an alert is sent once when it starts and once when it clears.
CREATE TABLE IF NOT EXISTS alerts (
    key         TEXT PRIMARY KEY,
    active      INTEGER NOT NULL,
    since       REAL NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_time ON inbox (received_at);
CREATE INDEX IF NOT EXISTS attempts_by_time ON attempts (attempted_at);

-- Periodic jobs (the health monitor) run once per cluster: whoever holds the lease runs them.
CREATE TABLE IF NOT EXISTS job_leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until REAL NOT NULL
);
