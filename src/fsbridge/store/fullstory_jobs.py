"""The store's role for the scheduled Fullstory jobs: a segment export's rows staged per run, the
last successful membership of each exported segment, the diff between them applied in bounded
chunks (each chunk's inbox events and membership change in one transaction), and per user the
newest Fullstory session seen by the high-value sessions job. The SQL of this role lives here, as
functions on a connection that both engines run as they are; the jobs depend on the narrow
`FullstoryJobStore` protocol only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from fsbridge.store import tombstones as tombstones_sql
from fsbridge.store.engine import Connection, in_chunks

CHUNK = 5000  # rows a statement stages or applies at once, so no write holds the writer for long


@dataclass(frozen=True, slots=True)
class Audience:
    """What a membership event says about the segment it comes from."""

    segment_id: str
    key: str  # fs_<key>, the trait and audience key
    name: str


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """A user's newest Fullstory session seen so far (None: never checked)."""

    user_id: str
    checked_at: float | None
    newest_at: float | None


# How the SQL store writes `fullstory_api` inbox events inside a transaction: (dedup key, kind, body)
# each, received now; one already stored under its key is left as it is.
InsertInbox = Callable[[Connection, list[tuple[str, str, bytes]], float], None]


class FullstoryJobStore(Protocol):
    async def stage_members(self, run: str, audience_key: str, user_ids: list[str]) -> None: ...
    async def staged_count(self, run: str, audience_key: str) -> int: ...
    async def apply_entered(self, run: str, audience: Audience, after: str, now: float) -> tuple[int, str | None]:
        """Users staged in `run` after `after` (one chunk, in user id order) who are not members yet
        become members, each with a `segment.membership` inbox event; returns (entered, the last
        user id read, or None when the staging is exhausted)."""
        ...

    async def apply_exited(self, run: str, audience: Audience, after: str, now: float) -> tuple[int, str | None]:
        """As `apply_entered`, for members not staged in `run`: they stop being members."""
        ...

    async def discard_staging(self, run: str) -> None: ...
    async def member_count(self, audience_key: str) -> int: ...
    async def exit_count(self, run: str, audience_key: str) -> int:
        """How many members of the audience are not staged in `run`: those the run would remove."""
        ...

    async def high_value_candidates(
        self, audiences: list[str], traits: dict[str, list[Any]], limit: int
    ) -> list[SessionCheck]:
        """Users in any of `audiences` or whose profile has an accepted value of a trait, the least
        recently checked first (never checked before all others), at most `limit`."""
        ...

    async def record_session_check(
        self, user_id: str, newest_at: float | None, sessions: list[tuple[str, dict[str, Any]]], now: float
    ) -> None:
        """Remember the user's newest session and put each new one in the inbox (`session.started`,
        keyed by its session id), in one transaction."""
        ...


def stage(conn: Connection, run: str, key: str, user_ids: list[str]) -> None:
    conn.executemany(
        "INSERT INTO export_staging (run, audience_key, user_id) VALUES (?, ?, ?)"
        " ON CONFLICT (run, audience_key, user_id) DO NOTHING",
        [(run, key, user_id) for user_id in user_ids],
    )


def staged_count(conn: Connection, run: str, key: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM export_staging WHERE run = ? AND audience_key = ?", (run, key)).fetchone()
    return int(row[0])


def member_count(conn: Connection, key: str) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM segment_members WHERE audience_key = ?", (key,)).fetchone()[0])


def exit_count(conn: Connection, run: str, key: str) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM segment_members m WHERE m.audience_key = ? AND NOT EXISTS"
        " (SELECT 1 FROM export_staging s WHERE s.run = ? AND s.audience_key = m.audience_key"
        " AND s.user_id = m.user_id)",
        (key, run),
    ).fetchone()
    return int(row[0])


def _membership_body(audience: Audience, user_id: str, member: bool, run: str) -> bytes:
    return orjson.dumps(
        {
            "audience_key": audience.key,
            "audience_name": audience.name,
            "segment_id": audience.segment_id,
            "user_id": user_id,
            "member": member,
            "event": "Audience Entered" if member else "Audience Exited",
            "run": run,
        }
    )


# Users staged in the run but not members (entered), and members not staged in the run (exited):
# each a chunk in user id order after a cursor; the joined column is NULL for a change.
_ENTERED = (
    "SELECT s.user_id, m.user_id FROM export_staging s LEFT JOIN segment_members m"
    " ON m.audience_key = s.audience_key AND m.user_id = s.user_id"
    " WHERE s.run = ? AND s.audience_key = ? AND s.user_id > ? ORDER BY s.user_id LIMIT ?"
)
_EXITED = (
    "SELECT m.user_id, s.user_id FROM segment_members m LEFT JOIN export_staging s"
    " ON s.run = ? AND s.audience_key = m.audience_key AND s.user_id = m.user_id"
    " WHERE m.audience_key = ? AND m.user_id > ? ORDER BY m.user_id LIMIT ?"
)


