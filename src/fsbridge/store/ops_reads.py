"""The store's ops-read role: the counts, series and event stories that `/ops`, `/ops/api/stats`,
`/metrics` and the health monitor read. Reads only, as functions on a connection that both engines
run as they are; their callers depend on the narrow `OpsReads` protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fsbridge.store import deliveries as deliveries_sql
from fsbridge.store.engine import Connection
from fsbridge.store.records import DELIVERY_STATUSES, EventStory, FlowSkip, InboxEvent, Undispatched

SOURCE_COUNTS = ("received", "duplicate", "quarantined")
FLOW_COUNTS = ("filtered", *DELIVERY_STATUSES)
DESTINATION_COUNTS = DELIVERY_STATUSES


class OpsReads(Protocol):
    """Counts and series for the dashboard, the stats API, metrics and the health monitor."""

    async def stats(self) -> dict[str, Any]: ...
    async def coalesced_counts(self) -> dict[str, int]:
        """Identifies the per-user aggregations' coalescing saved, per flow (a counter row each:
        `/metrics` reads it at every scrape, without the table scans of `stats`)."""
        ...

    async def undispatched(self) -> Undispatched: ...
    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Deliveries per (destination, pending|retrying|dead|parked)."""
        ...

    async def window_counts(self, since: float) -> dict[str, dict[str, dict[str, int]]]:
        """Counts by source, flow and destination of what arrived or was queued since `since`."""
        ...

    async def timeline(self, since: float, bucket_seconds: float, buckets: int) -> dict[str, list[int]]:
        """Received, delivered and dead per time bucket since `since` (the dashboard's chart)."""
        ...

    async def event_story(self, event_id: str) -> EventStory | None: ...
    async def attempt_outcomes(self, since: float) -> dict[str, tuple[int, int]]:
        """(successful, all) attempts per destination since `since` (look-ups excluded)."""
        ...

    async def inbound_counts(self, start: float, end: float) -> dict[str, int]:
        """Events received per source in (start, end]."""
        ...

    async def dead_letters_since(self, since: float) -> dict[str, int]:
        """Deliveries per destination that went dead since `since`."""
        ...


