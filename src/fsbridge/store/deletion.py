"""The store's deletion role (Part 3, "Deletion is final"): everything that names a deleted user goes,
in the deletion's one write transaction, on both engines:

- the profile, identity links, groups, memberships, exported-segment rows, look-up cache, sync
  snapshots and per-user state (`profiles.forget`);
- every raw body that names them, in the inbox (with the event's deliveries, attempts and flow
  outcomes) and in quarantine, and every other delivery whose body names them, pending messages
  included: a body names the user when it holds their userId, an anonymousId or the Fullstory uid
  as a JSON string, or one of their emails (in any case) or its SHA-256;
- the state of their anonymous sessions before they were identified (the anonymous keys derived
  from the sessions of their Streams events and of their state), and aggregation counts keyed by
  them;
- then a tombstone (`store/tombstones.py`) keeps anything more being sent about them.

The deletion request itself and what it queued (the Fullstory deletion call) stay until that call is
done (`finish_deletion_calls`), or go at once when it queued none. SQLite runs with `secure_delete`
and its WAL is truncated after a deletion (SQLiteStore), so no freed page keeps what was deleted.
The bodies are scanned: a deletion costs a pass over the stored events, bounded by retention."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from fsbridge.envelope import MISSING, lookup
from fsbridge.store import profiles as profiles_sql
from fsbridge.store import tombstones as tombstones_sql
from fsbridge.store.engine import Connection
from fsbridge.store.profiles import ForgetUser
from fsbridge.user_keys import anonymous_key, user_key

DEFAULT_TOMBSTONE_SECONDS = 30 * 86400.0
DELETION_CALL = "users.delete"  # the Fullstory deletion a Segment deletion request queues
SESSION_PATHS = ("session.session_id", "session_id", "session.id", "session_url")  # as the signal stage reads
CHUNK = 500


@dataclass(frozen=True)
class DeletionRules:
    """How long a tombstone lasts, and how this engine finds a needle in a body: exactly (bytes),
    and case-folded (text)."""

    keep_tombstone_for: float
    exact: Callable[[str], str]
    folded: Callable[[str], str]


class DeletionStore(Protocol):
    async def forget_user(self, user: ForgetUser, now: float) -> dict[str, int]:
        """Everything about the user goes now, and a tombstone stays; what was removed, by kind."""
        ...

    async def tombstoned(self, user_ids: list[str], now: float) -> set[str]:
        """Which of these userIds were deleted and still have a tombstone."""
        ...

    def keep_tombstones_for(self, seconds: float) -> None: ...


@dataclass
class Forgotten:
    """What one deletion removed, by kind (`fsbridge users forget` prints it)."""

    counts: dict[str, int]


def forget_everything(
    conn: Connection, user: ForgetUser, now: float, rules: DeletionRules, request_id: str | None = None
) -> Forgotten:
    """Remove everything that names `user`, except the deletion request `request_id` and what it
    queued; leave a tombstone. Runs in the caller's write transaction."""
    user_id = user.user_id.strip()
    counts: dict[str, int] = {}
    if not user_id:
        return Forgotten(counts)
    ids, emails = _identifiers(conn, user_id, user.identifiers)
    sessions = _state_sessions(conn, user_id)
    profiles_sql.forget(conn, user)
    exact = [orjson.dumps(i).decode() for i in sorted(ids)]
    exact += [f'" {i}"' for i in sorted(ids)] + [f'"{i} "' for i in sorted(ids)]  # ids Streams sent untrimmed
    folded = sorted({e.lower() for e in emails} | {hashlib.sha256(e.encode()).hexdigest() for e in emails})
    events = _bodies_naming(conn, "inbox", "id, source, body", exact, folded, rules, skip=request_id)
    for _, source, body in events:
        if source == "fullstory_stream":
            sessions |= _sessions_of(body)
    anonymous = {anonymous_key(s) for s in sessions}
    counts["events"] = delete_events(conn, [e[0] for e in events])
    user_keys = [user_key(user_id), *sorted(anonymous)]
    # Deliveries of other events that name the user, or their per-user state (a coalesced identify's plan).
    needles = exact + [orjson.dumps(k).decode() for k in user_keys]
    deliveries = _bodies_naming(conn, "deliveries", "id, inbox_id", needles, folded, rules, skip=request_id)
    counts["deliveries"] = _delete_deliveries(conn, [d[0] for d in deliveries])
    quarantined = _bodies_naming(conn, "quarantine", "id", exact, folded, rules)
    counts["quarantined"] = _delete_ids(conn, "quarantine", [q[0] for q in quarantined])
    counts["states"] = _delete_states(conn, user_id, user_keys)
    # Keys are built by a flow's template: any key that holds one of the ids (others' included, rarely:
    # their count starts again, and a message already sent for a window is not sent twice).
    counts["aggregates"] = sum(
        int(conn.execute("DELETE FROM aggregate_state WHERE key LIKE ? ESCAPE '!'", (_like(i),)).rowcount)
        for i in sorted(ids)
    )
    conn.execute("DELETE FROM export_staging WHERE user_id = ?", (user_id,))
    for i in sorted(ids):  # what a sync scope names (the uid of an upsert)
        conn.execute("DELETE FROM sync_snapshots WHERE scope LIKE ? ESCAPE '!'", (_like(i),))
    tombstones_sql.bury(conn, user_id, now, rules.keep_tombstone_for)
    return Forgotten(counts)


