"""The store's delivery role: the durable queue of deliveries with their attempt log (Dead Letter
Channel), and each destination's parked and paused state. Queuing, claiming under a lease, recording
attempts, and what operators list and replay. The SQL of the deliveries, attempts and destination
tables lives here, as functions on a connection that both engines run as they are; the worker
depends on the narrow `DeliveryStore` protocol, operators' tools on `DeadLetterStore`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fsbridge.store import deletion as deletion_sql
from fsbridge.store.engine import Connection, in_chunks
from fsbridge.store.intake import new_id
from fsbridge.store.records import UNRENDERED, AttemptRecord, Delivery, DeliveryUpdate, NewDelivery

DELIVERY_COLUMNS = (
    "id, inbox_id, flow, destination, message_id, body, status, attempts, created_at, received_at, "
    "retry_started_at, next_attempt_at, send_alone, last_status_code, last_error, last_response, action, sync_scope, "
    "awaiting"
)


class DeliveryStore(Protocol):
    """What the sender needs: due deliveries under a lease, their outcomes, destinations' states."""

    async def claim_deliveries(
        self, destination: str, limit: int, now: float, lease_seconds: float
    ) -> list[Delivery]: ...
    async def record_updates(self, updates: list[DeliveryUpdate]) -> None: ...
    async def next_due_at(self, destination: str, now: float) -> float | None: ...
    async def park_destination(self, name: str, reason: str, now: float) -> None: ...
    async def resume_destination(self, name: str, now: float) -> int: ...
    async def parked_destinations(self) -> dict[str, str]: ...
    async def set_paused(self, name: str, paused: bool) -> None: ...
    async def paused_destinations(self) -> set[str]: ...


class DeadLetterStore(Protocol):
    """What operators and replay read and change: deliveries by status and flow, their attempts."""

    async def list_deliveries(self, status: str | None, flow: str | None, limit: int) -> list[Delivery]: ...
    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...
    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]: ...
    async def replay_delivery(self, delivery_id: str, now: float) -> bool: ...
    async def replay_deliveries(
        self, status: str, flow: str | None, now: float, narrower: ReplayFilter | None = None
    ) -> int: ...
    async def deliveries_for_events(self, event_ids: list[str], flow: str) -> dict[str, Delivery]:
        """The latest delivery of `flow` for each of the stored events (replay's comparison)."""
        ...


def insert_deliveries(conn: Connection, rows: list[tuple[str, float, NewDelivery]], now: float) -> None:
    """Queue deliveries: (the inbound event, when it was received, the delivery) each. One for a
    destination that is parked is queued parked; one whose message id its event (or, for a job's
    messages, another job's) queued already is dropped."""
    if not rows:
        return
    conn.executemany(
        "INSERT INTO deliveries (id, inbox_id, flow, destination, message_id, body, status,"
        " created_at, received_at, retry_started_at, next_attempt_at, last_error, action,"
        " sync_scope, content_hash, awaiting)"
        " VALUES (?, ?, ?, ?, ?, ?,"
        "  CASE WHEN ? = 'pending' AND EXISTS (SELECT 1 FROM destination_state"
        "   WHERE name = ? AND parked_reason IS NOT NULL) THEN 'parked' ELSE ? END,"
        "  ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (inbox_id, message_id) DO NOTHING",
        [
            (
                new_id("dlv"), d.event_id or inbox_id, d.flow, d.destination, d.message_id, d.body, d.status,
                d.destination, d.status, now, received_at, now, d.not_before or now, d.last_error, d.action,
                d.sync_scope, d.content_hash, d.awaiting,
            )
            for inbox_id, received_at, d in rows
        ],
    )  # fmt: skip


def claim(
    conn: Connection, destination: str, limit: int, now: float, lease_until: float, skip_locked: str
) -> list[Delivery]:
    rows = conn.execute(
        "UPDATE deliveries SET lease_until = ? WHERE id IN ("  # noqa: S608 - fixed text
        " SELECT id FROM deliveries WHERE destination = ? AND status = 'pending'"
        " AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
        f" ORDER BY next_attempt_at LIMIT ?{skip_locked})"
        f" RETURNING {DELIVERY_COLUMNS}",
        (lease_until, destination, now, now, limit),
    ).fetchall()
    return sorted((delivery(row) for row in rows), key=lambda d: d.next_attempt_at)