def coalesced_counts(conn: Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT key, value FROM counters WHERE name = 'coalesced'").fetchall())


def undispatched(conn: Connection) -> Undispatched:
    count, oldest = conn.execute("SELECT COUNT(*), MIN(received_at) FROM inbox WHERE status = 'pending'").fetchone()
    return Undispatched(count, oldest)


def stats(conn: Connection) -> dict[str, Any]:
    by_source: dict[str, dict[str, int]] = {}
    by_flow: dict[str, dict[str, int]] = {}
    by_destination: dict[str, dict[str, int]] = {}

    def bucket(table: dict[str, dict[str, int]], name: str, keys: tuple[str, ...]) -> dict[str, int]:
        return table.setdefault(name, dict.fromkeys(keys, 0))

    for source, count in conn.execute("SELECT source, COUNT(*) FROM inbox GROUP BY source"):
        bucket(by_source, source, SOURCE_COUNTS)["received"] += count
    for source, count in conn.execute("SELECT source, COUNT(*) FROM quarantine GROUP BY source"):
        counts = bucket(by_source, source, SOURCE_COUNTS)
        counts["received"] += count
        counts["quarantined"] += count
    for source, count in conn.execute("SELECT key, value FROM counters WHERE name = 'duplicate'"):
        counts = bucket(by_source, source, SOURCE_COUNTS)
        counts["received"] += count
        counts["duplicate"] += count
    for flow, destination, status, count in conn.execute(
        "SELECT flow, destination, status, COUNT(*) FROM deliveries GROUP BY flow, destination, status"
    ):
        bucket(by_flow, flow, FLOW_COUNTS)[status] += count
        if status != "filtered":  # a look-up found nothing: the flow's outcome, not the destination's
            bucket(by_destination, destination, DESTINATION_COUNTS)[status] += count
    for flow, count in conn.execute(
        "SELECT flow, COUNT(*) FROM flow_outcomes WHERE outcome = 'filtered' GROUP BY flow"
    ):
        bucket(by_flow, flow, FLOW_COUNTS)["filtered"] += count

    links = conn.execute("SELECT COUNT(*) FROM identity_links").fetchone()[0]
    conflicts = conn.execute("SELECT COUNT(*) FROM identity_conflicts").fetchone()[0]
    totals = dict.fromkeys((*SOURCE_COUNTS, *FLOW_COUNTS), 0)
    for counts in by_source.values():
        for key in SOURCE_COUNTS:
            totals[key] += counts[key]
    for counts in by_flow.values():
        for key in FLOW_COUNTS:
            totals[key] += counts[key]
    return {
        "totals": totals,
        "by_source": by_source,
        "by_flow": by_flow,
        "by_destination": by_destination,
        "identity": {"links": links, "conflicts": conflicts},
        # Identifies the per-user aggregations' coalescing saved, per flow (Part 2).
        "coalesced": coalesced_counts(conn),
        "undispatched": _undispatched_json(undispatched(conn)),
    }


def _undispatched_json(pending: Undispatched) -> dict[str, Any]:
    return {"events": pending.events, "oldest_received_at": pending.oldest_received_at}


def queue_depths(conn: Connection, through_partial_indexes: bool) -> dict[tuple[str, str], int]:
    """Pending (not yet tried), retrying, dead and parked deliveries per destination. Through
    partial indexes (SQLite, whose syntax INDEXED BY names them), each is counted from index
    entries of its own rows alone, so a scrape reads no delivery (pending ones include the
    coalesced identifies that wait for their interval: one per user and flow). Otherwise
    (PostgreSQL, whose scans of those indexes visited the rows, three times over), in one pass
    over the rows."""
    if not through_partial_indexes:
        rows = conn.execute(
            "SELECT destination, CASE WHEN status = 'pending' AND attempts > 0 THEN 'retrying' ELSE status END,"
            " COUNT(*) FROM deliveries WHERE status IN ('pending', 'dead', 'parked') GROUP BY 1, 2"
        ).fetchall()
        return {(destination, status): count for destination, status, count in rows}
    depths: dict[tuple[str, str], int] = {}
    for destination, count in conn.execute(
        "SELECT destination, COUNT(*) FROM deliveries INDEXED BY deliveries_due"
        " WHERE status = 'pending' GROUP BY destination"
    ):
        depths[destination, "pending"] = count
    for destination, count in conn.execute(
        "SELECT destination, COUNT(*) FROM deliveries INDEXED BY deliveries_retrying"
        " WHERE status = 'pending' AND attempts > 0 GROUP BY destination"
    ):
        depths[destination, "retrying"] = count
        depths[destination, "pending"] -= count
        if not depths[destination, "pending"]:
            del depths[destination, "pending"]
    for status, destination, count in conn.execute(
        "SELECT status, destination, COUNT(*) FROM deliveries INDEXED BY deliveries_stuck"
        " WHERE status IN ('dead', 'parked') GROUP BY status, destination"
    ):
        depths[destination, status] = count
    return depths


def window_counts(conn: Connection, since: float) -> dict[str, dict[str, dict[str, int]]]:
    by_source: dict[str, dict[str, int]] = {}
    for source, count in conn.execute(
        "SELECT source, COUNT(*) FROM inbox WHERE received_at >= ? GROUP BY source", (since,)
    ):
        by_source.setdefault(source, {})["received"] = count
    for source, count in conn.execute(
        "SELECT source, COUNT(*) FROM quarantine WHERE received_at >= ? GROUP BY source", (since,)
    ):
        by_source.setdefault(source, {})["quarantined"] = count
    by_flow: dict[str, dict[str, int]] = {}
    by_destination: dict[str, dict[str, int]] = {}
    for flow, destination, status, count in conn.execute(
        "SELECT flow, destination, status, COUNT(*) FROM deliveries WHERE created_at >= ?"
        " GROUP BY flow, destination, status",
        (since,),
    ):
        by_flow.setdefault(flow, {})[status] = by_flow.get(flow, {}).get(status, 0) + count
        by_destination.setdefault(destination, {})[status] = by_destination.get(destination, {}).get(status, 0) + count
    for flow, count in conn.execute("SELECT flow, COUNT(*) FROM flow_outcomes WHERE at >= ? GROUP BY flow", (since,)):
        by_flow.setdefault(flow, {})["filtered"] = count
    return {"by_source": by_source, "by_flow": by_flow, "by_destination": by_destination}


def attempt_outcomes(conn: Connection, since: float) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        "SELECT d.destination, SUM(CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END), COUNT(*)"
        " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE a.attempted_at >= ?"
        # A failed look-up (enrichment) says nothing about the destination the delivery is for.
        " AND (a.error IS NULL OR a.error NOT LIKE 'look-up %')"
        " GROUP BY d.destination",
        (since,),
    ).fetchall()
    return {destination: (ok, total) for destination, ok, total in rows}