def _like(text: str) -> str:
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


def _identifiers(conn: Connection, user_id: str, others: Iterable[str]) -> tuple[set[str], set[str]]:
    """The userId, its Fullstory uid, anonymousIds and emails (plain, from links and profile)."""
    ids = {user_id, *others}
    emails: set[str] = set()
    for kind, value in conn.execute("SELECT kind, value FROM identity_links WHERE user_id = ?", (user_id,)):
        if kind == "email":
            emails.add(value)
        elif kind in ("anonymous_id", "fullstory_uid"):
            ids.add(value)
    row = conn.execute("SELECT traits FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
    if row is not None and isinstance(email := orjson.loads(row[0]).get("email"), str) and email.strip():
        emails.add(email.strip().lower())
    return {i for i in ids if i}, emails


def _state_sessions(conn: Connection, user_id: str) -> set[Any]:
    row = conn.execute("SELECT state FROM user_state WHERE user_key = ?", (user_key(user_id),)).fetchone()
    if row is None:
        return set()
    sessions = orjson.loads(row[0]).get("sessions") or {}
    return set(sessions) if isinstance(sessions, dict) else set()


def _sessions_of(body: bytes) -> set[Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return set()
    found = set()
    for path in SESSION_PATHS:
        value = lookup(payload, path)
        if value is not MISSING and value is not None and value != "" and not isinstance(value, dict | list):
            found.add(value)
            break
    return found


def _bodies_naming(
    conn: Connection,
    table: str,
    columns: str,
    exact: list[str],
    folded: list[str],
    rules: DeletionRules,
    skip: str | None = None,
) -> list[tuple[Any, ...]]:
    conditions = [rules.exact("body")] * len(exact) + [rules.folded("body")] * len(folded)
    if not conditions:
        return []
    where = " OR ".join(conditions)
    own = " AND inbox_id != ?" if table == "deliveries" else " AND id != ?" if table == "inbox" else ""
    params: list[Any] = [n.encode() for n in exact] + list(folded)
    if own:
        params.append(skip or "")
    return conn.execute(f"SELECT {columns} FROM {table} WHERE ({where}){own}", params).fetchall()  # noqa: S608


def delete_events(conn: Connection, event_ids: list[str]) -> int:
    for start in range(0, len(event_ids), CHUNK):
        chunk = event_ids[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        deliveries = [r[0] for r in conn.execute(f"SELECT id FROM deliveries WHERE inbox_id IN ({marks})", chunk)]  # noqa: S608
        _delete_deliveries(conn, deliveries)
        for table in ("flow_outcomes", "dispatch_failures"):
            conn.execute(f"DELETE FROM {table} WHERE inbox_id IN ({marks})", chunk)  # noqa: S608
        conn.execute(f"DELETE FROM inbox WHERE id IN ({marks})", chunk)  # noqa: S608
    return len(event_ids)


def _delete_deliveries(conn: Connection, delivery_ids: list[str]) -> int:
    for start in range(0, len(delivery_ids), CHUNK):
        chunk = delivery_ids[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM attempts WHERE delivery_id IN ({marks})", chunk)  # noqa: S608
        conn.execute(f"DELETE FROM deliveries WHERE id IN ({marks})", chunk)  # noqa: S608
    return len(delivery_ids)


def _delete_ids(conn: Connection, table: str, ids: list[str]) -> int:
    conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(i,) for i in ids])  # noqa: S608
    return len(ids)


def _delete_states(conn: Connection, user_id: str, user_keys: list[str]) -> int:
    removed = sum(int(conn.execute("DELETE FROM user_state WHERE user_key = ?", (k,)).rowcount) for k in user_keys)
    # States written before ids were trimmed on every source (" u_1 " from Streams).
    return removed + int(
        conn.execute(
            "DELETE FROM user_state WHERE user_key LIKE ? AND user_key != ? AND TRIM(SUBSTR(user_key, 3)) = ?",
            ("u:%", user_key(user_id), user_id),
        ).rowcount
    )


def finish_deletion_calls(conn: Connection, delivery_ids: list[str]) -> None:
    """Once a deletion request's Fullstory call is done (delivered, or recorded in dry-run), the call
    and the request that queued it go too: they name the user."""
    if not delivery_ids:
        return
    marks = ",".join("?" * len(delivery_ids))
    done = conn.execute(
        f"SELECT id, inbox_id FROM deliveries WHERE id IN ({marks}) AND action = ?"  # noqa: S608
        " AND status IN ('delivered', 'dry_run')",
        (*delivery_ids, DELETION_CALL),
    ).fetchall()
    if done:
        delete_events(conn, sorted({inbox_id for _, inbox_id in done if inbox_id}))
        _delete_deliveries(conn, [delivery_id for delivery_id, _ in done])
