"""The store's dispatch role: claiming stored events under a lease, and recording in one transaction
everything routing one batch decided (deliveries, held-back aggregate counts, feature uses, per-user
decisions, filtered outcomes, identity claims, groups, audiences, profiles, deletions), so a
transition is decided once across replicas and crashes. The SQL of this role lives here, as
functions on a connection that both engines run as they are; the worker depends on the narrow
`DispatchStore` protocol."""

from __future__ import annotations

from typing import Any, Protocol

from fsbridge.store import aggregates as aggregates_sql
from fsbridge.store import deletion as deletion_sql
from fsbridge.store import feature_counts as feature_counts_sql
from fsbridge.store import identity as identity_sql
from fsbridge.store import profiles as profiles_sql
from fsbridge.store import user_state as user_state_sql
from fsbridge.store.deletion import DeletionRules
from fsbridge.store.deliveries import insert_deliveries
from fsbridge.store.engine import Connection
from fsbridge.store.feature_counts import CountingRules
from fsbridge.store.records import DispatchFailure, DispatchResult, IdentityConflict, InboxEvent, NewDelivery
from fsbridge.store.user_state import Decision, UserStateDecider


class DispatchStore(Protocol):
    """What routing needs: stored events to route, and one write of what routing decided."""

    # What the dispatch transaction decides with, set by the runtime when a flow needs it: the
    # per-user aggregations, and how feature uses are counted.
    user_states: UserStateDecider | None
    feature_counting: CountingRules | None

    async def claim_inbox(self, limit: int, now: float, lease_seconds: float) -> list[InboxEvent]: ...
    async def record_dispatch(self, results: list[DispatchResult], now: float) -> list[IdentityConflict]:
        """Write deliveries, filter outcomes, identity claims and audience changes; mark events dispatched.
        Returns the identity claims that contradicted an earlier one (kept: the earlier)."""
        ...

    async def record_dispatch_failures(
        self, failures: list[DispatchFailure], now: float, max_attempts: int, retry_in: float
    ) -> list[str]:
        """Count a failed try for each event. One that has failed `max_attempts` times moves to
        quarantine with its reason (under the same id); the others are tried again after
        `retry_in` seconds. Returns the ids that moved to quarantine."""
        ...

    async def sync_snapshots(self, scopes: list[str]) -> dict[str, str]:
        """The content hash last delivered for each sync scope (unchanged syncs are not sent)."""
        ...

    async def enqueue(self, deliveries: list[NewDelivery], now: float) -> None:
        """Queue deliveries that no inbound event produced (health alerts)."""
        ...


def claim_inbox(conn: Connection, limit: int, now: float, lease_until: float, skip_locked: str) -> list[InboxEvent]:
    rows = conn.execute(
        "UPDATE inbox SET lease_until = ? WHERE id IN ("  # noqa: S608 - fixed text
        " SELECT id FROM inbox WHERE status = 'pending' AND (lease_until IS NULL OR lease_until < ?)"
        f" ORDER BY received_at LIMIT ?{skip_locked})"
        " RETURNING id, source, stream, dedup_key, kind, body, received_at",
        (lease_until, now, limit),
    ).fetchall()
    return sorted((InboxEvent(*row) for row in rows), key=lambda e: e.received_at)


def record_dispatch(
    conn: Connection,
    results: list[DispatchResult],
    now: float,
    *,
    counting: CountingRules | None,
    decider: UserStateDecider | None,
    for_update: str,
    deletion: DeletionRules | None = None,
) -> list[IdentityConflict]:
    missing = [r.inbox_id for r in results if r.received_at is None]
    received = {
        event_id: conn.execute("SELECT received_at FROM inbox WHERE id = ?", (event_id,)).fetchone()
        for event_id in missing
    }
    below: list[tuple[str, str, str, float]] = []
    insert_deliveries(
        conn,
        [
            (r.inbox_id, r.received_at or (received.get(r.inbox_id) or (now,))[0], d)
            for r in results
            for d in r.deliveries
            if d.aggregate is None or _crosses(conn, r.inbox_id, d, now, below)
        ],
        now,
    )
    uses = [u for r in results for u in r.feature_uses] if counting is not None else []
    if uses:
        assert counting is not None
        feature_counts_sql.count(conn, uses, counting)
    signals = [s for r in results for s in r.signals] if decider is not None else []
    if signals:
        assert decider is not None
        keys = sorted({s.user_key for s in signals})
        stored, columns = user_state_sql.load(conn, keys, for_update)
        apply_decision(conn, decider.decide(stored, signals, now), now, columns)
    filtered = [(r.inbox_id, skip.flow, skip.reason, now) for r in results for skip in r.filtered] + below
    if filtered:
        conn.executemany(
            "INSERT INTO flow_outcomes (inbox_id, flow, outcome, reason, at)"
            " VALUES (?, ?, 'filtered', ?, ?) ON CONFLICT (inbox_id, flow) DO NOTHING",
            filtered,
        )
    conflicts = identity_sql.claim_all(conn, [claim for r in results for claim in r.claims], now)
    identity_sql.record_groups(conn, [g for r in results for g in r.groups], now)
    identity_sql.record_audiences(conn, [a for r in results for a in r.audiences], now)
    for result in results:
        for update in result.profiles:
            profiles_sql.apply_profile(conn, update, now, for_update)
    # After the batch's claims and profiles, so a deletion leaves nothing of what came before it.
    for result in results:
        for user in result.forget:
            if deletion is None:
                profiles_sql.forget(conn, user)
            else:
                deletion_sql.forget_everything(conn, user, now, deletion, request_id=result.inbox_id)
    conn.executemany(  # with the user it is about: what event search finds it by
        "UPDATE inbox SET status = 'dispatched', lease_until = NULL, dispatched_at = ?, user_id = ? WHERE id = ?",
        [(now, r.user_id, r.inbox_id) for r in results],
    )
    # A deletion request that queued no Fullstory call names the user for nothing: it goes now (one
    # that did goes once its call is done: deletion.finish_deletion_calls).
    finished = [
        r.inbox_id
        for r in results
        if r.forget and deletion is not None and not any(d.action == deletion_sql.DELETION_CALL for d in r.deliveries)
    ]
    if finished:
        deletion_sql.delete_events(conn, finished)
    return conflicts


