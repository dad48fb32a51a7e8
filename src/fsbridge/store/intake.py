"""The store's intake role: the inbox and the quarantine. Accepting an event is one insert that a
duplicate turns into a count (Idempotent Receiver); what jobs fetch enters the same inbox as
`fullstory_api` events; operators read the stored events back and release quarantined ones. The SQL
of the two tables' intake and reads lives here, as functions on a connection that both engines run
as they are; receivers depend on the narrow `IntakeStore` protocol, readers on `InboxReads`."""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Protocol

from fsbridge.store.engine import Connection, in_chunks
from fsbridge.store.records import Accepted, InboxEvent, NewInboxEvent, NewQuarantined, QuarantinedEvent

FULLSTORY_API = "fullstory_api"  # the source of what scheduled jobs fetch (sources/fullstory_api.py)

# Intake's one statement per event; `bench/store_floor.py` times it alone.
INBOX_INSERT = (
    "INSERT INTO inbox (id, source, stream, dedup_key, kind, body, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id"
)
_INBOX_COLUMNS = "id, source, stream, dedup_key, kind, body, received_at"
_QUARANTINE_COLUMNS = "id, source, stream, body, error, received_at, status"

_ID_PROCESS = secrets.token_hex(5)  # random per process, so ids from several replicas never collide
_ID_COUNTER = itertools.count()


class IntakeStore(Protocol):
    """What receivers need: store an event durably (or quarantine it), once per dedup key."""

    async def accept(self, event: NewInboxEvent) -> Accepted: ...
    async def quarantine(self, event: NewQuarantined) -> Accepted: ...
    async def accept_all(self, events: list[NewInboxEvent | NewQuarantined]) -> list[Accepted]:
        """Store every event of one request in one write (inbox or quarantine, each de-duplicated)."""
        ...


class InboxReads(Protocol):
    """Stored events read back: for replay, backtests, enrichment and operators."""

    async def get_inbox_event(self, event_id: str) -> InboxEvent | None: ...
    async def inbox_events(self, event_ids: list[str]) -> dict[str, InboxEvent]:
        """The stored events among `event_ids`, by id."""
        ...

    async def list_inbox(self, since: float, limit: int) -> list[InboxEvent]:
        """Stored events received at or after `since`, oldest first (backtests and replay by time)."""
        ...

    async def list_quarantine(self, limit: int) -> list[QuarantinedEvent]: ...
    async def get_quarantined(self, quarantine_id: str) -> QuarantinedEvent | None: ...
    async def release_quarantined(self, quarantine_id: str, event: NewInboxEvent) -> Accepted:
        """Mark a quarantined event replayed and put its (now valid) form into the inbox."""
        ...


def new_id(prefix: str) -> str:
    """A row id. Time-ordered (nanoseconds), then process and counter: sorts by creation on every
    engine, and needs no system call for randomness per id."""
    return f"{prefix}_{time.time_ns():016x}{_ID_PROCESS}{next(_ID_COUNTER) & 0xFFFFFF:06x}"


def insert_inbox(conn: Connection, event: NewInboxEvent, *, count_duplicate: bool = True) -> Accepted:
    row = conn.execute(
        INBOX_INSERT,
        (new_id("evt"), event.source, event.stream, event.dedup_key, event.kind, event.body, event.received_at),
    ).fetchone()
    if row is not None:
        return Accepted(row[0], duplicate=False)
    return _duplicate(conn, "inbox", event.source, event.dedup_key, count=count_duplicate)


def insert_quarantined(conn: Connection, event: NewQuarantined) -> Accepted:
    row = conn.execute(
        "INSERT INTO quarantine (id, source, stream, dedup_key, body, error, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id",
        (new_id("qtn"), event.source, event.stream, event.dedup_key, event.body, event.error, event.received_at),
    ).fetchone()
    if row is not None:
        return Accepted(row[0], duplicate=False)
    return _duplicate(conn, "quarantine", event.source, event.dedup_key)


def accept_all(conn: Connection, events: list[NewInboxEvent | NewQuarantined]) -> list[Accepted]:
    return [insert_inbox(conn, e) if isinstance(e, NewInboxEvent) else insert_quarantined(conn, e) for e in events]


def _duplicate(conn: Connection, table: str, source: str, dedup_key: str, *, count: bool = True) -> Accepted:
    existing = conn.execute(
        f"SELECT id FROM {table} WHERE source = ? AND dedup_key = ?",  # noqa: S608 - fixed table names
        (source, dedup_key),
    ).fetchone()
    if count:  # a released quarantined event already in the inbox is no new duplicate delivery
        conn.execute(
            "INSERT INTO counters (name, key, value) VALUES ('duplicate', ?, 1)"
            " ON CONFLICT (name, key) DO UPDATE SET value = counters.value + 1",
            (source,),
        )
    return Accepted(existing[0], duplicate=True)


def insert_api_events(conn: Connection, events: list[tuple[str, str, bytes]], now: float) -> None:
    """Put what a job fetched into the inbox: (dedup key, kind, body) each, once per key."""
    if events:
        conn.executemany(
            "INSERT INTO inbox (id, source, stream, dedup_key, kind, body, received_at)"
            " VALUES (?, ?, '', ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO NOTHING",
            [(new_id("evt"), FULLSTORY_API, key, kind, body, now) for key, kind, body in events],
        )


def get_inbox_event(conn: Connection, event_id: str) -> InboxEvent | None:
    row = conn.execute(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE id = ?", (event_id,)).fetchone()  # noqa: S608
    return None if row is None else InboxEvent(*row)


def inbox_events(conn: Connection, event_ids: list[str]) -> dict[str, InboxEvent]:
    events: dict[str, InboxEvent] = {}
    for chunk, marks in in_chunks(event_ids):
        rows = conn.execute(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE id IN ({marks})", chunk)  # noqa: S608
        events.update((row[0], InboxEvent(*row)) for row in rows)
    return events


def list_inbox(conn: Connection, since: float, limit: int) -> list[InboxEvent]:
    rows = conn.execute(
        f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE received_at >= ? ORDER BY received_at, id LIMIT ?",  # noqa: S608
        (since, limit),
    ).fetchall()
    return [InboxEvent(*row) for row in rows]


def list_quarantine(conn: Connection, limit: int) -> list[QuarantinedEvent]:
    rows = conn.execute(
        f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine"  # noqa: S608 - fixed columns
        " WHERE status = 'quarantined' ORDER BY received_at DESC, id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [QuarantinedEvent(*row) for row in rows]


def get_quarantined(conn: Connection, quarantine_id: str) -> QuarantinedEvent | None:
    row = conn.execute(
        f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?",  # noqa: S608 - fixed columns
        (quarantine_id,),
    ).fetchone()
    return None if row is None else QuarantinedEvent(*row)


def release_quarantined(conn: Connection, quarantine_id: str, event: NewInboxEvent) -> Accepted:
    conn.execute("UPDATE quarantine SET status = 'replayed' WHERE id = ?", (quarantine_id,))
    return insert_inbox(conn, event, count_duplicate=False)
