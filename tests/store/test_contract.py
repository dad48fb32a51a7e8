"""The store contract, run against both engines (SQLite, and a real PostgreSQL): idempotent intake,
group commit, leases that return crashed claims, durability, destinations, identity and job leases."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsbridge.config import FsbridgeConfig
from fsbridge.errors import StoreUnavailableError
from fsbridge.flows.aggregations import UserAggregations
from fsbridge.store import (
    AttemptRecord,
    DeliveryUpdate,
    DispatchFailure,
    DispatchResult,
    FlowSkip,
    ForgetUser,
    IdentityClaim,
    IdentityConflict,
    NewDelivery,
    NewInboxEvent,
    NewQuarantined,
    ProfileUpdate,
    Signal,
    Undispatched,
)
from fsbridge.store import jobs as jobs_sql
from fsbridge.store import ops_reads as ops_sql
from fsbridge.store import profiles as profiles_sql
from fsbridge.store import user_state as user_state_sql
from fsbridge.store.deliveries import ReplayFilter
from fsbridge.store.engine import Connection
from fsbridge.store.jobs import RetentionPeriods
from fsbridge.store.lookups import CachedAnswer, RenderedDelivery
from fsbridge.store.postgres import PostgresStore, postgres_schema
from fsbridge.store.schema import SCHEMA_VERSION, base_schema
from fsbridge.store.sql import SqlStore
from fsbridge.store.sqlite import SQLiteStore
from fsbridge.store.user_state import StateRow

NOW = 1_795_000_000.0


def event(n: int, source: str = "fullstory_stream") -> NewInboxEvent:
    return NewInboxEvent(source, "s", f"key-{n}", "rage_click", b'{"n":%d}' % n, NOW + n)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """The same store contract on each engine."""
    if request.param == "sqlite":
        s: SqlStore = SQLiteStore(str(tmp_path / "sub" / "fsbridge.db"))
    else:
        s = PostgresStore(request.getfixturevalue("postgres_url"))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "sub" / "fsbridge.db"))
    await s.open()
    yield s
    await s.close()


def wal_frames(shm: Path) -> int:
    """The WAL's length in frames: mxFrame in the wal-index header (read, without taking a lock)."""
    return int.from_bytes(shm.read_bytes()[16:20], sys.byteorder)


async def dispatched(store: SqlStore, n: int = 1) -> list[str]:
    ids = [(await store.accept(event(i))).id for i in range(n)]
    claimed = await store.claim_inbox(100, NOW, 60)
    await store.record_dispatch(
        [DispatchResult(e.id, [NewDelivery("flow", "segment", f"m-{e.id}", e.body)]) for e in claimed], NOW
    )
    return ids


