"""The store's role for feature adoption (Part 2): uses of each feature counted per cohort and
window in the dispatch transaction (a user's cohorts read from its audience memberships, exported
segments and profile traits), and each (feature, cohort)'s alert state, advanced by the
`feature_adoption` job in one transaction with the alerts it queues. The decision is made by an
`AdoptionDecider` (`flows/feature_adoption.py`)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from fsbridge.store.engine import Connection

if TYPE_CHECKING:
    from fsbridge.store.records import FeatureUse, NewDelivery

ALL = "all"


@dataclass(frozen=True, slots=True)
class CountingRules:
    window: float
    audiences: tuple[str, ...] = ()
    traits: dict[str, list[Any]] = field(default_factory=dict)
    counts_all: bool = True  # the cohort `all` too (Part 2: when none is configured, or include_all)


@dataclass
class AdoptionState:
    evaluated_until: float  # windows starting before this are decided
    dropped: bool = False
    drop_window: float | None = None  # the window whose drop is open


class AdoptionDecider(Protocol):
    rules: CountingRules

    def decide(
        self,
        counts: dict[tuple[str, str], dict[float, int]],
        states: dict[tuple[str, str], AdoptionState],
        now: float,
    ) -> tuple[dict[tuple[str, str], AdoptionState], list[NewDelivery]]: ...


class AdoptionStore(Protocol):
    async def evaluate_adoption(self, decider: AdoptionDecider, now: float, since: float) -> int: ...
    async def open_adoption_drops(self) -> list[tuple[str, str, float | None]]: ...


def cohorts_of(conn: Connection, users: Sequence[str], rules: CountingRules) -> dict[str, list[str]]:
    """Each user's cohorts besides `all`: `audience:<key>` and `<trait>:<value>` as configured."""
    found: dict[str, list[str]] = {u: [] for u in users}
    if not users or not (rules.audiences or rules.traits):
        return found
    marks = ",".join("?" * len(users))
    if rules.audiences:
        wanted = set(rules.audiences)
        for query in (
            f"SELECT user_id, audience_key FROM audience_membership WHERE member = 1 AND user_id IN ({marks})",  # noqa: S608
            f"SELECT user_id, audience_key FROM segment_members WHERE user_id IN ({marks})",  # noqa: S608
        ):
            for user, key in conn.execute(query, list(users)):
                if key in wanted:
                    found[user].append(f"audience:{key}")
    if rules.traits:
        query = f"SELECT user_id, traits FROM profiles WHERE user_id IN ({marks})"  # noqa: S608
        for user, text in conn.execute(query, list(users)):
            traits = orjson.loads(text)
            found[user] += [f"{t}:{traits[t]}" for t, accepted in rules.traits.items() if traits.get(t) in accepted]
    return found


def count(conn: Connection, uses: Sequence[FeatureUse], rules: CountingRules) -> None:
    users = sorted({u.user_id for u in uses if u.user_id})
    cohorts = cohorts_of(conn, users, rules)
    totals: collections.Counter[tuple[str, str, float]] = collections.Counter()
    for use in uses:
        window = (use.at // rules.window) * rules.window
        everyone = (ALL,) if rules.counts_all else ()
        for cohort in (*everyone, *(cohorts.get(use.user_id, []) if use.user_id else [])):
            totals[use.feature, cohort, window] += 1
    conn.executemany(
        "INSERT INTO feature_counts (feature, cohort, window_start, count) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (feature, cohort, window_start) DO UPDATE SET count = feature_counts.count + excluded.count",
        [(f, c, w, n) for (f, c, w), n in totals.items()],
    )


def evaluate(conn: Connection, decider: AdoptionDecider, now: float, since: float, lock: str) -> list[NewDelivery]:
    """Run the decider over the counts of windows from `since`, in the caller's transaction."""
    counts: dict[tuple[str, str], dict[float, int]] = {}
    for feature, cohort, window, n in conn.execute(
        "SELECT feature, cohort, window_start, count FROM feature_counts WHERE window_start >= ?", (since,)
    ):
        counts.setdefault((feature, cohort), {})[window] = n
    states = {
        (f, c): AdoptionState(until, bool(dropped), drop)
        for f, c, until, dropped, drop in conn.execute(
            f"SELECT feature, cohort, evaluated_until, dropped, drop_window FROM adoption_state{lock}"  # noqa: S608
        )
    }
    changed, deliveries = decider.decide(counts, states, now)
    conn.executemany(
        "INSERT INTO adoption_state (feature, cohort, evaluated_until, dropped, drop_window) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (feature, cohort) DO UPDATE SET evaluated_until = excluded.evaluated_until,"
        " dropped = excluded.dropped, drop_window = excluded.drop_window",
        [(f, c, s.evaluated_until, int(s.dropped), s.drop_window) for (f, c), s in changed.items()],
    )
    conn.execute("DELETE FROM feature_counts WHERE window_start < ?", (since,))
    return deliveries


def open_drops(conn: Connection) -> list[tuple[str, str, float | None]]:
    return [tuple(r) for r in conn.execute(
        "SELECT feature, cohort, drop_window FROM adoption_state WHERE dropped = 1 ORDER BY feature, cohort"
    )]  # fmt: skip
