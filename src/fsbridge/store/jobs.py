"""The store's scheduler and retention role: job runs claimed once per cluster, their cursor and last
outcome, and the pruning that keeps the store's size flat. The SQL of this role lives here, as
functions on a connection that both engines run as they are; `SqlStore` exposes them, and callers
depend on the narrow `JobStore` protocol only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from fsbridge.store import aggregates as aggregates_sql
from fsbridge.store import lookups as lookups_sql
from fsbridge.store import tombstones as tombstones_sql
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


def prune_chunk(
    conn: Connection, now: float, periods: RetentionPeriods, done: frozenset[str] = frozenset()
) -> dict[str, int]:
    """One bounded pass of pruning, of each kind of row not in `done`; the caller repeats it, each
    time without the kinds that had fewer than PRUNE_CHUNK rows left. Without an index on their
    expiry, the state and cache tables are read whole to find that nothing has expired: once a run,
    not once per chunk of the others."""
    return {label: prune(conn, now, periods) for label, prune in PRUNERS.items() if label not in done}


def _prune_finished(status: str, finished_at: str, period: str) -> Callable[[Connection, float, RetentionPeriods], int]:
    """Deliveries of `status` finished (`finished_at`) longer ago than the period, with their attempts.
    A delivery finishes no earlier than it was created, so `created_at < before` adds nothing but
    lets deliveries_by_status find them."""
    query = f"SELECT id FROM deliveries WHERE status = '{status}' AND created_at < ? AND {finished_at} < ? LIMIT ?"  # noqa: S608

    def prune(conn: Connection, now: float, periods: RetentionPeriods) -> int:
        before = now - getattr(periods, period)
        ids = [r[0] for r in conn.execute(query, (before, before, PRUNE_CHUNK))]
        if ids:
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM attempts WHERE delivery_id IN ({marks})", ids)  # noqa: S608
            conn.execute(f"DELETE FROM deliveries WHERE id IN ({marks})", ids)  # noqa: S608
        return len(ids)

    return prune


_prune_filtered_deliveries = _prune_finished("filtered", "next_attempt_at", "filtered")


def _prune_filtered(conn: Connection, now: float, periods: RetentionPeriods) -> int:
    """Filtered deliveries, and the record of what a flow held back, older than `filtered`."""
    return _prune_filtered_deliveries(conn, now, periods) + int(
        conn.execute(
            "DELETE FROM flow_outcomes WHERE (inbox_id, flow) IN"
            " (SELECT inbox_id, flow FROM flow_outcomes WHERE at < ? LIMIT ?)",
            (now - periods.filtered, PRUNE_CHUNK),
        ).rowcount
    )


def _prune_inbox(conn: Connection, now: float, periods: RetentionPeriods) -> int:
    """Raw events whose work is all finished: dispatched, old enough, and no delivery still to do."""
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
    return len(events)


PRUNERS: dict[str, Callable[[Connection, float, RetentionPeriods], int]] = {
    "delivered": _prune_finished("delivered", "delivered_at", "delivered"),
    "dead": _prune_finished("dead", "next_attempt_at", "dead"),
    "filtered": _prune_filtered,
    "inbox": _prune_inbox,
    "aggregate_state": lambda conn, now, _: aggregates_sql.prune_expired(conn, now, PRUNE_CHUNK),
    "lookup_cache": lambda conn, now, _: lookups_sql.prune_expired(conn, now),
    "user_state": lambda conn, now, _: user_state_sql.prune_expired(conn, now, PRUNE_CHUNK),
    "tombstones": lambda conn, now, _: tombstones_sql.prune_expired(conn, now),
}