class TestIntake:
    async def test_a_write_lock_held_elsewhere_is_waited_out(
        self, sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When another process holds the write lock, the writer retries until it is released."""
        refused = threading.Event()
        is_busy = sqlite_store.engine.is_busy

        def noticing(exc: BaseException) -> bool:
            busy = is_busy(exc)
            if busy:
                refused.set()
            return busy

        monkeypatch.setattr(sqlite_store.engine, "is_busy", noticing)
        await sqlite_store.accept(event(0))  # the writer's connection is open: now make it give up at once
        await sqlite_store._write(lambda conn: conn.execute("PRAGMA busy_timeout=0"))
        other = sqlite3.connect(sqlite_store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        accepting = asyncio.ensure_future(sqlite_store.accept(event(1)))
        assert await asyncio.to_thread(refused.wait, 10)
        other.execute("COMMIT")
        other.close()
        assert not (await accepting).duplicate
        assert 2 == (await sqlite_store.stats())["by_source"]["fullstory_stream"]["received"]

    async def test_wal_mode_and_full_sync(self, sqlite_store: SQLiteStore) -> None:
        """The SQLite file is in WAL mode, and the schema version is recorded."""
        conn = sqlite3.connect(sqlite_store.path)
        assert "wal" == conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert SCHEMA_VERSION == conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()

    async def test_the_wal_starts_over_under_writes_that_never_pause(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the writer never idle, the WAL is restarted once it holds RESTART_FRAMES, so it stays
        bounded (a passive checkpoint alone never finds it fully copied, and it grew without end)."""
        monkeypatch.setattr(SQLiteStore, "CHECKPOINT_SECONDS", 0.01)
        monkeypatch.setattr(SQLiteStore, "RESTART_FRAMES", 200)
        store = SQLiteStore(str(tmp_path / "fsbridge.db"))
        await store.open()
        shm = Path(store.path + "-shm")
        frames: list[int] = []

        async def writer(k: int) -> None:
            for n in range(150):
                await store.accept(event(k * 1000 + n))
                if n % 10 == 0:
                    frames.append(wal_frames(shm))

        try:
            await asyncio.gather(*(writer(k) for k in range(32)))
        finally:
            await store.close()
        assert 4800 == sum(1 for _ in sqlite3.connect(store.path).execute("SELECT id FROM inbox"))
        assert len(frames) > 400
        assert max(frames) < 2000, max(frames)  # with passive checkpoints alone: every frame written

    async def test_work_asked_of_the_writer_runs_once_between_transactions(self, sqlite_store: SQLiteStore) -> None:
        """Work an engine asks of the writer runs once, after the next commit, with no transaction open."""
        seen: list[bool] = []
        sqlite_store._writer.between_transactions(lambda conn: seen.append(conn.in_transaction))
        await sqlite_store.accept(event(1))
        await sqlite_store.accept(event(2))  # the writer ran the work before taking this write
        assert [False] == seen

    async def test_a_long_reader_does_not_stall_writes_behind_a_wal_restart(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A restart checkpoint blocks writers while it waits for readers: with a reader holding an
        old snapshot, each attempt gives up quickly, so no write waits long (it waited up to 1 s)."""
        monkeypatch.setattr(SQLiteStore, "CHECKPOINT_SECONDS", 0.05)
        monkeypatch.setattr(SQLiteStore, "RESTART_FRAMES", 50)
        store = SQLiteStore(str(tmp_path / "fsbridge.db"))
        await store.open()
        for n in range(200):  # enough frames that every checkpoint pass tries to restart the WAL
            await store.accept(event(n))
        reader = sqlite3.connect(store.path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM inbox").fetchone()  # holds its snapshot until COMMIT
        slowest = 0.0
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.5
            n = 1000
            while loop.time() < deadline:
                started = loop.time()
                await store.accept(event(n))
                slowest = max(slowest, loop.time() - started)
                n += 1
        finally:
            reader.execute("COMMIT")
            reader.close()
            await store.close()
        assert slowest < 0.5, slowest

    async def test_duplicate_returns_the_first_id_and_is_counted(self, store: SqlStore) -> None:
        """Accepting the same (source, dedup key) twice stores one row and counts one duplicate."""
        first = await store.accept(event(1))
        again = await store.accept(event(1))
        assert (first.id, False, True) == (again.id, first.duplicate, again.duplicate)
        assert {"received": 2, "duplicate": 1, "quarantined": 0} == (await store.stats())["by_source"][
            "fullstory_stream"
        ]

    async def test_releasing_a_quarantined_event_stores_it_once(self, store: SqlStore) -> None:
        """A released quarantined event enters the inbox; released again, it is the same row and
        counts no duplicate (an operator's second click is not a sender's redelivery)."""
        held = await store.quarantine(NewQuarantined("segment", "", "key-q", b"{}", "bad", NOW))
        fixed = NewInboxEvent("segment", "", "key-q", "track", b'{"type":"track"}', NOW)
        first = await store.release_quarantined(held.id, fixed)
        again = await store.release_quarantined(held.id, fixed)
        assert (first.id, False, True) == (again.id, first.duplicate, again.duplicate)
        released = await store.get_quarantined(held.id)
        assert released is not None
        assert "replayed" == released.status
        assert 0 == (await store.stats())["by_source"]["segment"]["duplicate"]
        assert [] == await store.list_quarantine(10)

    async def test_same_key_from_another_source_is_new(self, store: SqlStore) -> None:
        """Dedup keys are scoped by source."""
        a = await store.accept(event(1, "fullstory"))
        b = await store.accept(event(1, "segment"))
        assert a.id != b.id

    async def test_quarantine_dedups_too(self, store: SqlStore) -> None:
        """A quarantined event sent twice is kept once."""
        q = NewQuarantined("fullstory", "", "k", b"{}", "no eventName", NOW)
        assert (await store.quarantine(q)).id == (await store.quarantine(q)).id
        assert 1 == len(await store.list_quarantine(10))

    async def test_concurrent_writes_share_commits(self, store: SqlStore) -> None:
        """Hundreds of concurrent accepts all succeed in far fewer transactions (group commit)."""
        before = store.transactions
        results = await asyncio.gather(*(store.accept(event(n)) for n in range(500)))
        assert 500 == len({r.id for r in results})
        assert store.transactions - before < 250

    async def test_a_failing_write_does_not_undo_the_others(self, store: SqlStore) -> None:
        """One write that raises inside a group fails alone; the rest of the group commits."""

        def boom(conn: Connection) -> None:
            conn.execute("INSERT INTO counters (name, key, value) VALUES ('x', 'y', 1)")
            raise ValueError("bad write")

        results = await asyncio.gather(
            store.accept(event(1)), store._write(boom), store.accept(event(2)), return_exceptions=True
        )
        assert isinstance(results[1], ValueError)
        assert 2 == (await store.stats())["by_source"]["fullstory_stream"]["received"]
        assert [] == await store._read(lambda conn: conn.execute("SELECT * FROM counters WHERE name = 'x'").fetchall())

    async def test_acknowledged_writes_survive_reopening(self, tmp_path: Path) -> None:
        """What accept returned is on disk: a new store on the same file sees it."""
        path = str(tmp_path / "f.db")
        first = SQLiteStore(path)
        await first.open()
        accepted = await first.accept(event(7))
        await first.close()
        second = SQLiteStore(path)
        await second.open()
        stored = await second.get_inbox_event(accepted.id)
        await second.close()
        assert stored is not None
        assert b'{"n":7}' == stored.body


class TestClaims:
    async def test_inbox_claim_is_leased(self, store: SqlStore) -> None:
        """A claimed inbox event is not claimed again until its lease expires."""
        await store.accept(event(1))
        assert 1 == len(await store.claim_inbox(10, NOW, 30))
        assert [] == await store.claim_inbox(10, NOW + 29, 30)
        assert 1 == len(await store.claim_inbox(10, NOW + 31, 30))

    async def test_dispatch_is_idempotent_on_message_id(self, store: SqlStore) -> None:
        """Dispatching the same event twice (a crash between claim and commit) creates one delivery."""
        accepted = await store.accept(event(1))
        result = DispatchResult(accepted.id, [NewDelivery("flow", "segment", "m-1", b"{}")], [FlowSkip("f2", "why")])
        await store.record_dispatch([result], NOW)
        await store.record_dispatch([result], NOW)
        assert 1 == len(await store.list_deliveries(None, None, 10))
        assert [] == await store.claim_inbox(10, NOW + 999, 30)
        assert 1 == (await store.stats())["by_flow"]["f2"]["filtered"]

    async def test_a_message_id_is_queued_once_per_event_and_once_for_jobs(self, store: SqlStore) -> None:
        """A message id already queued for the same event, or by a job, is dropped; another event's is kept."""
        first, second = [(await store.accept(event(n))).id for n in (1, 2)]
        same = [NewDelivery("flow", "segment", "m-1", b"{}")]
        await store.record_dispatch([DispatchResult(first, same), DispatchResult(second, same)], NOW)
        await store.enqueue([NewDelivery("job", "slack", "m-job", b"{}")] * 2, NOW)
        await store.enqueue([NewDelivery("job", "slack", "m-job", b"{}")], NOW + 1)
        queued = await store.list_deliveries(None, None, 10)
        assert ["", first, second] == sorted(d.inbox_id for d in queued)

    async def test_a_crashed_workers_claim_comes_back(self, store: SqlStore) -> None:
        """A delivery claimed by a worker that never reports is claimable again after the lease."""
        await dispatched(store)
        [claimed] = await store.claim_deliveries("segment", 10, NOW, 30)
        assert [] == await store.claim_deliveries("segment", 10, NOW + 10, 30)
        [again] = await store.claim_deliveries("segment", 10, NOW + 31, 30)
        assert claimed.id == again.id

    async def test_only_due_deliveries_are_claimed(self, store: SqlStore) -> None:
        """A delivery scheduled for later is not claimed before its time, and next_due_at says when."""
        await dispatched(store)
        [d] = await store.claim_deliveries("segment", 10, NOW, 30)
        await store.record_updates([DeliveryUpdate(d.id, "pending", NOW + 100, None)])
        assert [] == await store.claim_deliveries("segment", 10, NOW + 99, 30)
        assert NOW + 100 == await store.next_due_at("segment", NOW + 99)
        assert 1 == len(await store.claim_deliveries("segment", 10, NOW + 100, 30))

    async def test_next_due_at_is_the_earliest_claimable_time(self, store: SqlStore) -> None:
        """next_due_at answers when a delivery can next be claimed: the earliest later one, or a lease's end."""
        await dispatched(store, 3)
        claimed = await store.claim_deliveries("segment", 10, NOW, 30)
        later = [DeliveryUpdate(d.id, "pending", NOW + 200 + n, None) for n, d in enumerate(claimed[1:])]
        await store.record_updates(later)
        assert NOW + 30 == await store.next_due_at("segment", NOW + 1)  # the first one's lease ends first
        await store.record_updates([DeliveryUpdate(claimed[0].id, "delivered", NOW, None)])
        assert NOW + 200 == await store.next_due_at("segment", NOW + 1)
        assert NOW + 200 == await store.next_due_at("segment", NOW + 200)
        await store.record_updates([DeliveryUpdate(d.id, "delivered", NOW, None) for d in claimed[1:]])
        assert None is await store.next_due_at("segment", NOW + 1)

    async def test_parked_destination_gets_new_deliveries_as_parked(self, store: SqlStore) -> None:
        """While a destination is parked, new deliveries for it are stored as parked; resume releases them."""
        await store.park_destination("segment", "401", NOW)
        await dispatched(store, 2)
        assert {"parked"} == {d.status for d in await store.list_deliveries(None, None, 10)}
        assert 2 == await store.resume_destination("segment", NOW + 5)
        assert 2 == len(await store.claim_deliveries("segment", 10, NOW + 5, 30))
        assert {} == await store.parked_destinations()


async def test_stats_have_every_count_with_zeros(store: SqlStore) -> None:
    """Stats list every count of the contract for sources, flows and destinations, zeros included."""
    await dispatched(store)
    stats = await store.stats()
    assert {"received", "duplicate", "quarantined", "filtered", "pending", "delivered", "dead", "parked"} <= set(
        stats["totals"]
    )
    assert {"received": 1, "duplicate": 0, "quarantined": 0} == stats["by_source"]["fullstory_stream"]
    assert {"filtered": 0, "pending": 1, "delivered": 0, "dead": 0, "parked": 0, "dry_run": 0} == stats["by_flow"][
        "flow"
    ]
    assert {"pending": 1, "delivered": 0, "dead": 0, "parked": 0, "dry_run": 0} == stats["by_destination"]["segment"]


async def test_restart_releases_claims_and_unparks(store: SqlStore) -> None:
    """After a restart on a store one process owns (SQLite), the previous run's claims are free at once;
    on a shared store (PostgreSQL) other replicas' claims stay until their lease expires."""
    await dispatched(store, 2)
    assert 2 == len(await store.claim_deliveries("segment", 10, NOW, 60))
    await store.accept(event(9))
    assert 1 == len(await store.claim_inbox(10, NOW, 60))
    released = await store.recover_after_restart(NOW + 1)
    later = NOW + 1 if store.engine.exclusive else NOW + 61
    assert (3 if store.engine.exclusive else 0) == released
    assert 1 == len(await store.claim_inbox(10, later, 60))
    assert 2 == len(await store.claim_deliveries("segment", 10, later, 60))

    await store.park_destination("segment", "401", NOW + 2)
    await store.recover_after_restart(NOW + 3)
    assert {} == await store.parked_destinations()
    assert {"pending"} == {d.status for d in await store.list_deliveries(None, None, 10)}


async def test_a_job_run_is_claimed_once_per_interval(store: SqlStore) -> None:
    """Of two replicas, one claims each due run; a live run blocks even a forced one; a run whose
    owner died is claimable again once due; the cursor and outcome survive for the next run."""
    assert (await store.claim_job_run("retention", "a", NOW, 3600, 600)) is not None
    assert await store.claim_job_run("retention", "b", NOW, 3600, 600) is None
    assert await store.claim_job_run("retention", "b", NOW + 1, 3600, 600, force=True) is None  # a runs it
    await store.save_job_cursor("retention", "a", "page-7")
    # a dies here; b may run once the interval has passed and a's claim has expired
    run = await store.claim_job_run("retention", "b", NOW + 3600, 3600, 600)
    assert run is not None
    assert "page-7" == run.cursor
    await store.finish_job_run("retention", "b", NOW + 3601, "ok", {"inbox": 3}, None)
    state = (await store.job_states())["retention"]
    assert ("ok", {"inbox": 3}, NOW + 7200) == (state.last_outcome, state.last_counts, state.next_run_at)
    assert await store.claim_job_run("retention", "a", NOW + 3700, 3600, 600) is None
    assert await store.claim_job_run("retention", "a", NOW + 3700, 3600, 600, force=True) is not None


async def test_timeline_buckets_and_window_counts(store: SqlStore) -> None:
    """Events fall into whole time buckets on either engine; window counts see only the window."""
    for n in range(3):
        await store.accept(NewInboxEvent("segment", "", f"t{n}", "track", b"{}", NOW + n * 950))
    series = await store.timeline(NOW, 900, 4)
    assert [1, 1, 1, 0] == series["received"]  # at 0 s, 950 s and 1,900 s: buckets 0, 1 and 2
    assert {"received": 2} == (await store.window_counts(NOW + 900))["by_source"]["segment"]


async def test_queue_depths_tell_retrying_from_pending(store: SqlStore) -> None:
    """A pending delivery that failed once counts as retrying."""
    await dispatched(store, 2)
    [first, _] = await store.claim_deliveries("segment", 10, NOW, 60)
    await store.record_updates(
        [DeliveryUpdate(first.id, "pending", NOW + 10, AttemptRecord(NOW, 1.0, 503, "down", None))]
    )
    assert {("segment", "pending"): 1, ("segment", "retrying"): 1} == await store.queue_depths()


async def test_queue_depths_count_dead_and_parked_and_read_only_index_entries(sqlite_store: SQLiteStore) -> None:
    """Dead and parked deliveries count per destination, and every count reads one of the partial indexes
    of its rows (what a /metrics scrape runs, so it reads no delivery however many wait)."""
    await dispatched(sqlite_store, 3)
    claimed = await sqlite_store.claim_deliveries("segment", 10, NOW, 60)
    await sqlite_store.record_updates([DeliveryUpdate(claimed[0].id, "dead", NOW, None)])
    await sqlite_store.park_destination("segment", "401", NOW)
    assert {("segment", "dead"): 1, ("segment", "parked"): 2} == await sqlite_store.queue_depths()
    statements: list[str] = []

    class Recording:
        def execute(self, sql: str, params: Any = ()) -> Any:
            statements.append(sql)
            return conn.execute(sql, params)

    conn = sqlite3.connect(sqlite_store.path)
    try:
        ops_sql.queue_depths(Recording(), through_partial_indexes=True)  # type: ignore[arg-type]
        plans = [" ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")) for sql in statements]
    finally:
        conn.close()
    assert 3 == len(plans)
    for plan, index in zip(plans, ("deliveries_due", "deliveries_retrying", "deliveries_stuck"), strict=True):
        assert f"INDEX {index}" in plan