def record_updates(conn: Connection, updates: list[DeliveryUpdate]) -> None:
    """Each update's status and schedule, its attempt in the log, and for a delivered sync its
    content hash as the scope's snapshot (so an unchanged sync is not sent again)."""
    conn.executemany(
        "UPDATE deliveries SET status = ?, attempts = attempts + ?, next_attempt_at = ?,"
        " lease_until = NULL, send_alone = ?, last_status_code = COALESCE(?, last_status_code),"
        " last_error = ?, last_response = COALESCE(?, last_response),"
        " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
        " WHERE id = ?",
        [
            (
                u.status, 1 if u.attempt else 0, u.next_attempt_at, int(u.send_alone), u.last_status_code,
                u.last_error, u.attempt.response_excerpt if u.attempt else None, u.status,
                u.attempt.attempted_at if u.attempt else None, u.delivery_id,
            )
            for u in updates
        ],
    )  # fmt: skip
    delivered = [
        (u.attempt.attempted_at if u.attempt else u.next_attempt_at, u.delivery_id)
        for u in updates
        if u.status == "delivered" and u.may_have_snapshot
    ]
    if delivered:
        conn.executemany(
            "INSERT INTO sync_snapshots (scope, content_hash, synced_at)"
            " SELECT sync_scope, content_hash, ? FROM deliveries"
            " WHERE id = ? AND sync_scope IS NOT NULL AND content_hash IS NOT NULL"
            " ON CONFLICT (scope) DO UPDATE SET content_hash = excluded.content_hash,"
            " synced_at = excluded.synced_at",
            delivered,
        )
    attempts = [
        (u.delivery_id, a.attempted_at, a.duration_ms, a.status_code, a.error, a.response_excerpt)
        for u in updates
        if (a := u.attempt) is not None
    ]
    if attempts:
        conn.executemany(
            "INSERT INTO attempts (delivery_id, attempted_at, duration_ms, status_code, error,"
            " response_excerpt) VALUES (?, ?, ?, ?, ?, ?)",
            attempts,
        )
    if done := [u.delivery_id for u in updates if u.ends_deletion]:
        deletion_sql.finish_deletion_calls(conn, done)


def next_due_at(conn: Connection, destination: str, now: float) -> float | None:
    """When a pending delivery of the destination is next claimable: the latest of its time and its
    lease. Only the rows due by `now` (few, when the sender has nothing to claim: those under a
    lease) and the first one after it are read, through `deliveries_due`, however many wait for
    later (coalesced identifies queue one per user and interval). A row after `now` still under a
    lease answers its own time, earlier than the truth: the sender wakes once too early, never late."""
    row = conn.execute(
        "SELECT MIN(due) FROM ("
        " SELECT CASE WHEN lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END AS due"
        "  FROM deliveries WHERE destination = ? AND status = 'pending' AND next_attempt_at <= ?"
        " UNION ALL"
        " SELECT * FROM (SELECT next_attempt_at FROM deliveries WHERE destination = ? AND status = 'pending'"
        "  AND next_attempt_at > ? ORDER BY next_attempt_at LIMIT 1) AS later"
        ") AS due_times",
        (destination, now, destination, now),
    ).fetchone()
    return None if row is None else row[0]


def park_destination(conn: Connection, name: str, reason: str, now: float) -> None:
    conn.execute(
        "INSERT INTO destination_state (name, parked_reason, parked_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET parked_reason = excluded.parked_reason,"
        " parked_at = excluded.parked_at",
        (name, reason, now),
    )
    conn.execute(
        "UPDATE deliveries SET status = 'parked', lease_until = NULL WHERE destination = ? AND status = 'pending'",
        (name,),
    )


def resume_destination(conn: Connection, name: str, now: float) -> int:
    conn.execute("UPDATE destination_state SET parked_reason = NULL WHERE name = ?", (name,))
    return int(
        conn.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ?"
            " WHERE destination = ? AND status = 'parked'",
            (now, now, name),
        ).rowcount
    )