def inbound_counts(conn: Connection, start: float, end: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in ("inbox", "quarantine"):
        for source, count in conn.execute(
            f"SELECT source, COUNT(*) FROM {table} WHERE received_at > ? AND received_at <= ?"  # noqa: S608
            " GROUP BY source",
            (start, end),
        ):
            counts[source] = counts.get(source, 0) + count
    return counts


def dead_letters_since(conn: Connection, since: float) -> dict[str, int]:
    rows = conn.execute(
        "SELECT d.destination, COUNT(DISTINCT d.id) FROM deliveries d"
        " LEFT JOIN attempts a ON a.delivery_id = d.id"
        " WHERE d.status = 'dead' AND COALESCE(a.attempted_at, d.created_at) >= ? GROUP BY d.destination",
        (since,),
    ).fetchall()
    return dict(rows)


def timeline(
    conn: Connection, to_bucket: Callable[[str], str], since: float, bucket_seconds: float, buckets: int
) -> dict[str, list[int]]:
    series = {name: [0] * buckets for name in ("received", "delivered", "dead")}
    queries = {
        "received": f"SELECT {to_bucket('(received_at - ?) / ?')}, COUNT(*) FROM inbox"  # noqa: S608
        " WHERE received_at >= ? GROUP BY 1",
        "delivered": f"SELECT {to_bucket('(delivered_at - ?) / ?')}, COUNT(*) FROM deliveries"  # noqa: S608
        " WHERE status = 'delivered' AND delivered_at >= ? GROUP BY 1",
        "dead": f"SELECT {to_bucket('(a.attempted_at - ?) / ?')}, COUNT(DISTINCT d.id) FROM deliveries d"  # noqa: S608
        " JOIN attempts a ON a.delivery_id = d.id WHERE d.status = 'dead' AND a.attempted_at >= ? GROUP BY 1",
    }
    for name, sql in queries.items():
        for bucket, count in conn.execute(sql, (since, bucket_seconds, since)):
            if 0 <= bucket < buckets:
                series[name][bucket] += count
    return series


def event_story(conn: Connection, event_id: str) -> EventStory | None:
    """One stored event, what each flow did with it, its deliveries and their attempts."""
    row = conn.execute(
        "SELECT id, source, stream, dedup_key, kind, body, received_at, dispatched_at FROM inbox WHERE id = ?",
        (event_id,),
    ).fetchone()
    if row is None:
        return None
    filtered = [
        FlowSkip(flow, reason)
        for flow, reason in conn.execute(
            "SELECT flow, reason FROM flow_outcomes WHERE inbox_id = ? ORDER BY flow", (event_id,)
        )
    ]
    deliveries = deliveries_sql.deliveries_of_event(conn, event_id)
    attempts = {d.id: deliveries_sql.list_attempts(conn, d.id) for d in deliveries}
    return EventStory(InboxEvent(*row[:7]), row[7], filtered, deliveries, attempts)