async def test_identity_claims_keep_the_first_and_report_conflicts(store: SqlStore) -> None:
    """A second user claiming an identifier is a conflict; the first link stays."""
    one = await store.accept(event(1))
    two = await store.accept(event(2))
    conflicts = await store.record_dispatch(
        [
            DispatchResult(one.id, claims=[IdentityClaim("email", "a@b.co", "u1")]),
            DispatchResult(two.id, claims=[IdentityClaim("email", "a@b.co", "u2")]),
        ],
        NOW,
    )
    assert [IdentityConflict("email", "a@b.co", "u1", "u2")] == conflicts
    assert {("email", "a@b.co"): "u1"} == await store.resolve_identities([("email", "a@b.co")])


async def test_replay_of_dead_letters(store: SqlStore) -> None:
    """Dead deliveries are replayed in bulk, by flow, back to pending with a fresh retry window."""
    await dispatched(store, 2)
    for d in await store.claim_deliveries("segment", 10, NOW, 60):
        await store.record_updates([DeliveryUpdate(d.id, "dead", NOW, None, last_error="400")])
    assert 0 == await store.replay_deliveries("dead", "other-flow", NOW + 5)
    assert 2 == await store.replay_deliveries("dead", "flow", NOW + 5)
    assert {("segment", "pending"): 2} == await store.queue_depths()


