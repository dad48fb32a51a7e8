"""The store's profile role: the last traits and group per Segment userId, what operators read
about one user, and forgetting a user. The SQL of this role lives here, as functions on a
connection that both engines run as they are; readers depend on the narrow `ProfileStore`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from fsbridge.store import fullstory_jobs as fullstory_jobs_sql
from fsbridge.store import lookups as lookups_sql
from fsbridge.store import user_state as user_state_sql
from fsbridge.store.engine import Connection

DELETED = "the user was deleted (Segment deletion request) before this was sent"


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    """New traits (merged over the stored ones) and, from a group call, the user's groupId."""

    user_id: str
    traits: dict[str, Any]
    group_id: str | None


@dataclass(frozen=True, slots=True)
class ForgetUser:
    """A deletion request: everything about `user_id` goes, and updates still queued for its
    `sync_scopes` (a Fullstory upsert that would re-create the user) become dead letters."""

    user_id: str
    sync_scopes: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()  # others the user is known by (its Fullstory uid), for cached look-ups


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: str
    traits: dict[str, Any]
    group_id: str | None
    updated_at: float | None
    identity_links: list[dict[str, str]] = field(default_factory=list)
    audiences: dict[str, bool] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


# Whether a stored event (source, kind, body) is about the user a page is for.
AboutUser = Callable[[str, str, bytes], bool]


class ProfileStore(Protocol):
    async def user_record(self, user_id: str) -> UserRecord | None:
        """Everything fsbridge holds about one Segment user (None: nothing)."""
        ...

    async def user_activity(
        self, identifiers: list[str], limit: int = 50, about: AboutUser | None = None
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The newest `limit` stored events naming any of these identifiers (as JSON strings), as
        (id, source, stream, kind, received_at), and the newest deliveries made from them, as (id,
        inbox_id, flow, destination, status, attempts, last_status_code, last_error, created_at,
        next_attempt_at)."""
        ...


def stored_traits(conn: Connection, user_id: str, lock: str) -> dict[str, Any] | None:
    """The user's profile traits (None: no profile), locked with `lock` for the transaction."""
    row = conn.execute(f"SELECT traits FROM profiles WHERE user_id = ?{lock}", (user_id,)).fetchone()  # noqa: S608
    return None if row is None else dict(orjson.loads(row[0]))


def apply_profile(conn: Connection, update: ProfileUpdate, now: float, lock: str) -> None:
    """Merge an identify's traits (and a group call's groupId) into the user's profile. The stored
    row is read locked (`lock`: FOR UPDATE on PostgreSQL), and a new profile is inserted, never
    upserted: of two workers that both found none, the second fails and merges again into the
    first one's profile, so no trait is lost."""
    stored = stored_traits(conn, update.user_id, lock)
    traits = orjson.dumps({**(stored or {}), **update.traits}).decode()
    if stored is None:
        conn.execute(
            "INSERT INTO profiles (user_id, traits, group_id, updated_at) VALUES (?, ?, ?, ?)",
            (update.user_id, traits, update.group_id, now),
        )
        return
    conn.execute(
        "UPDATE profiles SET traits = ?, group_id = COALESCE(?, group_id), updated_at = ? WHERE user_id = ?",
        (traits, update.group_id, now, update.user_id),
    )


def forget(conn: Connection, user: ForgetUser) -> None:
    user_id = user.user_id
    # Cached look-ups name the user by uid, userId or email: collect the emails before they go.
    identifiers = {user_id, *user.identifiers}
    row = conn.execute("SELECT traits FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
    if row and isinstance(email := orjson.loads(row[0]).get("email"), str):
        identifiers |= {email, email.strip().lower()}
    identifiers |= {
        value for (value,) in conn.execute(
            "SELECT value FROM identity_links WHERE user_id = ? AND kind = 'email'", (user_id,)
        )
    }  # fmt: skip
    lookups_sql.forget(conn, sorted(identifiers))
    fullstory_jobs_sql.forget(conn, user_id)
    user_state_sql.forget(conn, user_id)
    conn.execute("DELETE FROM profiles WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM identity_links WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM identity_conflicts WHERE kept_user_id = ? OR claimed_by = ?", (user_id, user_id))
    conn.execute("DELETE FROM group_members WHERE user_id = ?", (user_id,))
    conn.execute("DELETE FROM audience_membership WHERE user_id = ?", (user_id,))
    for scope in user.sync_scopes:
        conn.execute("DELETE FROM sync_snapshots WHERE scope = ?", (scope,))
        conn.execute(
            "UPDATE deliveries SET status = 'dead', last_error = ?, lease_until = NULL"
            " WHERE sync_scope = ? AND status IN ('pending', 'parked')",
            (DELETED, scope),
        )


def user_activity(
    conn: Connection, contains: str, needles: list[bytes], limit: int, about: AboutUser | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The newest stored events about the user, and the newest deliveries made from them. A scan of
    the stored events for bodies holding any of `needles` (JSON strings): the inbox keeps no index
    by user, so that intake and dispatch pay nothing for this page (retention bounds what is
    scanned). `about` then keeps only the events that name the user where an id belongs (an event
    that merely mentions the id elsewhere is left out)."""
    condition = " OR ".join([contains] * len(needles))
    candidates = conn.execute(
        f"SELECT id, source, stream, kind, received_at, body FROM inbox WHERE {condition}"  # noqa: S608 - fixed text
        " ORDER BY received_at DESC LIMIT ?",
        (*needles, limit * 4 if about else limit),
    ).fetchall()
    events = [row[:5] for row in candidates if about is None or about(row[1], row[3], bytes(row[5]))][:limit]
    if not events:
        return [], []
    marks = ",".join("?" * len(events))
    deliveries = conn.execute(
        "SELECT id, inbox_id, flow, destination, status, attempts, last_status_code, last_error, created_at,"  # noqa: S608
        f" next_attempt_at FROM deliveries WHERE inbox_id IN ({marks}) ORDER BY created_at DESC LIMIT ?",
        (*[e[0] for e in events], limit),
    ).fetchall()
    return events, deliveries


def user_record(conn: Connection, user_id: str) -> UserRecord | None:
    profile = conn.execute("SELECT traits, group_id, updated_at FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
    links = [
        {"kind": kind, "value": value}
        for kind, value in conn.execute(
            "SELECT kind, value FROM identity_links WHERE user_id = ? ORDER BY kind, value", (user_id,)
        )
    ]
    audiences = {
        key: bool(member)
        for key, member in conn.execute(
            "SELECT audience_key, member FROM audience_membership WHERE user_id = ? ORDER BY audience_key", (user_id,)
        )
    }
    # Exported Fullstory segments the user is in (jobs.fullstory_segment_audiences).
    audiences |= {
        key: True for (key,) in conn.execute("SELECT audience_key FROM segment_members WHERE user_id = ?", (user_id,))
    }
    groups = [
        g for (g,) in conn.execute("SELECT group_id FROM group_members WHERE user_id = ? ORDER BY group_id", (user_id,))
    ]
    if profile is None and not links and not audiences and not groups:
        return None
    traits, group_id, updated_at = profile if profile else ("{}", None, None)
    return UserRecord(user_id, orjson.loads(traits), group_id, updated_at, links, audiences, groups)