def unpark_all(conn: Connection, now: float) -> None:
    """After a restart every destination is tried again: a parked one parks again if still refused."""
    conn.execute("UPDATE destination_state SET parked_reason = NULL")
    conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ? WHERE status = 'parked'",
        (now, now),
    )


def parked_destinations(conn: Connection) -> dict[str, str]:
    rows = conn.execute("SELECT name, parked_reason FROM destination_state WHERE parked_reason IS NOT NULL")
    return {name: reason for name, reason in rows}


def set_paused(conn: Connection, name: str, paused: bool) -> None:
    conn.execute(
        "INSERT INTO destination_state (name, paused) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        (name, int(paused)),
    )


def paused_destinations(conn: Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM destination_state WHERE paused = 1")}


def list_deliveries(conn: Connection, status: str | None, flow: str | None, limit: int) -> list[Delivery]:
    clauses, params = _filters(status=status, flow=flow)
    sql = (
        f"SELECT {DELIVERY_COLUMNS} FROM deliveries {clauses}"  # noqa: S608 - clauses are fixed text
        " ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return [delivery(r) for r in conn.execute(sql, (*params, limit))]


def get_delivery(conn: Connection, delivery_id: str) -> Delivery | None:
    row = conn.execute(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()  # noqa: S608
    return None if row is None else delivery(row)


def deliveries_of_event(conn: Connection, event_id: str) -> list[Delivery]:
    sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE inbox_id = ? ORDER BY created_at"  # noqa: S608
    return [delivery(r) for r in conn.execute(sql, (event_id,))]


def list_attempts(conn: Connection, delivery_id: str) -> list[AttemptRecord]:
    rows = conn.execute(
        "SELECT attempted_at, duration_ms, status_code, error, response_excerpt FROM attempts"
        " WHERE delivery_id = ? ORDER BY id",
        (delivery_id,),
    ).fetchall()
    return [AttemptRecord(*row) for row in rows]


def replay_delivery(conn: Connection, delivery_id: str, now: float) -> bool:
    # An unrendered dead letter holds the inbound event, not a message: it is rendered again instead.
    return (
        conn.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ?,"
            " lease_until = NULL, send_alone = 0 WHERE id = ? AND status != 'pending' AND action != ?",
            (now, now, delivery_id, UNRENDERED),
        ).rowcount
        == 1
    )


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """What narrows a bulk replay beside status and flow: the destination, when the delivery was
    created (Unix seconds, both ends included), and the status code it last got."""

    destination: str | None = None
    since: float | None = None
    until: float | None = None
    status_code: int | None = None


def replay_deliveries(
    conn: Connection, status: str, flow: str | None, now: float, narrower: ReplayFilter | None = None
) -> int:
    clauses, params = _filters(status=status, flow=flow, narrower=narrower)
    sql = (
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ?,"  # noqa: S608
        f" lease_until = NULL, send_alone = 0 {clauses} {'AND' if clauses else 'WHERE'} action != ?"
    )
    return int(conn.execute(sql, (now, now, *params, UNRENDERED)).rowcount)


def deliveries_for_events(conn: Connection, event_ids: list[str], flow: str) -> dict[str, Delivery]:
    found: dict[str, Delivery] = {}
    for chunk, marks in in_chunks(event_ids):
        rows = conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - fixed columns and placeholders
            f" WHERE flow = ? AND inbox_id IN ({marks}) ORDER BY created_at, id",
            (flow, *chunk),
        ).fetchall()
        for row in rows:
            found_delivery = delivery(row)
            found[found_delivery.inbox_id] = found_delivery
    return found


def delivery(row: Iterable[Any]) -> Delivery:
    values = list(row)
    values[12] = bool(values[12])
    return Delivery(*values)


def _filters(
    *, status: str | None, flow: str | None, narrower: ReplayFilter | None = None
) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if flow is not None:
        clauses.append("flow = ?")
        params.append(flow)
    n = narrower or ReplayFilter()
    for clause, value in (
        ("destination = ?", n.destination),
        ("created_at >= ?", n.since),
        ("created_at <= ?", n.until),
        ("last_status_code = ?", n.status_code),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
