"""The store's identity role: which user an email or Fullstory uid belongs to (the first claim wins;
a later, different claim is kept as a conflict), group membership and Segment audience membership.
The SQL of this role lives here, as functions on a connection that both engines run as they are;
dispatch writes through them in its transaction, and readers depend on the narrow `IdentityStore`."""

from __future__ import annotations

from typing import Protocol

from fsbridge.store.engine import Connection
from fsbridge.store.records import AudienceChange, GroupMembership, IdentityClaim, IdentityConflict


class IdentityStore(Protocol):
    """What flows and jobs read about identities."""

    async def resolve_identities(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The user each known (kind, value) identifier belongs to; unknown ones are left out."""
        ...

    async def audience_memberships(self, user_id: str) -> dict[str, bool]: ...


def claim(conn: Connection, claim: IdentityClaim, now: float) -> IdentityConflict | None:
    """Link `claim.value` to its user, unless another user claimed it first (then: a conflict)."""
    row = conn.execute(
        "INSERT INTO identity_links (kind, value, user_id, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (kind, value) DO UPDATE SET last_seen = excluded.last_seen"
        " RETURNING user_id",
        (claim.kind, claim.value, claim.user_id, now, now),
    ).fetchone()
    kept = row[0]
    if kept == claim.user_id:
        return None
    conn.execute(
        "INSERT INTO identity_conflicts (kind, value, kept_user_id, claimed_by, seen_at) VALUES (?, ?, ?, ?, ?)",
        (claim.kind, claim.value, kept, claim.user_id, now),
    )
    return IdentityConflict(claim.kind, claim.value, kept, claim.user_id)


def claim_all(conn: Connection, claims: list[IdentityClaim], now: float) -> list[IdentityConflict]:
    return [c for one in claims if (c := claim(conn, one, now)) is not None]


def record_groups(conn: Connection, groups: list[GroupMembership], now: float) -> None:
    if groups:
        conn.executemany(
            "INSERT INTO group_members (group_id, user_id, last_seen) VALUES (?, ?, ?)"
            " ON CONFLICT (group_id, user_id) DO UPDATE SET last_seen = excluded.last_seen",
            [(g.group_id, g.user_id, now) for g in groups],
        )


def record_audiences(conn: Connection, changes: list[AudienceChange], now: float) -> None:
    if changes:
        conn.executemany(
            "INSERT INTO audience_membership (user_id, audience_key, member, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, audience_key) DO UPDATE"
            " SET member = excluded.member, updated_at = excluded.updated_at",
            [(a.user_id, a.audience_key, int(a.member), now) for a in changes],
        )


def resolve_identities(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for kind, value in set(keys):
        row = conn.execute("SELECT user_id FROM identity_links WHERE kind = ? AND value = ?", (kind, value)).fetchone()
        if row is not None:
            found[(kind, value)] = row[0]
    return found


def audience_memberships(conn: Connection, user_id: str) -> dict[str, bool]:
    rows = conn.execute("SELECT audience_key, member FROM audience_membership WHERE user_id = ?", (user_id,)).fetchall()
    return {key: bool(member) for key, member in rows}
