"""Schema versions shared by both engines: version 1 is `sqlite_schema.sql` (PostgreSQL's is derived
from it), and each later version is one migration, written in SQL both engines run as it is.
An engine applies, in one transaction, the migrations above the version its database records.

Both engines read the version again under their migration lock (PostgreSQL an advisory lock,
SQLite `BEGIN IMMEDIATE`), so a migration runs once even when two processes open a database
together; version 1's statements are still written `IF NOT EXISTS`."""

from __future__ import annotations

from importlib import resources

# Every column of the deliveries table as of version 26 (version 1's and `awaiting`).
_DELIVERY_COLUMNS_V26 = (
    "id, inbox_id, flow, destination, message_id, body, status, attempts, created_at, received_at,"
    " retry_started_at, next_attempt_at, lease_until, send_alone, last_status_code, last_error, last_response,"
    " delivered_at, action, sync_scope, content_hash, awaiting"
)

MIGRATIONS: dict[int, str] = {
    # An event's deliveries, found without a scan: the event story (ops) and replay read them.
    2: "CREATE INDEX IF NOT EXISTS deliveries_by_inbox ON deliveries (inbox_id)",
    # Events whose routing failed: how often, and why. After a bounded number of tries an event moves
    # to quarantine, so a poison event never returns to the queue forever.
    3: "CREATE TABLE IF NOT EXISTS dispatch_failures (inbox_id TEXT PRIMARY KEY, attempts INTEGER NOT NULL,"
    " last_error TEXT NOT NULL, last_at DOUBLE PRECISION NOT NULL)",
    # Dashboard sign-ins: the SHA-256 of the cookie's random id, its CSRF token and its expiry.
    4: "CREATE TABLE IF NOT EXISTS ops_sessions (id_hash TEXT PRIMARY KEY, csrf TEXT NOT NULL,"
    " created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL)",
    # Scheduled jobs: when each is next due, who runs it until when, its cursor and last outcome.
    5: "CREATE TABLE IF NOT EXISTS jobs (name TEXT PRIMARY KEY, next_run_at DOUBLE PRECISION NOT NULL,"
    " running_until DOUBLE PRECISION, owner TEXT, last_started_at DOUBLE PRECISION,"
    " last_finished_at DOUBLE PRECISION, last_outcome TEXT, last_counts TEXT, cursor TEXT)",
    # Retention finds finished dead letters and delivered work by age without a scan.
    6: "CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (status, next_attempt_at)",
    # Profiles (Part 2): the last traits seen per Segment userId, and its groupId.
    7: "CREATE TABLE IF NOT EXISTS profiles (user_id TEXT PRIMARY KEY, traits TEXT NOT NULL, group_id TEXT,"
    " updated_at DOUBLE PRECISION NOT NULL)",
    # Aggregation state: a count per flow, key and window, decided in the dispatch transaction.
    8: "CREATE TABLE IF NOT EXISTS aggregate_state (flow TEXT NOT NULL, key TEXT NOT NULL,"
    " window_start DOUBLE PRECISION NOT NULL, count INTEGER NOT NULL, first_at DOUBLE PRECISION NOT NULL,"
    " last_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (flow, key, window_start))",
    # The health monitor's lease, replaced by the scheduler's job runs (version 5).
    9: "DROP TABLE IF EXISTS job_leases",
    # What a delivery still waits for before it can be sent: 'enrich' (look-ups at delivery time,
    # then rendering). NULL for a rendered message. The engines re-read the version under their
    # migration lock, so this statement runs once.
    10: "ALTER TABLE deliveries ADD COLUMN awaiting TEXT",
    # Look-up answers (found or not) by the SHA-256 of the look-up and its arguments; `subject` is
    # the SHA-256 of the user it is about, so a deletion can forget them.
    11: "CREATE TABLE IF NOT EXISTS lookup_cache (key TEXT PRIMARY KEY, subject TEXT NOT NULL,"
    " answer TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)",
    12: "CREATE INDEX IF NOT EXISTS lookup_cache_by_subject ON lookup_cache (subject)",
    # A Fullstory segment export's rows while its run reads them (store/fullstory_jobs.py).
    13: "CREATE TABLE IF NOT EXISTS export_staging (run TEXT NOT NULL, audience_key TEXT NOT NULL,"
    " user_id TEXT NOT NULL, PRIMARY KEY (run, audience_key, user_id))",
    # The last successful membership of each exported segment, which the next export is diffed against.
    14: "CREATE TABLE IF NOT EXISTS segment_members (audience_key TEXT NOT NULL, user_id TEXT NOT NULL,"
    " since DOUBLE PRECISION NOT NULL, PRIMARY KEY (audience_key, user_id))",
    # Per high-value user: when the sessions job last checked, and the newest session it saw.
    15: "CREATE TABLE IF NOT EXISTS session_checks (user_id TEXT PRIMARY KEY, checked_at DOUBLE PRECISION NOT NULL,"
    " newest_at DOUBLE PRECISION)",
    # A user's exported segments, for the user's page, key accounts and deletions.
    16: "CREATE INDEX IF NOT EXISTS segment_members_by_user ON segment_members (user_id)",
    # Per-user aggregation state (Part 2): one JSON document per user, decided in the dispatch
    # transaction; the columns are what the recovery and recompute jobs, the dashboard and retention select.
    17: "CREATE TABLE IF NOT EXISTS user_state (user_key TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " at_risk INTEGER NOT NULL DEFAULT 0, last_at_risk_at DOUBLE PRECISION, score INTEGER, band TEXT,"
    " expires_at DOUBLE PRECISION NOT NULL)",
    18: "CREATE INDEX IF NOT EXISTS user_state_at_risk ON user_state (at_risk, last_at_risk_at)",
    # Feature adoption (Part 2): uses per feature, cohort and window; each pair's alert state.
    19: "CREATE TABLE IF NOT EXISTS feature_counts (feature TEXT NOT NULL, cohort TEXT NOT NULL,"
    " window_start DOUBLE PRECISION NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (feature, cohort, window_start))",
    20: "CREATE TABLE IF NOT EXISTS adoption_state (feature TEXT NOT NULL, cohort TEXT NOT NULL,"
    " evaluated_until DOUBLE PRECISION NOT NULL, dropped INTEGER NOT NULL DEFAULT 0,"
    " drop_window DOUBLE PRECISION, PRIMARY KEY (feature, cohort))",
    # Fewer index entries for every delivery to write (each is inserted, then changes status once):
    # retention finds finished deliveries through deliveries_by_status (status, created_at), bounded
    # by created_at (never later than the finishing time it tests), and the listing by flow reads an
    # index whose entries a change of status leaves alone.
    21: "DROP INDEX IF EXISTS deliveries_finished",
    22: "DROP INDEX IF EXISTS deliveries_by_flow",
    23: "CREATE INDEX IF NOT EXISTS deliveries_by_flow_time ON deliveries (flow, created_at)",
    # The queue depths every /metrics scrape reads, counted on SQLite from index entries alone:
    # pending ones from deliveries_due, and these two, which hold only rows that failed once and
    # wait to be retried, or are dead or parked (a delivery sent at its first attempt never enters
    # them). PostgreSQL counts in one pass over the rows, which measured faster there.
    24: "CREATE INDEX IF NOT EXISTS deliveries_retrying ON deliveries (destination)"
    " WHERE status = 'pending' AND attempts > 0",
    25: "CREATE INDEX IF NOT EXISTS deliveries_stuck ON deliveries (status, destination)"
    " WHERE status IN ('dead', 'parked')",
    # A delivery's message id is unique per inbound event, not across the table: a message id is a
    # digest, so the index over it alone took each new delivery to a random page, and every commit
    # wrote one more 4 KiB page to the WAL per delivery (measured: 4.7 of the 20.8 kB the writer
    # wrote per event, and 3.5 of its 6.8 kB of page reads). An inbound event's id is time-ordered, so its
    # deliveries land at the end of (inbox_id, message_id), which also serves what
    # deliveries_by_inbox did. What the constraint guards is unchanged: an event dispatched twice
    # (a lease that ran out, a second worker) queues its messages once, and a job's transitions
    # (inbox_id '') once. SQLite cannot drop a column's UNIQUE, so the table is rebuilt (one
    # transaction with the other migrations).
    26: "CREATE TABLE deliveries_v26 ("
    " id TEXT PRIMARY KEY, inbox_id TEXT NOT NULL, flow TEXT NOT NULL, destination TEXT NOT NULL,"
    " message_id TEXT NOT NULL, body BLOB NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " created_at REAL NOT NULL, received_at REAL NOT NULL, retry_started_at REAL NOT NULL,"
    " next_attempt_at REAL NOT NULL, lease_until REAL, send_alone INTEGER NOT NULL DEFAULT 0,"
    " last_status_code INTEGER, last_error TEXT, last_response TEXT, delivered_at REAL,"
    " action TEXT NOT NULL DEFAULT '', sync_scope TEXT, content_hash TEXT, awaiting TEXT)",
    27: f"INSERT INTO deliveries_v26 ({_DELIVERY_COLUMNS_V26}) SELECT {_DELIVERY_COLUMNS_V26} FROM deliveries",  # noqa: S608 - fixed text
    28: "DROP TABLE deliveries",
    29: "ALTER TABLE deliveries_v26 RENAME TO deliveries",
    30: "CREATE UNIQUE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (inbox_id, message_id)",
    31: "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (destination, next_attempt_at)"
    " WHERE status = 'pending'",
    32: "CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries (status, created_at)",
    33: "CREATE INDEX IF NOT EXISTS deliveries_by_flow_time ON deliveries (flow, created_at)",
    34: "CREATE INDEX IF NOT EXISTS deliveries_retrying ON deliveries (destination)"
    " WHERE status = 'pending' AND attempts > 0",
    35: "CREATE INDEX IF NOT EXISTS deliveries_stuck ON deliveries (status, destination)"
    " WHERE status IN ('dead', 'parked')",
    # Deletion is final (Part 3): a deleted user is remembered only as a keyed hash of the userId,
    # until retention.tombstones; the key is random, made once per store.
    36: "CREATE TABLE IF NOT EXISTS store_keys (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    37: "CREATE TABLE IF NOT EXISTS tombstones (key_hash TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL)",
    # Event search (Part 3): the Segment userId a stored event is about, set by dispatch (where the
    # user is resolved) in the update that marks it dispatched, so a search by user, email or
    # anonymousId scans no body and intake writes nothing more.
    38: "ALTER TABLE inbox ADD COLUMN user_id TEXT",
    39: "CREATE INDEX IF NOT EXISTS inbox_by_user ON inbox (user_id, received_at) WHERE user_id IS NOT NULL",
}
SCHEMA_VERSION = max(MIGRATIONS)


def base_schema() -> str:
    """Version 1, in SQLite's dialect."""
    return resources.files("fsbridge.store").joinpath("sqlite_schema.sql").read_text()


def migrations_after(version: int) -> list[tuple[int, str]]:
    """The migrations a database at `version` still needs, in order."""
    return sorted((v, sql) for v, sql in MIGRATIONS.items() if v > version)