def apply_changes(
    conn: Connection, insert: InsertInbox, run: str, audience: Audience, after: str, now: float, *, member: bool
) -> tuple[int, str | None]:
    """One chunk of users entering (`member`) or leaving the audience; returns (changed, the last user
    id read, or None when the chunk was the last)."""
    rows = conn.execute(_ENTERED if member else _EXITED, (run, audience.key, after, CHUNK)).fetchall()
    changed = [user_id for user_id, other in rows if other is None]
    if member and changed:  # a deleted user listed by an export Fullstory has not updated yet stays out
        deleted, _ = tombstones_sql.tombstoned(conn, changed, now)
        changed = [user_id for user_id in changed if user_id not in deleted]
    _change(conn, insert, run, audience, changed, member=member, now=now)
    return len(changed), (rows[-1][0] if len(rows) == CHUNK else None)


def _change(
    conn: Connection, insert: InsertInbox, run: str, audience: Audience, users: list[str], *, member: bool, now: float
) -> None:
    if not users:
        return
    change = "entered" if member else "exited"
    events = [
        (
            f"{audience.key}:{user_id}:{run}:{change}",
            "segment.membership",
            _membership_body(audience, user_id, member, run),
        )
        for user_id in users
    ]
    insert(conn, events, now)
    if member:
        conn.executemany(
            "INSERT INTO segment_members (audience_key, user_id, since) VALUES (?, ?, ?)"
            " ON CONFLICT (audience_key, user_id) DO NOTHING",
            [(audience.key, user_id, now) for user_id in users],
        )
    else:
        conn.executemany(
            "DELETE FROM segment_members WHERE audience_key = ? AND user_id = ?",
            [(audience.key, user_id) for user_id in users],
        )
    # The user's page, key accounts and high-value users read segment_members beside Segment's
    # audience memberships, so a change is written once (a first export may name millions).


def discard_staging_chunk(conn: Connection, run: str) -> int:
    return conn.execute(
        "DELETE FROM export_staging WHERE (run, audience_key, user_id) IN"
        " (SELECT run, audience_key, user_id FROM export_staging WHERE run = ? LIMIT ?)",
        (run, CHUNK),
    ).rowcount


def high_value_candidates(
    conn: Connection, audiences: list[str], traits: dict[str, list[Any]], limit: int
) -> list[SessionCheck]:
    users: set[str] = set()
    if audiences:
        marks = ",".join("?" * len(audiences))
        for query in (
            f"SELECT user_id FROM audience_membership WHERE member = 1 AND audience_key IN ({marks})",  # noqa: S608
            f"SELECT user_id FROM segment_members WHERE audience_key IN ({marks})",  # noqa: S608
        ):
            users |= {u for (u,) in conn.execute(query, audiences)}
    if traits:
        cursor = conn.execute("SELECT user_id, traits FROM profiles")
        while rows := cursor.fetchmany(1000):
            for user_id, text in rows:
                values = orjson.loads(text)
                if any(values.get(trait) in accepted for trait, accepted in traits.items()):
                    users.add(user_id)
    checks: dict[str, SessionCheck] = {u: SessionCheck(u, None, None) for u in users}
    ordered = sorted(users)
    for chunk, marks in in_chunks(ordered):
        for user_id, checked_at, newest_at in conn.execute(
            f"SELECT user_id, checked_at, newest_at FROM session_checks WHERE user_id IN ({marks})",  # noqa: S608
            chunk,
        ):
            checks[user_id] = SessionCheck(user_id, checked_at, newest_at)
    never = float("-inf")
    return sorted(checks.values(), key=lambda c: (c.checked_at if c.checked_at is not None else never, c.user_id))[
        :limit
    ]


def record_session_check(
    conn: Connection,
    insert: InsertInbox,
    user_id: str,
    newest_at: float | None,
    sessions: list[tuple[str, dict[str, Any]]],
    now: float,
) -> None:
    insert(conn, [(f"{user_id}:{session_id}", "session.started", orjson.dumps(p)) for session_id, p in sessions], now)
    conn.execute(
        "INSERT INTO session_checks (user_id, checked_at, newest_at) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET checked_at = excluded.checked_at,"
        " newest_at = COALESCE(excluded.newest_at, session_checks.newest_at)",
        (user_id, now, newest_at),
    )


def forget(conn: Connection, user_id: str) -> None:
    conn.execute("DELETE FROM segment_members WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM session_checks WHERE user_id = ?", (user_id,))