def record_dispatch_failures(
    conn: Connection, failures: list[DispatchFailure], now: float, max_attempts: int, retry_in: float
) -> list[str]:
    moved: list[str] = []
    for failure in failures:
        row = conn.execute(
            "INSERT INTO dispatch_failures (inbox_id, attempts, last_error, last_at) VALUES (?, 1, ?, ?)"
            " ON CONFLICT (inbox_id) DO UPDATE SET attempts = dispatch_failures.attempts + 1,"
            " last_error = excluded.last_error, last_at = excluded.last_at RETURNING attempts",
            (failure.inbox_id, failure.error, now),
        ).fetchone()
        if row[0] < max_attempts:
            conn.execute("UPDATE inbox SET lease_until = ? WHERE id = ?", (now + retry_in, failure.inbox_id))
            continue
        error = f"routing failed {row[0]} times: {failure.error}"
        conn.execute(
            "INSERT INTO quarantine (id, source, stream, dedup_key, body, error, received_at)"
            " SELECT id, source, stream, dedup_key, body, ?, received_at FROM inbox WHERE id = ?"
            " ON CONFLICT (source, dedup_key) DO UPDATE SET error = excluded.error, status = 'quarantined'",
            (error, failure.inbox_id),
        )
        conn.execute("DELETE FROM inbox WHERE id = ?", (failure.inbox_id,))
        moved.append(failure.inbox_id)
    # Rows of events that were routed after all, or moved: the table holds only live failures.
    conn.execute("DELETE FROM dispatch_failures WHERE inbox_id NOT IN (SELECT id FROM inbox WHERE status = 'pending')")
    return moved


def sync_snapshots(conn: Connection, scopes: list[str]) -> dict[str, str]:
    marks = ",".join("?" * len(scopes))
    rows = conn.execute(
        f"SELECT scope, content_hash FROM sync_snapshots WHERE scope IN ({marks})",  # noqa: S608
        scopes,
    ).fetchall()
    return dict(rows)


def apply_decision(
    conn: Connection, decision: Decision, now: float, stored: dict[str, user_state_sql.AtRiskColumns]
) -> None:
    """Write what the per-user aggregations decided, in the caller's transaction (`stored`: the
    decided users' rows as `user_state.load` found them)."""
    user_state_sql.save(conn, decision.rows, stored)
    insert_deliveries(conn, [("", now, d) for d in decision.deliveries], now)
    for flow, count in decision.coalesced.items():
        conn.execute(
            "INSERT INTO counters (name, key, value) VALUES ('coalesced', ?, ?)"
            " ON CONFLICT (name, key) DO UPDATE SET value = counters.value + excluded.value",
            (flow, count),
        )


def _crosses(conn: Connection, inbox_id: str, delivery: NewDelivery, now: float, below: list[Any]) -> bool:
    """Count an aggregated delivery's event; true only for the event that reaches the threshold.
    The others are recorded as held back, with the count."""
    step = delivery.aggregate
    assert step is not None
    reached = aggregates_sql.count(conn, delivery.flow, step, now)
    if reached == step.threshold:
        return True
    state = "below the threshold" if reached < step.threshold else "already reached the threshold"
    below.append((inbox_id, delivery.flow, f"aggregate: {reached} of {step.threshold}, {state}", now))
    return False