async def test_a_bulk_replay_is_narrowed_by_every_filter(store: SqlStore) -> None:
    """Destination, creation time (both ends included) and the last status code each narrow a bulk replay."""
    ids = [(await store.accept(event(i))).id for i in range(3)]
    await store.claim_inbox(100, NOW, 60)
    for n, (event_id, destination) in enumerate(zip(ids, ("segment", "segment", "slack"), strict=True)):
        new = NewDelivery("flow", destination, f"m-{n}", b"{}")
        await store.record_dispatch([DispatchResult(event_id, [new])], NOW + n * 10)
    for destination in ("segment", "slack"):
        for n, d in enumerate(await store.claim_deliveries(destination, 10, NOW + 100, 60)):
            code = 400 if n == 0 else 422
            await store.record_updates(
                [DeliveryUpdate(d.id, "dead", NOW, None, last_status_code=code, last_error="no")]
            )
    assert 0 == await store.replay_deliveries("dead", None, NOW + 200, ReplayFilter(destination="fullstory"))
    assert 0 == await store.replay_deliveries("dead", None, NOW + 200, ReplayFilter(since=NOW + 21))
    assert 1 == await store.replay_deliveries("dead", None, NOW + 200, ReplayFilter("segment", NOW + 5, NOW + 10))
    assert 1 == await store.replay_deliveries("dead", None, NOW + 200, ReplayFilter(status_code=400, until=NOW))
    assert 1 == await store.replay_deliveries("dead", "flow", NOW + 200, ReplayFilter(destination="slack"))
    assert {("segment", "pending"): 2, ("slack", "pending"): 1} == await store.queue_depths()


