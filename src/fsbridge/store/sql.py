"""The store over SQL, shared by the SQLite and PostgreSQL engines: intake, dispatch, deliveries,
identity and the ops reads, over one group-commit writer (`store/writer.py`) and reader threads
with connections of their own. The SQL of the roles split out so far lives with its role:
`jobs.py` (job runs, retention), `profiles.py` (profiles, forgetting a user), `aggregates.py`
(aggregation state) and `ops_reads.py` (what operators and the health monitor read)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from fsbridge.errors import StoreUnavailableError
from fsbridge.log import get_logger
from fsbridge.store import aggregates as aggregates_sql
from fsbridge.store import feature_counts as feature_counts_sql
from fsbridge.store import fullstory_jobs as fullstory_jobs_sql
from fsbridge.store import jobs as jobs_sql
from fsbridge.store import lookups as lookups_sql
from fsbridge.store import ops_reads as ops_sql
from fsbridge.store import profiles as profiles_sql
from fsbridge.store import user_state as user_state_sql
from fsbridge.store.base import (
    UNRENDERED,
    Accepted,
    AttemptRecord,
    Delivery,
    DeliveryUpdate,
    DispatchFailure,
    DispatchResult,
    EventStory,
    FlowSkip,
    IdentityClaim,
    IdentityConflict,
    InboxEvent,
    NewDelivery,
    NewInboxEvent,
    NewQuarantined,
    QuarantinedEvent,
    Undispatched,
)
from fsbridge.store.engine import Connection, Engine
from fsbridge.store.feature_counts import AdoptionDecider, CountingRules
from fsbridge.store.fullstory_jobs import CHUNK, Audience, SessionCheck
from fsbridge.store.jobs import JobRun, JobState, RetentionPeriods
from fsbridge.store.lookups import CachedAnswer, RenderedDelivery
from fsbridge.store.profiles import UserRecord
from fsbridge.store.user_state import Decision, PendingRenderer, UserStateDecider
from fsbridge.store.writer import GroupCommitWriter

T = TypeVar("T")
FULLSTORY_API = "fullstory_api"  # the source of what scheduled jobs fetch (sources/fullstory_api.py)
log = get_logger(__name__)

_DELIVERY_COLUMNS = (
    "id, inbox_id, flow, destination, message_id, body, status, attempts, created_at, received_at, "
    "retry_started_at, next_attempt_at, send_alone, last_status_code, last_error, last_response, action, sync_scope, "
    "awaiting"
)


_ID_PROCESS = secrets.token_hex(5)  # random per process, so ids from several replicas never collide
_ID_COUNTER = itertools.count()


# Intake's one statement per event; `bench/store_floor.py` times it alone.
INBOX_INSERT = (
    "INSERT INTO inbox (id, source, stream, dedup_key, kind, body, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id"
)


def _new_id(prefix: str) -> str:
    # Time-ordered (nanoseconds), then process and counter: sorts by creation on every engine, and
    # needs no system call for randomness per id.
    return f"{prefix}_{time.time_ns():016x}{_ID_PROCESS}{next(_ID_COUNTER) & 0xFFFFFF:06x}"


class SqlStore:
    """The `Store` on a SQL engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = GroupCommitWriter(engine)
        self._reader_local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fsbridge-store-reader")
        self._reader_conns: list[Connection] = []
        self._reader_lock = threading.Lock()
        self._opened = False
        # The per-user aggregations (flows/aggregations), decided in the dispatch transaction; set
        # by the runtime when one is enabled.
        self.user_states: UserStateDecider | None = None
        # How feature uses are counted (flows.feature_adoption), when it is enabled.
        self.feature_counting: CountingRules | None = None

    @property
    def transactions(self) -> int:
        """How many write transactions have committed (group commit makes this < writes)."""
        return self._writer.transactions

    @property
    def writes(self) -> int:
        """How many writes those transactions committed."""
        return self._writer.writes

    async def open(self) -> None:
        if self._opened:
            return
        try:
            await asyncio.to_thread(self.engine.prepare)
        except self.engine.errors as exc:
            raise StoreUnavailableError(f"{self.engine.describe()} cannot be prepared: {exc}") from exc
        self._writer.start()
        self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        await asyncio.to_thread(self._writer.stop)
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                with contextlib.suppress(Exception):
                    conn.close()
            self._reader_conns.clear()
        self._opened = False

    # -- plumbing ---------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        if not self._opened:
            msg = "The store is not open."
            raise StoreUnavailableError(msg)
        return await self._writer.submit(fn)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            conn = getattr(self._reader_local, "conn", None)
            if conn is None:
                conn = self.engine.connect()
                self._reader_local.conn = conn
                with self._reader_lock:
                    self._reader_conns.append(conn)
            try:
                return fn(conn)
            except self.engine.errors:
                # The connection may be broken (a server restart): the next read connects anew.
                self._reader_local.conn = None
                with contextlib.suppress(Exception):
                    conn.close()
                raise

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except self.engine.errors as exc:
            raise StoreUnavailableError(f"The store could not be read: {exc}") from exc

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def recover_after_restart(self, now: float) -> int:
        exclusive = self.engine.exclusive

        def write(conn: Connection) -> int:
            released = 0
            if exclusive:
                # One process owns the store, so every lease in it belongs to a run that is gone.
                # Shared stores (PostgreSQL) keep other replicas' leases: they expire by themselves.
                released += conn.execute("UPDATE inbox SET lease_until = NULL WHERE lease_until IS NOT NULL").rowcount
                released += conn.execute(
                    "UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL"
                ).rowcount
                # A job run cut short by the crash: its claim expires now, so it resumes from its cursor.
                conn.execute("UPDATE jobs SET running_until = ? WHERE running_until IS NOT NULL", (now - 1,))
            conn.execute("UPDATE destination_state SET parked_reason = NULL")
            conn.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ?"
                " WHERE status = 'parked'",
                (now, now),
            )
            return released

        return await self._write(write)

    # -- intake -----------------------------------------------------------------------------------

    async def accept(self, event: NewInboxEvent) -> Accepted:
        return await self._write(lambda conn: self._insert_inbox(conn, event))

    async def quarantine(self, event: NewQuarantined) -> Accepted:
        return await self._write(lambda conn: self._insert_quarantined(conn, event))

    async def accept_all(self, events: list[NewInboxEvent | NewQuarantined]) -> list[Accepted]:
        def write(conn: Connection) -> list[Accepted]:
            return [
                self._insert_inbox(conn, e) if isinstance(e, NewInboxEvent) else self._insert_quarantined(conn, e)
                for e in events
            ]

        return await self._write(write)

    def _insert_inbox(self, conn: Connection, event: NewInboxEvent) -> Accepted:
        row = conn.execute(
            INBOX_INSERT,
            (
                _new_id("evt"),
                event.source,
                event.stream,
                event.dedup_key,
                event.kind,
                event.body,
                event.received_at,
            ),
        ).fetchone()
        if row is not None:
            return Accepted(row[0], duplicate=False)
        return self._duplicate(conn, "inbox", event.source, event.dedup_key)

    def _insert_quarantined(self, conn: Connection, event: NewQuarantined) -> Accepted:
        row = conn.execute(
            "INSERT INTO quarantine (id, source, stream, dedup_key, body, error, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id",
            (
                _new_id("qtn"),
                event.source,
                event.stream,
                event.dedup_key,
                event.body,
                event.error,
                event.received_at,
            ),
        ).fetchone()
        if row is not None:
            return Accepted(row[0], duplicate=False)
        return self._duplicate(conn, "quarantine", event.source, event.dedup_key)

    @staticmethod
    def _duplicate(conn: Connection, table: str, source: str, dedup_key: str) -> Accepted:
        existing = conn.execute(
            f"SELECT id FROM {table} WHERE source = ? AND dedup_key = ?",  # noqa: S608 - fixed table names
            (source, dedup_key),
        ).fetchone()
        _increment(conn, "duplicate", source)
        return Accepted(existing[0], duplicate=True)

    # -- dispatch ---------------------------------------------------------------------------------

    async def claim_inbox(self, limit: int, now: float, lease_seconds: float) -> list[InboxEvent]:
        skip_locked = self.engine.skip_locked

        def write(conn: Connection) -> list[InboxEvent]:
            rows = conn.execute(
                "UPDATE inbox SET lease_until = ? WHERE id IN ("  # noqa: S608 - fixed text
                " SELECT id FROM inbox WHERE status = 'pending' AND (lease_until IS NULL OR lease_until < ?)"
                f" ORDER BY received_at LIMIT ?{skip_locked})"
                " RETURNING id, source, stream, dedup_key, kind, body, received_at",
                (now + lease_seconds, now, limit),
            ).fetchall()
            return sorted((InboxEvent(*row) for row in rows), key=lambda e: e.received_at)

        return await self._write(write)

    async def record_dispatch(self, results: list[DispatchResult], now: float) -> list[IdentityConflict]:
        def write(conn: Connection) -> list[IdentityConflict]:
            missing = [r.inbox_id for r in results if r.received_at is None]
            received = {
                event_id: conn.execute("SELECT received_at FROM inbox WHERE id = ?", (event_id,)).fetchone()
                for event_id in missing
            }
            below: list[tuple[str, str, str, float]] = []
            _insert_deliveries(
                conn,
                [
                    (r.inbox_id, r.received_at or (received.get(r.inbox_id) or (now,))[0], d)
                    for r in results
                    for d in r.deliveries
                    if d.aggregate is None or _crosses(conn, r.inbox_id, d, now, below)
                ],
                now,
            )
            counting = self.feature_counting
            uses = [u for r in results for u in r.feature_uses] if counting is not None else []
            if uses:
                assert counting is not None
                feature_counts_sql.count(conn, uses, counting)
            decider = self.user_states
            signals = [s for r in results for s in r.signals] if decider is not None else []
            if signals:
                assert decider is not None
                keys = sorted({s.user_key for s in signals})
                stored = user_state_sql.load(conn, keys, self.engine.for_update)
                _apply_decision(conn, decider.decide(stored, signals, now), now)
            filtered = [(r.inbox_id, skip.flow, skip.reason, now) for r in results for skip in r.filtered] + below
            if filtered:
                conn.executemany(
                    "INSERT INTO flow_outcomes (inbox_id, flow, outcome, reason, at)"
                    " VALUES (?, ?, 'filtered', ?, ?) ON CONFLICT (inbox_id, flow) DO NOTHING",
                    filtered,
                )
            conflicts = [c for r in results for claim in r.claims if (c := _claim(conn, claim, now)) is not None]
            groups = [(g.group_id, g.user_id, now) for r in results for g in r.groups]
            if groups:
                conn.executemany(
                    "INSERT INTO group_members (group_id, user_id, last_seen) VALUES (?, ?, ?)"
                    " ON CONFLICT (group_id, user_id) DO UPDATE SET last_seen = excluded.last_seen",
                    groups,
                )
            audiences = [(a.user_id, a.audience_key, int(a.member), now) for r in results for a in r.audiences]
            if audiences:
                conn.executemany(
                    "INSERT INTO audience_membership (user_id, audience_key, member, updated_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, audience_key) DO UPDATE"
                    " SET member = excluded.member, updated_at = excluded.updated_at",
                    audiences,
                )
            for result in results:
                for update in result.profiles:
                    profiles_sql.apply_profile(conn, update, now)
            # After the batch's claims and profiles, so a deletion leaves nothing of what came before it.
            for result in results:
                for user in result.forget:
                    profiles_sql.forget(conn, user)
            conn.executemany(
                "UPDATE inbox SET status = 'dispatched', lease_until = NULL, dispatched_at = ? WHERE id = ?",
                [(now, r.inbox_id) for r in results],
            )
            return conflicts

        return await self._write(write)

    async def record_dispatch_failures(
        self, failures: list[DispatchFailure], now: float, max_attempts: int, retry_in: float
    ) -> list[str]:
        def write(conn: Connection) -> list[str]:
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
            conn.execute(
                "DELETE FROM dispatch_failures WHERE inbox_id NOT IN (SELECT id FROM inbox WHERE status = 'pending')"
            )
            return moved

        return await self._write(write)

    async def undispatched(self) -> Undispatched:
        return await self._read(ops_sql.undispatched)

    async def sync_snapshots(self, scopes: list[str]) -> dict[str, str]:
        if not scopes:
            return {}

        def read(conn: Connection) -> dict[str, str]:
            marks = ",".join("?" * len(scopes))
            rows = conn.execute(
                f"SELECT scope, content_hash FROM sync_snapshots WHERE scope IN ({marks})",  # noqa: S608
                scopes,
            ).fetchall()
            return dict(rows)

        return await self._read(read)

    async def resolve_identities(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys:
            return {}

        def read(conn: Connection) -> dict[tuple[str, str], str]:
            found: dict[tuple[str, str], str] = {}
            for kind, value in set(keys):
                row = conn.execute(
                    "SELECT user_id FROM identity_links WHERE kind = ? AND value = ?", (kind, value)
                ).fetchone()
                if row is not None:
                    found[(kind, value)] = row[0]
            return found

        return await self._read(read)

    async def audience_memberships(self, user_id: str) -> dict[str, bool]:
        def read(conn: Connection) -> dict[str, bool]:
            rows = conn.execute(
                "SELECT audience_key, member FROM audience_membership WHERE user_id = ?", (user_id,)
            ).fetchall()
            return {key: bool(member) for key, member in rows}

        return await self._read(read)

    # -- delivery ---------------------------------------------------------------------------------

    async def claim_deliveries(self, destination: str, limit: int, now: float, lease_seconds: float) -> list[Delivery]:
        skip_locked = self.engine.skip_locked

        def write(conn: Connection) -> list[Delivery]:
            rows = conn.execute(
                "UPDATE deliveries SET lease_until = ? WHERE id IN ("  # noqa: S608 - fixed text
                " SELECT id FROM deliveries WHERE destination = ? AND status = 'pending'"
                " AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                f" ORDER BY next_attempt_at LIMIT ?{skip_locked})"
                f" RETURNING {_DELIVERY_COLUMNS}",
                (now + lease_seconds, destination, now, now, limit),
            ).fetchall()
            return sorted((_delivery(row) for row in rows), key=lambda d: d.next_attempt_at)

        return await self._write(write)

    async def record_updates(self, updates: list[DeliveryUpdate]) -> None:
        rows = [
            (
                u.status, 1 if u.attempt else 0, u.next_attempt_at, int(u.send_alone), u.last_status_code,
                u.last_error, u.attempt.response_excerpt if u.attempt else None, u.status,
                u.attempt.attempted_at if u.attempt else None, u.delivery_id,
            )
            for u in updates
        ]  # fmt: skip
        delivered = [
            (u.attempt.attempted_at if u.attempt else u.next_attempt_at, u.delivery_id)
            for u in updates
            if u.status == "delivered" and u.may_have_snapshot
        ]
        attempts = [
            (u.delivery_id, a.attempted_at, a.duration_ms, a.status_code, a.error, a.response_excerpt)
            for u in updates
            if (a := u.attempt) is not None
        ]

        def write(conn: Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET status = ?, attempts = attempts + ?, next_attempt_at = ?,"
                " lease_until = NULL, send_alone = ?, last_status_code = COALESCE(?, last_status_code),"
                " last_error = ?, last_response = COALESCE(?, last_response),"
                " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
                " WHERE id = ?",
                rows,
            )
            if delivered:
                conn.executemany(
                    "INSERT INTO sync_snapshots (scope, content_hash, synced_at)"
                    " SELECT sync_scope, content_hash, ? FROM deliveries"
                    " WHERE id = ? AND sync_scope IS NOT NULL AND content_hash IS NOT NULL"
                    " ON CONFLICT (scope) DO UPDATE SET content_hash = excluded.content_hash,"
                    " synced_at = excluded.synced_at",
                    delivered,
                )
            if attempts:
                conn.executemany(
                    "INSERT INTO attempts (delivery_id, attempted_at, duration_ms, status_code, error,"
                    " response_excerpt) VALUES (?, ?, ?, ?, ?, ?)",
                    attempts,
                )

        if updates:
            await self._write(write)

    async def next_due_at(self, destination: str) -> float | None:
        def read(conn: Connection) -> float | None:
            row = conn.execute(
                "SELECT MIN(CASE WHEN lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END)"
                " FROM deliveries"
                " WHERE destination = ? AND status = 'pending'",
                (destination,),
            ).fetchone()
            return None if row is None else row[0]

        return await self._read(read)

    # -- destinations -----------------------------------------------------------------------------

    async def park_destination(self, name: str, reason: str, now: float) -> None:
        def write(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO destination_state (name, parked_reason, parked_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET parked_reason = excluded.parked_reason,"
                " parked_at = excluded.parked_at",
                (name, reason, now),
            )
            conn.execute(
                "UPDATE deliveries SET status = 'parked', lease_until = NULL"
                " WHERE destination = ? AND status = 'pending'",
                (name,),
            )

        await self._write(write)

    async def resume_destination(self, name: str, now: float) -> int:
        def write(conn: Connection) -> int:
            conn.execute("UPDATE destination_state SET parked_reason = NULL WHERE name = ?", (name,))
            return conn.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ?"
                " WHERE destination = ? AND status = 'parked'",
                (now, now, name),
            ).rowcount

        return await self._write(write)

    async def parked_destinations(self) -> dict[str, str]:
        def read(conn: Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT name, parked_reason FROM destination_state WHERE parked_reason IS NOT NULL"
            ).fetchall()
            return {name: reason for name, reason in rows}

        return await self._read(read)

    async def set_paused(self, name: str, paused: bool) -> None:
        def write(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO destination_state (name, paused) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
                (name, int(paused)),
            )

        await self._write(write)

    async def paused_destinations(self) -> set[str]:
        def read(conn: Connection) -> set[str]:
            return {row[0] for row in conn.execute("SELECT name FROM destination_state WHERE paused = 1")}

        return await self._read(read)

    # -- operators --------------------------------------------------------------------------------

    async def list_deliveries(self, status: str | None, flow: str | None, limit: int) -> list[Delivery]:
        clauses, params = _filters(status=status, flow=flow)
        sql = (
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries {clauses}"  # noqa: S608 - clauses are fixed text
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        return await self._read(lambda conn: [_delivery(r) for r in conn.execute(sql, (*params, limit))])

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        def read(conn: Connection) -> Delivery | None:
            row = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?",  # noqa: S608
                (delivery_id,),
            ).fetchone()
            return None if row is None else _delivery(row)

        return await self._read(read)

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        def read(conn: Connection) -> list[AttemptRecord]:
            rows = conn.execute(
                "SELECT attempted_at, duration_ms, status_code, error, response_excerpt FROM attempts"
                " WHERE delivery_id = ? ORDER BY id",
                (delivery_id,),
            ).fetchall()
            return [AttemptRecord(*row) for row in rows]

        return await self._read(read)

    async def replay_delivery(self, delivery_id: str, now: float) -> bool:
        def write(conn: Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ?,"
                    " lease_until = NULL, send_alone = 0 WHERE id = ? AND status != 'pending' AND action != ?",
                    (now, now, delivery_id, UNRENDERED),
                ).rowcount
                == 1
            )

        return await self._write(write)

    async def replay_deliveries(self, status: str, flow: str | None, now: float) -> int:
        clauses, params = _filters(status=status, flow=flow)

        sql = (
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, retry_started_at = ?,"  # noqa: S608
            f" lease_until = NULL, send_alone = 0 {clauses} {'AND' if clauses else 'WHERE'} action != ?"
        )

        def write(conn: Connection) -> int:
            return conn.execute(sql, (now, now, *params, UNRENDERED)).rowcount

        return await self._write(write)

    async def list_quarantine(self, limit: int) -> list[QuarantinedEvent]:
        def read(conn: Connection) -> list[QuarantinedEvent]:
            rows = conn.execute(
                "SELECT id, source, stream, body, error, received_at, status FROM quarantine"
                " WHERE status = 'quarantined' ORDER BY received_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [QuarantinedEvent(*row) for row in rows]

        return await self._read(read)

    async def get_inbox_event(self, event_id: str) -> InboxEvent | None:
        def read(conn: Connection) -> InboxEvent | None:
            row = conn.execute(
                "SELECT id, source, stream, dedup_key, kind, body, received_at FROM inbox WHERE id = ?",
                (event_id,),
            ).fetchone()
            return None if row is None else InboxEvent(*row)

        return await self._read(read)

    async def inbox_events(self, event_ids: list[str]) -> dict[str, InboxEvent]:
        def read(conn: Connection) -> dict[str, InboxEvent]:
            events: dict[str, InboxEvent] = {}
            for start in range(0, len(event_ids), 500):
                chunk = event_ids[start : start + 500]
                rows = conn.execute(
                    "SELECT id, source, stream, dedup_key, kind, body, received_at FROM inbox"  # noqa: S608
                    f" WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                events.update((row[0], InboxEvent(*row)) for row in rows)
            return events

        return await self._read(read)

    # -- per-user aggregations (store/user_state.py) -----------------------------------------------

    async def tick_user_states(
        self, decider: UserStateDecider, now: float, recover_before: float | None, after: str, limit: int = 500
    ) -> tuple[int, int, str | None]:
        """Time-driven transitions for one chunk of users (in key order after `after`), in one
        transaction: (users looked at, messages queued, the last key, or None when done)."""

        def write(conn: Connection) -> tuple[int, int, str | None]:
            keys = user_state_sql.due_for_tick(conn, recover_before, limit, after)
            if not keys:
                return 0, 0, None
            decision = decider.tick(user_state_sql.load(conn, keys, self.engine.for_update), now)
            _apply_decision(conn, decision, now)
            return len(keys), len(decision.deliveries), keys[-1] if len(keys) == limit else None

        return await self._write(write)

    async def render_pending(self, deliveries: list[Delivery], renderer: PendingRenderer) -> list[Any]:
        """Render claimed coalesced identifies from their users' states, in one transaction with
        the states they change (`flows/aggregations/pending.py`)."""

        def write(conn: Connection) -> list[Any]:
            key_of = {d.id: renderer.user_key(d) for d in deliveries}
            states = user_state_sql.load(conn, sorted(set(key_of.values())), self.engine.for_update)
            results: list[Any] = []
            changed: dict[str, str] = {}
            rendered: list[RenderedDelivery] = []
            for delivery in deliveries:
                key = key_of[delivery.id]
                result, new_state = renderer.render(delivery, changed.get(key, states.get(key)))
                if new_state is not None:
                    changed[key] = new_state
                if result.outcome == "ready":
                    rendered.append(RenderedDelivery(delivery.id, delivery.body))
                results.append(result)
            user_state_sql.replace_states(conn, changed)
            lookups_sql.record_rendered(conn, rendered)
            return results

        return await self._write(write)

    async def evaluate_adoption(self, decider: AdoptionDecider, now: float, since: float) -> int:
        """Decide the closed windows of feature adoption and queue the alerts, in one transaction."""

        def write(conn: Connection) -> int:
            deliveries = feature_counts_sql.evaluate(conn, decider, now, since, self.engine.for_update)
            _insert_deliveries(conn, [("", now, d) for d in deliveries], now)
            return len(deliveries)

        return await self._write(write)

    async def open_adoption_drops(self) -> list[tuple[str, str, float | None]]:
        return await self._read(feature_counts_sql.open_drops)

    async def user_state(self, user_key: str) -> str | None:
        return await self._read(lambda conn: user_state_sql.state_of(conn, user_key))

    async def user_state_overview(
        self, limit: int = 50
    ) -> tuple[list[tuple[str, float | None, int | None]], dict[str, int]]:
        return await self._read(lambda conn: user_state_sql.overview(conn, limit))

    # -- scheduled Fullstory jobs (store/fullstory_jobs.py) ---------------------------------------

    @staticmethod
    def _insert_api_events(conn: Connection, events: list[tuple[str, str, bytes]], now: float) -> None:
        if events:
            conn.executemany(
                "INSERT INTO inbox (id, source, stream, dedup_key, kind, body, received_at)"
                " VALUES (?, ?, '', ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO NOTHING",
                [(_new_id("evt"), FULLSTORY_API, key, kind, body, now) for key, kind, body in events],
            )

    async def stage_members(self, run: str, audience_key: str, user_ids: list[str]) -> None:
        if user_ids:
            await self._write(lambda conn: fullstory_jobs_sql.stage(conn, run, audience_key, user_ids))

    async def staged_count(self, run: str, audience_key: str) -> int:
        return await self._read(lambda conn: fullstory_jobs_sql.staged_count(conn, run, audience_key))

    async def member_count(self, audience_key: str) -> int:
        return await self._read(lambda conn: fullstory_jobs_sql.member_count(conn, audience_key))

    async def apply_entered(self, run: str, audience: Audience, after: str, now: float) -> tuple[int, str | None]:
        return await self._write(
            lambda conn: fullstory_jobs_sql.apply_changes(
                conn, self._insert_api_events, run, audience, after, now, member=True
            )
        )

    async def apply_exited(self, run: str, audience: Audience, after: str, now: float) -> tuple[int, str | None]:
        return await self._write(
            lambda conn: fullstory_jobs_sql.apply_changes(
                conn, self._insert_api_events, run, audience, after, now, member=False
            )
        )

    async def discard_staging(self, run: str) -> None:
        while await self._write(lambda conn: fullstory_jobs_sql.discard_staging_chunk(conn, run)) >= CHUNK:
            pass

    async def high_value_candidates(
        self, audiences: list[str], traits: dict[str, list[Any]], limit: int
    ) -> list[SessionCheck]:
        return await self._read(lambda conn: fullstory_jobs_sql.high_value_candidates(conn, audiences, traits, limit))

    async def record_session_check(
        self, user_id: str, newest_at: float | None, sessions: list[tuple[str, dict[str, Any]]], now: float
    ) -> None:
        await self._write(
            lambda conn: fullstory_jobs_sql.record_session_check(
                conn, self._insert_api_events, user_id, newest_at, sessions, now
            )
        )

    # -- enrichment (store/lookups.py) -------------------------------------------------------------

    async def cached_answers(self, keys: list[str], now: float) -> dict[str, str]:
        if not keys:
            return {}
        return await self._read(lambda conn: lookups_sql.cached_answers(conn, keys, now))

    async def cache_answers(self, answers: list[CachedAnswer]) -> None:
        if answers:
            await self._write(lambda conn: lookups_sql.cache_answers(conn, answers))

    async def record_rendered(
        self, rendered: list[RenderedDelivery], claims: list[IdentityClaim], now: float
    ) -> list[IdentityConflict]:
        def write(conn: Connection) -> list[IdentityConflict]:
            lookups_sql.record_rendered(conn, rendered)
            return [c for claim in claims if (c := _claim(conn, claim, now)) is not None]

        return await self._write(write)

    async def list_inbox(self, since: float, limit: int) -> list[InboxEvent]:
        def read(conn: Connection) -> list[InboxEvent]:
            rows = conn.execute(
                "SELECT id, source, stream, dedup_key, kind, body, received_at FROM inbox"
                " WHERE received_at >= ? ORDER BY received_at, id LIMIT ?",
                (since, limit),
            ).fetchall()
            return [InboxEvent(*row) for row in rows]

        return await self._read(read)

    async def deliveries_for_events(self, event_ids: list[str], flow: str) -> dict[str, Delivery]:
        def read(conn: Connection) -> dict[str, Delivery]:
            found: dict[str, Delivery] = {}
            for start in range(0, len(event_ids), 500):
                chunk = event_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - fixed columns and placeholders
                    f" WHERE flow = ? AND inbox_id IN ({marks}) ORDER BY created_at, id",
                    (flow, *chunk),
                ).fetchall()
                for row in rows:
                    delivery = _delivery(row)
                    found[delivery.inbox_id] = delivery
            return found

        return await self._read(read)

    async def stats(self) -> dict[str, Any]:
        return await self._read(ops_sql.stats)

    # -- operations ---------------------------------------------------------------------------------

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        return await self._read(ops_sql.queue_depths)

    async def window_counts(self, since: float) -> dict[str, dict[str, dict[str, int]]]:
        return await self._read(lambda conn: ops_sql.window_counts(conn, since))

    async def timeline(self, since: float, bucket_seconds: float, buckets: int) -> dict[str, list[int]]:
        to_bucket = self.engine.bucket

        def read(conn: Connection) -> dict[str, list[int]]:
            series = {name: [0] * buckets for name in ("received", "delivered", "dead")}
            queries = {
                "received": f"SELECT {to_bucket('(received_at - ?) / ?')}, COUNT(*) FROM inbox"  # noqa: S608
                " WHERE received_at >= ? GROUP BY 1",
                "delivered": f"SELECT {to_bucket('(delivered_at - ?) / ?')}, COUNT(*) FROM deliveries"  # noqa: S608
                " WHERE status = 'delivered' AND delivered_at >= ? GROUP BY 1",
                "dead": f"SELECT {to_bucket('(a.attempted_at - ?) / ?')}, COUNT(DISTINCT d.id) FROM deliveries d"  # noqa: S608
                " JOIN attempts a ON a.delivery_id = d.id WHERE d.status = 'dead' AND a.attempted_at >= ? GROUP BY 1",
            }
            for name, sql in queries.items():
                for bucket, count in conn.execute(sql, (since, bucket_seconds, since)):
                    if 0 <= bucket < buckets:
                        series[name][bucket] += count
            return series

        return await self._read(read)

    async def event_story(self, event_id: str) -> EventStory | None:
        def read(conn: Connection) -> EventStory | None:
            row = conn.execute(
                "SELECT id, source, stream, dedup_key, kind, body, received_at, dispatched_at FROM inbox WHERE id = ?",
                (event_id,),
            ).fetchone()
            if row is None:
                return None
            filtered = [
                FlowSkip(flow, reason)
                for flow, reason in conn.execute(
                    "SELECT flow, reason FROM flow_outcomes WHERE inbox_id = ? ORDER BY flow", (event_id,)
                )
            ]
            deliveries = [
                _delivery(r)
                for r in conn.execute(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE inbox_id = ? ORDER BY created_at",  # noqa: S608
                    (event_id,),
                )
            ]
            attempts = {
                d.id: [
                    AttemptRecord(*a)
                    for a in conn.execute(
                        "SELECT attempted_at, duration_ms, status_code, error, response_excerpt FROM attempts"
                        " WHERE delivery_id = ? ORDER BY id",
                        (d.id,),
                    )
                ]
                for d in deliveries
            }
            return EventStory(InboxEvent(*row[:7]), row[7], filtered, deliveries, attempts)

        return await self._read(read)

    async def get_quarantined(self, quarantine_id: str) -> QuarantinedEvent | None:
        def read(conn: Connection) -> QuarantinedEvent | None:
            row = conn.execute(
                "SELECT id, source, stream, body, error, received_at, status FROM quarantine WHERE id = ?",
                (quarantine_id,),
            ).fetchone()
            return None if row is None else QuarantinedEvent(*row)

        return await self._read(read)

    async def release_quarantined(self, quarantine_id: str, event: NewInboxEvent) -> Accepted:
        def write(conn: Connection) -> Accepted:
            conn.execute("UPDATE quarantine SET status = 'replayed' WHERE id = ?", (quarantine_id,))
            new_id = _new_id("evt")
            row = conn.execute(
                "INSERT INTO inbox (id, source, stream, dedup_key, kind, body, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id",
                (new_id, event.source, event.stream, event.dedup_key, event.kind, event.body, event.received_at),
            ).fetchone()
            if row is not None:
                return Accepted(row[0], duplicate=False)
            existing = conn.execute(
                "SELECT id FROM inbox WHERE source = ? AND dedup_key = ?", (event.source, event.dedup_key)
            ).fetchone()
            return Accepted(existing[0], duplicate=True)

        return await self._write(write)

    async def attempt_outcomes(self, since: float) -> dict[str, tuple[int, int]]:
        return await self._read(lambda conn: ops_sql.attempt_outcomes(conn, since))

    async def inbound_counts(self, start: float, end: float) -> dict[str, int]:
        return await self._read(lambda conn: ops_sql.inbound_counts(conn, start, end))

    async def dead_letters_since(self, since: float) -> dict[str, int]:
        return await self._read(lambda conn: ops_sql.dead_letters_since(conn, since))

    async def alert_states(self) -> dict[str, tuple[bool, float, str]]:
        def read(conn: Connection) -> dict[str, tuple[bool, float, str]]:
            return {
                key: (bool(active), since, detail)
                for key, active, since, detail in conn.execute("SELECT key, active, since, detail FROM alerts")
            }

        return await self._read(read)

    async def set_alert(self, key: str, active: bool, now: float, detail: str) -> None:
        def write(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO alerts (key, active, since, detail) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET active = excluded.active, since = excluded.since,"
                " detail = excluded.detail",
                (key, int(active), now, detail),
            )

        await self._write(write)

    async def create_ops_session(self, id_hash: str, csrf: str, now: float, expires_at: float) -> None:
        def write(conn: Connection) -> None:
            conn.execute("DELETE FROM ops_sessions WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO ops_sessions (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (id_hash, csrf, now, expires_at),
            )

        await self._write(write)

    async def ops_session(self, id_hash: str, now: float) -> str | None:
        def read(conn: Connection) -> str | None:
            row = conn.execute(
                "SELECT csrf FROM ops_sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, now)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(read)

    async def delete_ops_session(self, id_hash: str) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM ops_sessions WHERE id_hash = ?", (id_hash,)))

    async def user_record(self, user_id: str) -> UserRecord | None:
        return await self._read(lambda conn: profiles_sql.user_record(conn, user_id))

    async def user_activity(
        self, identifiers: list[str], limit: int = 50
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        needles = [orjson.dumps(i) for i in sorted(set(identifiers))]
        contains = self.engine.contains("body")
        return await self._read(lambda conn: profiles_sql.user_activity(conn, contains, needles, limit))

    # -- jobs and retention (the SQL is in store/jobs.py) ------------------------------------------

    async def claim_job_run(
        self, name: str, owner: str, now: float, every: float, run_for: float, *, force: bool = False
    ) -> JobRun | None:
        return await self._write(lambda conn: jobs_sql.claim_job_run(conn, name, owner, now, every, run_for, force))

    async def save_job_cursor(self, name: str, owner: str, cursor: str | None) -> None:
        await self._write(lambda conn: jobs_sql.save_job_cursor(conn, name, owner, cursor))

    async def finish_job_run(
        self, name: str, owner: str, now: float, outcome: str, counts: dict[str, Any], cursor: str | None
    ) -> None:
        await self._write(lambda conn: jobs_sql.finish_job_run(conn, name, owner, now, outcome, counts, cursor))

    async def job_states(self) -> dict[str, JobState]:
        return await self._read(jobs_sql.job_states)

    async def prune(self, now: float, periods: RetentionPeriods) -> dict[str, int]:
        totals: dict[str, int] = {}
        while True:  # bounded chunks, each its own write, so intake never waits behind a long prune
            counts = await self._write(lambda conn: jobs_sql.prune_chunk(conn, now, periods))
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
            if max(counts.values()) < jobs_sql.PRUNE_CHUNK:
                return totals

    async def enqueue(self, deliveries: list[NewDelivery], now: float) -> None:
        await self.record_dispatch([DispatchResult("", deliveries=deliveries)], now)


def _insert_deliveries(conn: Connection, rows: list[tuple[str, float, NewDelivery]], now: float) -> None:
    """Queue deliveries: (the inbound event, when it was received, the delivery) each. One for a
    destination that is parked is queued parked; one whose message id exists already is dropped."""
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
        " ON CONFLICT (message_id) DO NOTHING",
        [
            (
                _new_id("dlv"), d.event_id or inbox_id, d.flow, d.destination, d.message_id, d.body, d.status,
                d.destination, d.status, now, received_at, now, d.not_before or now, d.last_error, d.action,
                d.sync_scope, d.content_hash, d.awaiting,
            )
            for inbox_id, received_at, d in rows
        ],
    )  # fmt: skip


def _apply_decision(conn: Connection, decision: Decision, now: float) -> None:
    """Write what the per-user aggregations decided, in the caller's transaction."""
    user_state_sql.save(conn, decision.rows)
    _insert_deliveries(conn, [("", now, d) for d in decision.deliveries], now)
    for flow, count in decision.coalesced.items():
        conn.execute(
            "INSERT INTO counters (name, key, value) VALUES ('coalesced', ?, ?)"
            " ON CONFLICT (name, key) DO UPDATE SET value = counters.value + excluded.value",
            (flow, count),
        )


def _claim(conn: Connection, claim: IdentityClaim, now: float) -> IdentityConflict | None:
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


def _increment(conn: Connection, name: str, key: str) -> None:
    conn.execute(
        "INSERT INTO counters (name, key, value) VALUES (?, ?, 1)"
        " ON CONFLICT (name, key) DO UPDATE SET value = counters.value + 1",
        (name, key),
    )


def _filters(*, status: str | None, flow: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if flow is not None:
        clauses.append("flow = ?")
        params.append(flow)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _delivery(row: Iterable[Any]) -> Delivery:
    values = list(row)
    values[12] = bool(values[12])
    return Delivery(*values)


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
