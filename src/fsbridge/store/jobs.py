"""The store's scheduler and retention role: job runs claimed once per cluster, their cursor and last
outcome, and the pruning that keeps the store's size flat. The SQL of this role lives here, as
functions on a connection that both engines run as they are; `SqlStore` exposes them, and callers
depend on the narrow `JobStore` protocol only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from fsbridge.store import aggregates as aggregates_sql
from fsbridge.store import lookups as lookups_sql
from fsbridge.store import user_state as user_state_sql
from fsbridge.store.engine import Connection

PRUNE_CHUNK = 5000  # rows a prune statement removes at once, so no write holds the writer for long


@dataclass(frozen=True, slots=True)
class JobRun:
    """A claimed run of a job, and the cursor the last run left."""

    name: str
    cursor: str | None


@dataclass(frozen=True, slots=True)
class JobState:
    name: str
    next_run_at: float
    running_until: float | None
    last_started_at: float | None
    last_finished_at: float | None
    last_outcome: str | None
    last_counts: dict[str, Any]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class RetentionPeriods:
    """Seconds each kind of finished work is kept."""

    inbox: float
    delivered: float
    dead: float
    filtered: float


class JobStore(Protocol):
    async def claim_job_run(
        self, name: str, owner: str, now: float, every: float, run_for: float, *, force: bool = False
    ) -> JobRun | None:
        """Claim the job's run when it is due (or `force`) and no live run holds it: true for one
        claimant per interval across the cluster. The next run is then due `every` from now."""
        ...

    async def save_job_cursor(self, name: str, owner: str, cursor: str | None) -> None: ...
    async def finish_job_run(
        self, name: str, owner: str, now: float, outcome: str, counts: dict[str, Any], cursor: str | None
    ) -> None: ...
    async def job_states(self) -> dict[str, JobState]: ...
    async def prune(self, now: float, periods: RetentionPeriods) -> dict[str, int]:
        """Delete finished work older than its period; never pending, parked or dry-run work."""
        ...


def claim_job_run(
    conn: Connection, name: str, owner: str, now: float, every: float, run_for: float, force: bool
) -> JobRun | None:
    conn.execute("INSERT INTO jobs (name, next_run_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, now))
    row = conn.execute(
        "UPDATE jobs SET next_run_at = ?, running_until = ?, owner = ?, last_started_at = ?"
        # Due, forced, or a run that never finished (its runner died) whose claim has expired: that
        # one resumes from its cursor now, not an interval later.
        " WHERE name = ? AND (next_run_at <= ? OR ? = 1 OR running_until IS NOT NULL)"
        " AND (running_until IS NULL OR running_until < ?)"
        " RETURNING cursor",
        (now + every, now + run_for, owner, now, name, now, int(force), now),
    ).fetchone()
    return None if row is None else JobRun(name, row[0])


def save_job_cursor(conn: Connection, name: str, owner: str, cursor: str | None) -> None:
    conn.execute("UPDATE jobs SET cursor = ? WHERE name = ? AND owner = ?", (cursor, name, owner))


def finish_job_run(
    conn: Connection, name: str, owner: str, now: float, outcome: str, counts: dict[str, Any], cursor: str | None
) -> None:
    conn.execute(
        "UPDATE jobs SET running_until = NULL, last_finished_at = ?, last_outcome = ?, last_counts = ?, cursor = ?"
        " WHERE name = ? AND owner = ?",
        (now, outcome, orjson.dumps(counts).decode(), cursor, name, owner),
    )


def job_states(conn: Connection) -> dict[str, JobState]:
    rows = conn.execute(
        "SELECT name, next_run_at, running_until, last_started_at, last_finished_at, last_outcome, last_counts,"
        " cursor FROM jobs"
    ).fetchall()
    return {
        row[0]: JobState(row[0], row[1], row[2], row[3], row[4], row[5], orjson.loads(row[6] or "{}"), row[7])
        for row in rows
    }


def prune_chunk(conn: Connection, now: float, periods: RetentionPeriods) -> dict[str, int]:
    """One bounded pass of pruning; the caller repeats it until nothing is left to prune."""
    counts: dict[str, int] = {}
    # A delivery finishes (delivered_at, or next_attempt_at once dead or filtered) no earlier than it
    # was created, so `created_at < before` adds nothing but lets deliveries_by_status find them.
    finished = (
        ("delivered", "status = 'delivered' AND created_at < ? AND delivered_at < ?", now - periods.delivered),
        ("dead", "status = 'dead' AND created_at < ? AND next_attempt_at < ?", now - periods.dead),
        (
            "filtered_deliveries",
            "status = 'filtered' AND created_at < ? AND next_attempt_at < ?",
            now - periods.filtered,
        ),
    )
    for label, condition, before in finished:
        query = f"SELECT id FROM deliveries WHERE {condition} LIMIT ?"  # noqa: S608 - fixed text
        ids = [r[0] for r in conn.execute(query, (before, before, PRUNE_CHUNK))]
        if ids:
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM attempts WHERE delivery_id IN ({marks})", ids)  # noqa: S608
            conn.execute(f"DELETE FROM deliveries WHERE id IN ({marks})", ids)  # noqa: S608
        counts[label] = len(ids)
    counts["filtered"] = (
        counts.pop("filtered_deliveries")
        + conn.execute(
            "DELETE FROM flow_outcomes WHERE (inbox_id, flow) IN"
            " (SELECT inbox_id, flow FROM flow_outcomes WHERE at < ? LIMIT ?)",
            (now - periods.filtered, PRUNE_CHUNK),
        ).rowcount
    )
    # Raw events whose work is all finished: dispatched, old enough, and no delivery still to do.
    events = [
        r[0]
        for r in conn.execute(
            "SELECT i.id FROM inbox i WHERE i.status = 'dispatched' AND i.received_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.inbox_id = i.id AND d.status IN ('pending', 'parked', 'dry_run'))"
            " LIMIT ?",
            (now - periods.inbox, PRUNE_CHUNK),
        )
    ]
    if events:
        marks = ",".join("?" * len(events))
        conn.execute(f"DELETE FROM flow_outcomes WHERE inbox_id IN ({marks})", events)  # noqa: S608
        conn.execute(f"DELETE FROM inbox WHERE id IN ({marks})", events)  # noqa: S608
    counts["inbox"] = len(events)
    counts["aggregate_state"] = aggregates_sql.prune_expired(conn, now, PRUNE_CHUNK)
    counts["lookup_cache"] = lookups_sql.prune_expired(conn, now)
    counts["user_state"] = user_state_sql.prune_expired(conn, now, PRUNE_CHUNK)
    return counts
