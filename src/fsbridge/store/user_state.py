"""The store's role for the per-user aggregations (Part 2): one state document per user
(`user_state`), read and written inside the dispatch transaction (and by the recovery and
recompute jobs), with the columns the jobs, the dashboard and retention select on. What to do is
decided by a `UserStateDecider` (the aggregation flows) from the states read in the transaction,
so a transition is decided once, however many workers and crashes. Its decision comes back as
records of this module: states to write and messages to queue."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fsbridge.store.engine import Connection, in_chunks

if TYPE_CHECKING:
    from fsbridge.store.records import Delivery, NewDelivery, Signal


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a microsecond a user
class StateRow:
    user_key: str
    state: str  # the JSON document
    at_risk: bool
    last_at_risk_at: float | None
    score: int | None
    band: str | None
    expires_at: float


@dataclass
class Decision:
    rows: list[StateRow] = field(default_factory=list)
    deliveries: list[NewDelivery] = field(default_factory=list)
    coalesced: collections.Counter[str] = field(default_factory=collections.Counter)


class PendingRenderer(Protocol):
    """Renders a claimed coalesced identify from its user's state (`flows/aggregations/pending.py`)."""

    def user_key(self, delivery: Delivery) -> str: ...
    def render(self, delivery: Delivery, state: str | None) -> tuple[Any, str | None]:
        """The delivery's outcome, and the user's new state document (None: unchanged)."""
        ...


class UserStateDecider(Protocol):
    def decide(self, stored: dict[str, str | None], signals: Sequence[Signal], now: float) -> Decision:
        """Fold these signals into the users' stored states (None: a user not seen before)."""
        ...

    def tick(self, stored: dict[str, str | None], now: float) -> Decision:
        """Time-driven transitions for these users: recovery, decayed scores."""
        ...


class UserStateStore(Protocol):
    """What the recovery and recompute jobs, the user's page and the dashboard read and run."""

    async def tick_user_states(
        self, decider: UserStateDecider, now: float, recover_before: float | None, after: str, limit: int = 500
    ) -> tuple[int, int, str | None]: ...
    async def render_pending(self, deliveries: list[Delivery], renderer: PendingRenderer) -> list[Any]:
        """Render claimed coalesced identifies from their users' states, in one transaction with
        the states they change."""
        ...

    async def user_state(self, user_key: str) -> str | None: ...
    async def user_state_overview(
        self, limit: int = 50
    ) -> tuple[list[tuple[str, float | None, int | None]], dict[str, int]]: ...


# What `save` needs of a stored row besides its document: the columns of `user_state_at_risk`.
AtRiskColumns = tuple[int, float | None]


def load(conn: Connection, keys: list[str], lock: str) -> tuple[dict[str, str | None], dict[str, AtRiskColumns]]:
    """The stored states of these users (None for those without one), locked for the transaction,
    and the indexed at-risk columns of those stored (for `save`)."""
    found: dict[str, str | None] = dict.fromkeys(keys)
    columns: dict[str, AtRiskColumns] = {}
    for chunk, marks in in_chunks(keys):
        query = f"SELECT user_key, state, at_risk, last_at_risk_at FROM user_state WHERE user_key IN ({marks}){lock}"  # noqa: S608
        for key, state, at_risk, last_at_risk_at in conn.execute(query, chunk).fetchall():
            found[key] = state
            columns[key] = (at_risk, last_at_risk_at)
    return found, columns


def save(conn: Connection, rows: list[StateRow], stored: dict[str, AtRiskColumns]) -> None:
    """Write the decided states: users not stored before (as `load` found them) are inserted, so two
    workers deciding a new user's first signals at once cannot both win (the second one's
    transaction fails, and its events are dispatched again on the state the first wrote); the
    others are updated, and the at-risk index only for the rows whose at-risk columns moved."""
    new, same, moved = [], [], []
    for r in rows:
        columns = stored.get(r.user_key)
        if columns is None:
            new.append((r.user_key, r.state, int(r.at_risk), r.last_at_risk_at, r.score, r.band, r.expires_at))
        elif columns == (int(r.at_risk), r.last_at_risk_at):
            same.append((r.state, r.score, r.band, r.expires_at, r.user_key))
        else:
            moved.append((r.state, int(r.at_risk), r.last_at_risk_at, r.score, r.band, r.expires_at, r.user_key))
    if new:
        conn.executemany(
            "INSERT INTO user_state (user_key, state, at_risk, last_at_risk_at, score, band, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            new,
        )
    if same:
        conn.executemany(
            "UPDATE user_state SET state = ?, score = ?, band = ?, expires_at = ? WHERE user_key = ?", same
        )
    if moved:
        conn.executemany(
            "UPDATE user_state SET state = ?, at_risk = ?, last_at_risk_at = ?, score = ?, band = ?,"
            " expires_at = ? WHERE user_key = ?",
            moved,
        )


def due_for_tick(conn: Connection, recover_before: float | None, limit: int, after: str) -> list[str]:
    """Users whose state a job should look at, in key order after `after`: with `recover_before`,
    those at risk since before it (recovery); without, those with a score below 100 (it recovers
    as their signals age)."""
    if recover_before is not None:
        query = "SELECT user_key FROM user_state WHERE user_key > ? AND at_risk = 1 AND last_at_risk_at <= ?"
        params: tuple[object, ...] = (after, recover_before)
    else:
        query, params = "SELECT user_key FROM user_state WHERE user_key > ? AND score < 100", (after,)
    rows = conn.execute(f"{query} ORDER BY user_key LIMIT ?", (*params, limit)).fetchall()
    return [r[0] for r in rows]


def replace_states(conn: Connection, states: dict[str, str]) -> None:
    """Write changed state documents (the columns the jobs select on do not change)."""
    conn.executemany("UPDATE user_state SET state = ? WHERE user_key = ?", [(s, k) for k, s in states.items()])


def state_of(conn: Connection, user_key: str) -> str | None:
    row = conn.execute("SELECT state FROM user_state WHERE user_key = ?", (user_key,)).fetchone()
    return None if row is None else str(row[0])


def overview(conn: Connection, limit: int) -> tuple[list[tuple[str, float | None, int | None]], dict[str, int]]:
    """At-risk users (newest at-risk first) and how many users are in each score band."""
    at_risk = conn.execute(
        "SELECT user_key, last_at_risk_at, score FROM user_state WHERE at_risk = 1"
        " ORDER BY last_at_risk_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    bands = dict(conn.execute("SELECT band, COUNT(*) FROM user_state WHERE band IS NOT NULL GROUP BY band").fetchall())
    return [tuple(r) for r in at_risk], bands


def forget(conn: Connection, user_id: str) -> None:
    conn.execute("DELETE FROM user_state WHERE user_key = ?", (f"u:{user_id}",))


def prune_expired(conn: Connection, now: float, chunk: int) -> int:
    return conn.execute(
        "DELETE FROM user_state WHERE user_key IN (SELECT user_key FROM user_state WHERE expires_at < ?"
        " AND at_risk = 0 LIMIT ?)",
        (now, chunk),
    ).rowcount
