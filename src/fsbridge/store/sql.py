"""The store over SQL, shared by the SQLite and PostgreSQL engines: one group-commit writer
(`store/writer.py`), reader threads with connections of their own, and each role's calls routed to
that role's SQL. The SQL lives with its role, one module each: `intake.py`, `dispatch.py`,
`deliveries.py`, `identity.py`, `profiles.py`, `ops_reads.py`, `ops_state.py`, `jobs.py`,
`lookups.py`, `user_state.py`, `feature_counts.py`, `fullstory_jobs.py` (and `aggregates.py`, which
dispatch counts through). This class holds no SQL of its own beyond opening and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from fsbridge.errors import StoreUnavailableError
from fsbridge.log import get_logger
from fsbridge.store import deletion as deletion_sql
from fsbridge.store import deliveries as deliveries_sql
from fsbridge.store import dispatch as dispatch_sql
from fsbridge.store import feature_counts as feature_counts_sql
from fsbridge.store import fullstory_jobs as fullstory_jobs_sql
from fsbridge.store import identity as identity_sql
from fsbridge.store import intake as intake_sql
from fsbridge.store import jobs as jobs_sql
from fsbridge.store import lookups as lookups_sql
from fsbridge.store import ops_reads as ops_sql
from fsbridge.store import ops_state as ops_state_sql
from fsbridge.store import profiles as profiles_sql
from fsbridge.store import search as search_sql
from fsbridge.store import tombstones as tombstones_sql
from fsbridge.store import user_state as user_state_sql
from fsbridge.store.deletion import DEFAULT_TOMBSTONE_SECONDS, DeletionRules
from fsbridge.store.deliveries import ReplayFilter
from fsbridge.store.engine import Connection, Engine
from fsbridge.store.feature_counts import AdoptionDecider, CountingRules
from fsbridge.store.fullstory_jobs import CHUNK, Audience, SessionCheck
from fsbridge.store.jobs import JobRun, JobState, RetentionPeriods
from fsbridge.store.lookups import CachedAnswer, RenderedDelivery
from fsbridge.store.profiles import AboutUser, ForgetUser, UserRecord
from fsbridge.store.records import (
    Accepted,
    AttemptRecord,
    Delivery,
    DeliveryUpdate,
    DispatchFailure,
    DispatchResult,
    EventStory,
    IdentityClaim,
    IdentityConflict,
    InboxEvent,
    NewDelivery,
    NewInboxEvent,
    NewQuarantined,
    QuarantinedEvent,
    Undispatched,
)
from fsbridge.store.search import EventQuery, FoundEvent
from fsbridge.store.user_state import PendingRenderer, UserStateDecider
from fsbridge.store.writer import LARGE_BYTES, GroupCommitWriter

T = TypeVar("T")
NO_TOMBSTONES_RECHECK_SECONDS = 1.0
log = get_logger(__name__)


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
        self.deletion = DeletionRules(DEFAULT_TOMBSTONE_SECONDS, engine.contains, engine.contains_folded)
        self._no_tombstones_until = 0.0  # monotonic time until which the store is known to hold none

    def keep_tombstones_for(self, seconds: float) -> None:
        """How long a deleted user's tombstone lasts (`retention.tombstones`)."""
        self.deletion = DeletionRules(seconds, self.engine.contains, self.engine.contains_folded)

    async def after_deletion(self) -> None:
        """What the engine does once a deletion has committed (SQLite truncates its WAL)."""

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

    async def _write(self, fn: Callable[[Connection], T], *, large: bool = False) -> T:
        if not self._opened:
            msg = "The store is not open."
            raise StoreUnavailableError(msg)
        return await self._writer.submit(fn, large=large)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def attempt() -> T:
            conn = getattr(self._reader_local, "conn", None)
            if conn is None:
                conn = self.engine.connect()
                self._reader_local.conn = conn
                with self._reader_lock:
                    self._reader_conns.append(conn)
            try:
                return fn(conn)
            except self.engine.errors:
                # The connection may be broken (a server restart): the next attempt connects anew.
                self._reader_local.conn = None
                with contextlib.suppress(Exception):
                    conn.close()
                raise

        def run() -> T:
            # A reader kept across a database restart fails once on its dead connection: a read is
            # safe to repeat, so it is tried once more on a new one before the store is called down.
            try:
                return attempt()
            except self.engine.errors:
                return attempt()

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
            deliveries_sql.unpark_all(conn, now)
            return released

        return await self._write(write)

    # -- intake (store/intake.py) -----------------------------------------------------------------

    async def accept(self, event: NewInboxEvent) -> Accepted:
        large = len(event.body) > LARGE_BYTES
        return await self._write(lambda conn: intake_sql.insert_inbox(conn, event), large=large)

    async def quarantine(self, event: NewQuarantined) -> Accepted:
        large = len(event.body) > LARGE_BYTES
        return await self._write(lambda conn: intake_sql.insert_quarantined(conn, event), large=large)

    async def accept_all(self, events: list[NewInboxEvent | NewQuarantined]) -> list[Accepted]:
        return await self._write(lambda conn: intake_sql.accept_all(conn, events))

    async def get_inbox_event(self, event_id: str) -> InboxEvent | None:
        return await self._read(lambda conn: intake_sql.get_inbox_event(conn, event_id))

    async def inbox_events(self, event_ids: list[str]) -> dict[str, InboxEvent]:
        return await self._read(lambda conn: intake_sql.inbox_events(conn, event_ids))

    async def list_inbox(self, since: float, limit: int) -> list[InboxEvent]:
        return await self._read(lambda conn: intake_sql.list_inbox(conn, since, limit))

    async def list_quarantine(self, limit: int) -> list[QuarantinedEvent]:
        return await self._read(lambda conn: intake_sql.list_quarantine(conn, limit))

    async def get_quarantined(self, quarantine_id: str) -> QuarantinedEvent | None:
        return await self._read(lambda conn: intake_sql.get_quarantined(conn, quarantine_id))

    async def release_quarantined(self, quarantine_id: str, event: NewInboxEvent) -> Accepted:
        return await self._write(lambda conn: intake_sql.release_quarantined(conn, quarantine_id, event))

    # -- dispatch (store/dispatch.py) -------------------------------------------------------------

    async def claim_inbox(self, limit: int, now: float, lease_seconds: float) -> list[InboxEvent]:
        skip_locked = self.engine.skip_locked
        return await self._write(
            lambda conn: dispatch_sql.claim_inbox(conn, limit, now, now + lease_seconds, skip_locked)
        )

    async def record_dispatch(self, results: list[DispatchResult], now: float) -> list[IdentityConflict]:
        counting, decider, for_update, deletion = (
            self.feature_counting, self.user_states, self.engine.for_update, self.deletion
        )  # fmt: skip
        conflicts = await self._write(
            lambda conn: dispatch_sql.record_dispatch(
                conn, results, now, counting=counting, decider=decider, for_update=for_update, deletion=deletion
            )
        )
        if any(r.forget for r in results):
            self._no_tombstones_until = 0.0
            await self.after_deletion()
        return conflicts

    # -- deletion (store/deletion.py) and tombstones (store/tombstones.py) ----------------------------

    async def forget_user(self, user: ForgetUser, now: float) -> dict[str, int]:
        """Everything about the user goes now, and a tombstone stays (`fsbridge users forget`)."""
        deletion = self.deletion
        forgotten = await self._write(lambda conn: deletion_sql.forget_everything(conn, user, now, deletion))
        self._no_tombstones_until = 0.0
        await self.after_deletion()
        return forgotten.counts

    async def search_events(self, query: EventQuery) -> list[FoundEvent]:
        return await self._read(lambda conn: search_sql.search_events(conn, query))

    async def tombstoned(self, user_ids: list[str], now: float) -> set[str]:
        # Dispatch asks for every batch: while the store holds no tombstone at all, it asks the
        # database at most once a second (a deletion on another replica is seen within that second).
        if not user_ids or time.monotonic() < self._no_tombstones_until:
            return set()
        found, any_exist = await self._read(lambda conn: tombstones_sql.tombstoned(conn, user_ids, now))
        if not any_exist:
            self._no_tombstones_until = time.monotonic() + NO_TOMBSTONES_RECHECK_SECONDS
        return found

    async def record_dispatch_failures(
        self, failures: list[DispatchFailure], now: float, max_attempts: int, retry_in: float
    ) -> list[str]:
        return await self._write(
            lambda conn: dispatch_sql.record_dispatch_failures(conn, failures, now, max_attempts, retry_in)
        )

    async def sync_snapshots(self, scopes: list[str]) -> dict[str, str]:
        if not scopes:
            return {}
        return await self._read(lambda conn: dispatch_sql.sync_snapshots(conn, scopes))

    async def enqueue(self, deliveries: list[NewDelivery], now: float) -> None:
        await self.record_dispatch([DispatchResult("", deliveries=deliveries)], now)

    # -- identity (store/identity.py) and profiles (store/profiles.py) ------------------------------

    async def resolve_identities(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys:
            return {}
        return await self._read(lambda conn: identity_sql.resolve_identities(conn, keys))

    async def audience_memberships(self, user_id: str) -> dict[str, bool]:
        return await self._read(lambda conn: identity_sql.audience_memberships(conn, user_id))

    async def user_record(self, user_id: str) -> UserRecord | None:
        return await self._read(lambda conn: profiles_sql.user_record(conn, user_id))

    async def user_activity(
        self, identifiers: list[str], limit: int = 50, about: AboutUser | None = None
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        needles = [orjson.dumps(i) for i in sorted(set(identifiers))]
        contains = self.engine.contains("body")
        return await self._read(lambda conn: profiles_sql.user_activity(conn, contains, needles, limit, about))

    # -- deliveries and destinations (store/deliveries.py) ------------------------------------------

    async def claim_deliveries(self, destination: str, limit: int, now: float, lease_seconds: float) -> list[Delivery]:
        skip_locked = self.engine.skip_locked
        return await self._write(
            lambda conn: deliveries_sql.claim(conn, destination, limit, now, now + lease_seconds, skip_locked)
        )

    async def record_updates(self, updates: list[DeliveryUpdate]) -> None:
        if updates:
            await self._write(lambda conn: deliveries_sql.record_updates(conn, updates))
            if any(u.ends_deletion for u in updates):  # a deletion request and its call went
                await self.after_deletion()

    async def next_due_at(self, destination: str, now: float) -> float | None:
        return await self._read(lambda conn: deliveries_sql.next_due_at(conn, destination, now))

    async def park_destination(self, name: str, reason: str, now: float) -> None:
        await self._write(lambda conn: deliveries_sql.park_destination(conn, name, reason, now))

    async def resume_destination(self, name: str, now: float) -> int:
        return await self._write(lambda conn: deliveries_sql.resume_destination(conn, name, now))

    async def parked_destinations(self) -> dict[str, str]:
        return await self._read(deliveries_sql.parked_destinations)

    async def set_paused(self, name: str, paused: bool) -> None:
        await self._write(lambda conn: deliveries_sql.set_paused(conn, name, paused))

    async def paused_destinations(self) -> set[str]:
        return await self._read(deliveries_sql.paused_destinations)

    async def list_deliveries(self, status: str | None, flow: str | None, limit: int) -> list[Delivery]:
        return await self._read(lambda conn: deliveries_sql.list_deliveries(conn, status, flow, limit))

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return await self._read(lambda conn: deliveries_sql.get_delivery(conn, delivery_id))

    async def list_attempts(self, delivery_id: str) -> list[AttemptRecord]:
        return await self._read(lambda conn: deliveries_sql.list_attempts(conn, delivery_id))

    async def replay_delivery(self, delivery_id: str, now: float) -> bool:
        return await self._write(lambda conn: deliveries_sql.replay_delivery(conn, delivery_id, now))

    async def replay_deliveries(
        self, status: str, flow: str | None, now: float, narrower: ReplayFilter | None = None
    ) -> int:
        return await self._write(lambda conn: deliveries_sql.replay_deliveries(conn, status, flow, now, narrower))

    async def deliveries_for_events(self, event_ids: list[str], flow: str) -> dict[str, Delivery]:
        return await self._read(lambda conn: deliveries_sql.deliveries_for_events(conn, event_ids, flow))

    # -- ops reads (store/ops_reads.py) and operator state (store/ops_state.py) ---------------------

    async def stats(self) -> dict[str, Any]:
        return await self._read(ops_sql.stats)

    async def coalesced_counts(self) -> dict[str, int]:
        return await self._read(ops_sql.coalesced_counts)

    async def undispatched(self) -> Undispatched:
        return await self._read(ops_sql.undispatched)

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        through_partial_indexes = self.engine.counts_through_partial_indexes
        return await self._read(lambda conn: ops_sql.queue_depths(conn, through_partial_indexes))

    async def window_counts(self, since: float) -> dict[str, dict[str, dict[str, int]]]:
        return await self._read(lambda conn: ops_sql.window_counts(conn, since))

    async def timeline(self, since: float, bucket_seconds: float, buckets: int) -> dict[str, list[int]]:
        to_bucket = self.engine.bucket
        return await self._read(lambda conn: ops_sql.timeline(conn, to_bucket, since, bucket_seconds, buckets))

    async def event_story(self, event_id: str) -> EventStory | None:
        return await self._read(lambda conn: ops_sql.event_story(conn, event_id))

    async def attempt_outcomes(self, since: float) -> dict[str, tuple[int, int]]:
        return await self._read(lambda conn: ops_sql.attempt_outcomes(conn, since))

    async def inbound_counts(self, start: float, end: float) -> dict[str, int]:
        return await self._read(lambda conn: ops_sql.inbound_counts(conn, start, end))

    async def dead_letters_since(self, since: float) -> dict[str, int]:
        return await self._read(lambda conn: ops_sql.dead_letters_since(conn, since))

    async def alert_states(self) -> dict[str, tuple[bool, float, str]]:
        return await self._read(ops_state_sql.alert_states)

    async def set_alert(self, key: str, active: bool, now: float, detail: str) -> None:
        await self._write(lambda conn: ops_state_sql.set_alert(conn, key, active, now, detail))

    async def create_ops_session(self, id_hash: str, csrf: str, now: float, expires_at: float) -> None:
        await self._write(lambda conn: ops_state_sql.create_ops_session(conn, id_hash, csrf, now, expires_at))

    async def ops_session(self, id_hash: str, now: float) -> str | None:
        return await self._read(lambda conn: ops_state_sql.ops_session(conn, id_hash, now))

    async def delete_ops_session(self, id_hash: str) -> None:
        await self._write(lambda conn: ops_state_sql.delete_ops_session(conn, id_hash))

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
            stored, columns = user_state_sql.load(conn, keys, self.engine.for_update)
            decision = decider.tick(stored, now)
            dispatch_sql.apply_decision(conn, decision, now, columns)
            return len(keys), len(decision.deliveries), keys[-1] if len(keys) == limit else None

        return await self._write(write)

    async def render_pending(self, deliveries: list[Delivery], renderer: PendingRenderer) -> list[Any]:
        """Render claimed coalesced identifies from their users' states, in one transaction with
        the states they change (`flows/aggregations/pending.py`)."""

        def write(conn: Connection) -> list[Any]:
            key_of = {d.id: renderer.user_key(d) for d in deliveries}
            states, _ = user_state_sql.load(conn, sorted(set(key_of.values())), self.engine.for_update)
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
            deliveries_sql.insert_deliveries(conn, [("", now, d) for d in deliveries], now)
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

    async def stage_members(self, run: str, audience_key: str, user_ids: list[str]) -> None:
        if user_ids:
            await self._write(lambda conn: fullstory_jobs_sql.stage(conn, run, audience_key, user_ids))

    async def staged_count(self, run: str, audience_key: str) -> int:
        return await self._read(lambda conn: fullstory_jobs_sql.staged_count(conn, run, audience_key))

    async def member_count(self, audience_key: str) -> int:
        return await self._read(lambda conn: fullstory_jobs_sql.member_count(conn, audience_key))

    async def exit_count(self, run: str, audience_key: str) -> int:
        return await self._read(lambda conn: fullstory_jobs_sql.exit_count(conn, run, audience_key))

    async def apply_entered(self, run: str, audience: Audience, after: str, now: float) -> tuple[int, str | None]:
        return await self._write(
            lambda conn: fullstory_jobs_sql.apply_changes(
                conn, intake_sql.insert_api_events, run, audience, after, now, member=True
            )
        )

    async def apply_exited(self, run: str, audience: Audience, after: str, now: float) -> tuple[int, str | None]:
        return await self._write(
            lambda conn: fullstory_jobs_sql.apply_changes(
                conn, intake_sql.insert_api_events, run, audience, after, now, member=False
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
                conn, intake_sql.insert_api_events, user_id, newest_at, sessions, now
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
            return identity_sql.claim_all(conn, claims, now)

        return await self._write(write)

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
        totals: dict[str, int] = dict.fromkeys(jobs_sql.PRUNERS, 0)
        done: frozenset[str] = frozenset()
        while len(done) < len(jobs_sql.PRUNERS):  # bounded chunks, each its own write, so intake never waits long
            counts = await self._write(functools.partial(jobs_sql.prune_chunk, now=now, periods=periods, done=done))
            for key, value in counts.items():
                totals[key] += value
            done |= {key for key, value in counts.items() if value < jobs_sql.PRUNE_CHUNK}
        return totals