async def test_retention_counts_from_when_a_delivery_finished(store: SqlStore) -> None:
    """A delivery created before the cutoff but delivered or dead after it is kept; one that finished before goes."""
    await dispatched(store, 4)
    early, late, dead_early, dead_late = await store.claim_deliveries("segment", 10, NOW, 60)
    ok = AttemptRecord(NOW, 1.0, 200, None, None)
    await store.record_updates(
        [
            DeliveryUpdate(early.id, "delivered", NOW + 10, replace(ok, attempted_at=NOW + 10)),
            DeliveryUpdate(late.id, "delivered", NOW + 500, replace(ok, attempted_at=NOW + 500)),
            DeliveryUpdate(dead_early.id, "dead", NOW + 10, None),
            DeliveryUpdate(dead_late.id, "dead", NOW + 500, None),
        ]
    )
    periods = RetentionPeriods(inbox=1e9, delivered=100, dead=100, filtered=100)
    counts = await store.prune(NOW + 200, periods)
    assert (1, 1) == (counts["delivered"], counts["dead"])
    assert {late.id, dead_late.id} == {d.id for d in await store.list_deliveries(None, None, 10)}


async def test_retention_repeats_only_the_kinds_with_more_to_prune(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kind of row with less than a chunk left is not read again in the run: five delivered rows in chunks of
    two take three passes of the deliveries, and one of each table read whole to find nothing expired."""
    await dispatched(store, 5)
    claimed = await store.claim_deliveries("segment", 10, NOW, 30)
    ok = AttemptRecord(NOW + 10, 1.0, 200, None, None)
    await store.record_updates([DeliveryUpdate(d.id, "delivered", NOW + 10, ok) for d in claimed])
    calls: dict[str, int] = {}

    def counted(label: str, prune: Any) -> Any:
        def run(conn: Connection, now: float, periods: RetentionPeriods) -> int:
            calls[label] = calls.get(label, 0) + 1
            return int(prune(conn, now, periods))

        return run

    monkeypatch.setattr(jobs_sql, "PRUNE_CHUNK", 2)
    monkeypatch.setattr(jobs_sql, "PRUNERS", {k: counted(k, v) for k, v in jobs_sql.PRUNERS.items()})
    counts = await store.prune(NOW + 200, RetentionPeriods(inbox=1e9, delivered=100, dead=100, filtered=100))
    assert 5 == counts["delivered"]
    assert {"delivered": 3, "dead": 1, "filtered": 1, "inbox": 1, "aggregate_state": 1, "lookup_cache": 1,
            "user_state": 1, "tombstones": 1} == calls  # fmt: skip
    assert [] == await store.list_deliveries(None, None, 10)


async def test_enrichment_and_user_reads(store: SqlStore) -> None:
    """Cached answers expire; a rendered plan replaces the body; a user's events are found by the id in their body."""
    await store.cache_answers([CachedAnswer("k1", "s", '{"value": 1}', NOW + 10)])
    assert {"k1": '{"value": 1}'} == await store.cached_answers(["k1", "k2"], NOW)
    assert {} == await store.cached_answers(["k1"], NOW + 11)
    accepted = await store.accept(NewInboxEvent("segment", "", "m-1", "track", b'{"userId":"u_7","n":1}', NOW))
    await store.accept(NewInboxEvent("segment", "", "m-2", "track", b'{"userId":"u_77","n":2}', NOW + 1))
    plan = NewDelivery("flow", "segment", "msg-1", b'{"enrich":{}}', awaiting="enrich")
    await store.record_dispatch([DispatchResult(accepted.id, deliveries=[plan])], NOW)
    [claimed] = await store.claim_deliveries("segment", 10, NOW, 60)
    assert "enrich" == claimed.awaiting
    claim = IdentityClaim("email", "a@b.co", "u_7")
    assert [] == await store.record_rendered([RenderedDelivery(claimed.id, b'{"type":"track"}')], [claim], NOW)
    stored = await store.get_delivery(claimed.id)
    assert stored is not None
    assert (b'{"type":"track"}', None) == (bytes(stored.body), stored.awaiting)
    assert {("email", "a@b.co"): "u_7"} == await store.resolve_identities([("email", "a@b.co")])
    events, deliveries = await store.user_activity(["u_7"])
    assert [accepted.id] == [e[0] for e in events]
    assert [claimed.id] == [d[0] for d in deliveries]


def test_postgres_schema_is_derived_from_the_sqlite_one() -> None:
    """One schema is maintained; PostgreSQL's types are derived from it, nothing SQLite-only remains."""
    derived = postgres_schema(resources.files("fsbridge.store").joinpath("sqlite_schema.sql").read_text())
    assert "BYTEA" in derived
    assert "DOUBLE PRECISION" in derived
    assert " REAL" not in derived
    assert "BLOB" not in derived
    assert "INTEGER PRIMARY KEY" not in derived.replace("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "")


async def test_a_new_users_state_is_inserted_never_overwritten(store: SqlStore) -> None:
    """A state decided for a user not stored before is inserted: if another transaction stored one
    meanwhile, the write fails instead of overwriting it; a stored user's state is updated, at-risk columns too."""
    row = StateRow("u:ada", '{"score": 90}', False, None, 90, "good", NOW + 10)
    await store._write(lambda conn: user_state_sql.save(conn, [row], {}))
    with pytest.raises(StoreUnavailableError):
        await store._write(lambda conn: user_state_sql.save(conn, [replace(row, state='{"score": 10}')], {}))
    assert '{"score": 90}' == await store.user_state("u:ada")
    stored = await store._write(lambda conn: user_state_sql.load(conn, ["u:ada", "u:bob"], "")[1])
    assert {"u:ada": (0, None)} == stored
    at_risk = replace(row, state='{"score": 60}', at_risk=True, last_at_risk_at=NOW, score=60, band="fair")
    await store._write(lambda conn: user_state_sql.save(conn, [at_risk], stored))
    assert '{"score": 60}' == await store.user_state("u:ada")
    users, bands = await store.user_state_overview()
    assert (["u:ada"], {"fair": 1}) == ([u[0] for u in users], bands)
    await store._write(lambda conn: user_state_sql.save(conn, [replace(at_risk, score=55)], {"u:ada": (1, NOW)}))
    assert [("u:ada", NOW, 55)] == [tuple(u) for u in (await store.user_state_overview())[0]]


@pytest.fixture
async def two_workers(postgres_url: str) -> AsyncIterator[list[SqlStore]]:
    """Two stores on one PostgreSQL database, as two worker processes have."""
    stores: list[SqlStore] = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    for s in stores:
        await s.open()
    yield stores
    for s in stores:
        await s.close()


def read_together(read: Callable[..., Any], calls: list[int]) -> Callable[..., Any]:
    """`read`, made to wait after each of its first two calls until both have read: the two workers
    both find nothing before either writes. `calls` counts the reads."""
    both_read = threading.Barrier(2, timeout=10)

    def wrapped(*args: Any) -> Any:
        found = read(*args)
        calls[0] += 1
        if calls[0] <= 2:
            both_read.wait()
        return found

    return wrapped


async def test_two_workers_finding_no_state_for_a_new_user_lose_no_signal(
    two_workers: list[SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, two workers that both read no state for a new user, then decide: the second one's insert
    fails, and it decides again on the state the first wrote, so both signals count."""
    for s in two_workers:
        s.user_states = UserAggregations(FsbridgeConfig().flows, segment_dry_run=True)
    loads = [0]
    monkeypatch.setattr(user_state_sql, "load", read_together(user_state_sql.load, loads))
    results = []
    for n, s in enumerate(two_workers):
        accepted = await s.accept(event(n))
        signal = Signal("u:new", "rage_click", NOW + n, "1:s", None, accepted.id)
        results.append(DispatchResult(accepted.id, signals=[signal]))
    await asyncio.gather(*(s.record_dispatch([r], NOW + 5) for s, r in zip(two_workers, results, strict=True)))
    state = await two_workers[0].user_state("u:new")
    assert state is not None
    assert {"rage_click": 2} == orjson.loads(state)["counts"]
    assert 3 == loads[0]  # the second worker read again, and found the first one's state


async def test_two_workers_finding_no_profile_for_a_user_lose_no_trait(
    two_workers: list[SqlStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, two workers that both read no profile for a user, then merge an identify's traits: the
    second one's insert fails, and it merges again into the profile the first wrote, so both traits stay."""
    reads = [0]
    monkeypatch.setattr(profiles_sql, "stored_traits", read_together(profiles_sql.stored_traits, reads))
    results = []
    for n, (s, trait) in enumerate(zip(two_workers, ("plan", "email"), strict=True)):
        accepted = await s.accept(event(n, "segment"))
        results.append(DispatchResult(accepted.id, profiles=[ProfileUpdate("u_7", {trait: f"value {n}"}, None)]))
    await asyncio.gather(*(s.record_dispatch([r], NOW) for s, r in zip(two_workers, results, strict=True)))
    user = await two_workers[0].user_record("u_7")
    assert user is not None
    assert {"plan": "value 0", "email": "value 1"} == user.traits
    assert 3 == reads[0]


def v1_delivery(body: str) -> str:
    """A delivery as schema version 1 stored it, to be kept by the migrations that rebuild its table
    (`body`: the engine's literal for the bytes of `{"v":1}`)."""
    return (
        "INSERT INTO deliveries (id, inbox_id, flow, destination, message_id, body, status, attempts, created_at,"  # noqa: S608
        " received_at, retry_started_at, next_attempt_at, action) VALUES ('dlv_v1', 'evt_v1', 'flow', 'segment',"
        f" 'm-v1', {body}, 'pending', 2, {NOW}, {NOW}, {NOW}, {NOW}, 'track');"
    )


class TestMigrations:
    async def test_a_version_1_sqlite_file_is_migrated_with_its_data(self, tmp_path: Path) -> None:
        """A file written by schema version 1 gets the later migrations on open, and keeps its events."""
        path = tmp_path / "v1.db"
        conn = sqlite3.connect(path, isolation_level=None)
        delivery = v1_delivery("X'7b2276223a317d'")
        conn.executescript(f"BEGIN; {base_schema()} {delivery} PRAGMA user_version = 1; COMMIT;")
        conn.close()
        store = SQLiteStore(str(path))
        await store.open()
        try:
            kept = await store.get_delivery("dlv_v1")
            assert kept is not None
            assert ("evt_v1", "m-v1", b'{"v":1}', 2) == (kept.inbox_id, kept.message_id, kept.body, kept.attempts)
            ids = await dispatched(store, 3)
            story = await store.event_story(ids[0])
            assert story is not None
            assert [ids[0]] == [d.inbox_id for d in story.deliveries]
        finally:
            await store.close()
        conn = sqlite3.connect(path)
        assert SCHEMA_VERSION == conn.execute("PRAGMA user_version").fetchone()[0]
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE inbox_id = 'x'").fetchall()
        conn.close()
        assert "deliveries_by_event" in str(plan)

    async def test_a_version_1_postgres_database_is_migrated(self, postgres_url: str) -> None:
        """A PostgreSQL database at schema version 1 gets the later migrations, once, under the lock."""
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(postgres_schema(base_schema() + v1_delivery("'\\x7b2276223a317d'::bytea")).encode())
            conn.execute("CREATE TABLE fsbridge_schema (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO fsbridge_schema (version) VALUES (1)")
        for _ in range(2):  # a second start finds nothing left to do
            store = PostgresStore(postgres_url)
            await store.open()
            await store.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            versions = [row[0] for row in conn.execute("SELECT version FROM fsbridge_schema ORDER BY version")]
            indexes = [
                row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries'")
            ]
        assert [1, SCHEMA_VERSION] == versions
        assert {"deliveries_by_event", "deliveries_due", "deliveries_stuck"} <= set(indexes)
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            kept = await store.get_delivery("dlv_v1")
            assert kept is not None
            assert ("evt_v1", b'{"v":1}') == (kept.inbox_id, kept.body)
        finally:
            await store.close()

    async def test_two_processes_preparing_one_new_file_together_both_succeed(self, tmp_path: Path) -> None:
        """Two preparers that both read a new SQLite file's version before either commits both succeed."""
        path = str(tmp_path / "new.db")
        engines = [SQLiteStore(path).engine, SQLiteStore(path).engine]
        seen = threading.Barrier(2)
        waited = threading.local()
        original = sqlite3.Connection.execute

        def execute(conn: sqlite3.Connection, sql: str, *args: Any) -> Any:
            cursor = original(conn, sql, *args)
            if sql == "PRAGMA user_version" and not getattr(waited, "done", False):
                waited.done = True
                seen.wait(5)  # both have read version 0 before either writes
            return cursor

        failures: list[BaseException] = []

        def prepare(engine: Any) -> None:
            try:
                engine.prepare()
            except BaseException as exc:
                failures.append(exc)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("fsbridge.store.sqlite.sqlite3.connect", _connect_with(execute))
            threads = [threading.Thread(target=prepare, args=(engine,)) for engine in engines]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        assert [] == failures
        conn = sqlite3.connect(path)
        assert SCHEMA_VERSION == conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()


def _connect_with(execute: Any) -> Any:
    """sqlite3.connect, whose connections run `execute` for their execute calls."""

    real_connect = sqlite3.connect

    class Watched(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> Any:
            return execute(self, sql, *args)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return real_connect(*args, factory=Watched, **kwargs)

    return connect


class TestHardening:
    async def test_a_batch_is_stored_in_one_write_with_duplicates_and_quarantine(self, store: SqlStore) -> None:
        """accept_all stores inbox events and quarantined ones in one write, de-duplicating within it."""
        writes = store.writes
        answers = await store.accept_all(
            [
                event(1),
                event(1),
                NewQuarantined("segment", "", "q-1", b"{}", "no type", NOW),
                event(2),
            ]
        )
        assert 1 == store.writes - writes
        assert [False, True, False, False] == [a.duplicate for a in answers]
        assert answers[0].id == answers[1].id
        assert 2 == (await store.undispatched()).events

    async def test_failed_routing_is_retried_then_quarantined_under_the_same_id(self, store: SqlStore) -> None:
        """A failure holds the event back `retry_in`; the third moves it to quarantine with the reason."""
        [kept] = [(await store.accept(event(1))).id]
        for attempt in range(1, 4):
            [claimed] = await store.claim_inbox(10, NOW + attempt * 10, 60)
            moved = await store.record_dispatch_failures(
                [DispatchFailure(kept, "routing raised ValueError: odd")], NOW + attempt * 10, 3, 5
            )
            assert claimed.id == kept
            assert ([kept] if attempt == 3 else []) == moved
            if attempt < 3:
                assert [] == await store.claim_inbox(10, NOW + attempt * 10 + 4, 60)  # waits retry_in
        [item] = await store.list_quarantine(10)
        assert (kept, "routing failed 3 times: routing raised ValueError: odd") == (item.id, item.error)
        assert Undispatched(0, None) == await store.undispatched()
        stats = await store.stats()
        assert (1, 1) == (stats["by_source"]["fullstory_stream"]["received"], stats["totals"]["quarantined"])

    async def test_ops_sessions_expire_and_end(self, store: SqlStore) -> None:
        """A session answers its CSRF token until it expires or is deleted."""
        await store.create_ops_session("h1", "csrf-1", NOW, NOW + 60)
        assert "csrf-1" == await store.ops_session("h1", NOW + 59)
        assert await store.ops_session("h1", NOW + 61) is None
        await store.delete_ops_session("h1")
        assert await store.ops_session("h1", NOW) is None

    async def test_profiles_merge_and_a_deletion_forgets(self, store: SqlStore) -> None:
        """Profile traits merge and keep the groupId; forgetting removes the user's rows on either engine."""
        [e1, e2] = [(await store.accept(event(i, source="segment"))).id for i in (1, 2)]
        await store.claim_inbox(10, NOW, 60)
        await store.record_dispatch(
            [
                DispatchResult(e1, claims=[IdentityClaim("email", "a@b.c", "u1")],
                               profiles=[ProfileUpdate("u1", {"plan": "pro"}, None), ProfileUpdate("u1", {}, "acme")]),
                DispatchResult(e2, profiles=[ProfileUpdate("u1", {"seats": 3}, None)]),
            ],
            NOW,
        )  # fmt: skip
        record = await store.user_record("u1")
        assert record is not None
        assert ({"plan": "pro", "seats": 3}, "acme") == (record.traits, record.group_id)
        [e3] = [(await store.accept(event(3, source="segment"))).id]
        await store.claim_inbox(10, NOW, 60)
        await store.record_dispatch(
            [DispatchResult(e3, forget=[ForgetUser("u1", ("fullstory.users.create:u1",))])], NOW
        )
        assert await store.user_record("u1") is None
