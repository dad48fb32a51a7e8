"""The store's event-search role (Part 3, `GET /ops/api/events`): stored events by the user they are
about, a Segment messageId, source and time, newest first, a page at a time, without reading a body.

Dispatch records the Segment userId each event is about on its inbox row (`inbox_by_user`), so a
search by user reads an index; an email or an anonymousId is first resolved to that user through the
identity links. A Segment messageId is the inbox's own dedup key. The SQL of this role lives here,
as functions on a connection that both engines run as they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fsbridge.store.engine import Connection

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class EventQuery:
    """What narrows a search; every filter given narrows the set."""

    user_ids: tuple[str, ...] | None = None  # None: any user; (): nobody (an identity no link knows)
    message_id: str | None = None
    source: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    after: tuple[float, str] | None = None  # the cursor: the last (received_at, id) of the page before


@dataclass(frozen=True, slots=True)
class FoundEvent:
    id: str
    source: str
    kind: str
    received_at: float
    user_id: str | None
    status: str
    flows: list[dict[str, str]] = field(default_factory=list)  # each flow that held it back, and why
    deliveries: list[dict[str, Any]] = field(default_factory=list)


class SearchStore(Protocol):
    async def search_events(self, query: EventQuery) -> list[FoundEvent]:
        """A page of events, newest first (at most `query.limit`)."""
        ...


def search_events(conn: Connection, query: EventQuery) -> list[FoundEvent]:
    if query.user_ids == ():
        return []
    clauses: list[str] = []
    params: list[Any] = []
    if query.user_ids is not None:
        clauses.append(f"user_id IN ({','.join('?' * len(query.user_ids))})")
        params += query.user_ids
    if query.message_id is not None:
        clauses.append("source = 'segment' AND dedup_key = ?")
        params.append(f"messageId:{query.message_id}")
    for clause, value in (
        ("source = ?", query.source),
        ("received_at >= ?", query.since),
        ("received_at <= ?", query.until),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if query.after is not None:
        clauses.append("(received_at < ? OR (received_at = ? AND id < ?))")
        params += [query.after[0], query.after[0], query.after[1]]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT id, source, kind, received_at, user_id, status FROM inbox {where}"  # noqa: S608 - fixed text
        " ORDER BY received_at DESC, id DESC LIMIT ?",
        (*params, min(query.limit, MAX_PAGE)),
    ).fetchall()
    return _with_outcomes(conn, [FoundEvent(*row) for row in rows])


def _with_outcomes(conn: Connection, events: Sequence[FoundEvent]) -> list[FoundEvent]:
    if not events:
        return []
    marks = ",".join("?" * len(events))
    by_id = {e.id: e for e in events}
    ids = list(by_id)
    for inbox_id, flow, reason in conn.execute(
        f"SELECT inbox_id, flow, reason FROM flow_outcomes WHERE inbox_id IN ({marks})",  # noqa: S608
        ids,
    ):
        by_id[inbox_id].flows.append({"flow": flow, "outcome": "filtered", "reason": reason})
    for inbox_id, delivery_id, flow, destination, status, code in conn.execute(
        f"SELECT inbox_id, id, flow, destination, status, last_status_code FROM deliveries"  # noqa: S608
        f" WHERE inbox_id IN ({marks}) ORDER BY created_at, id",
        ids,
    ):
        event = by_id[inbox_id]
        event.deliveries.append(
            {"id": delivery_id, "flow": flow, "destination": destination, "status": status, "last_status_code": code}
        )
        event.flows.append({"flow": flow, "outcome": status})
    return list(events)
