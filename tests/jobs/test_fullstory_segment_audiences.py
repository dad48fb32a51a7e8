"""jobs.fullstory_segment_audiences: a Fullstory segment's export becomes `fs_<key>` traits and
Audience Entered / Exited tracks, diffed against the last successful run; a failed or cut export
changes nothing; a run killed while applying is finished by the next, with no change sent twice."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fsbridge.config import FsbridgeConfig
from fsbridge.engine.scheduler import RUN_FOR_SECONDS, Scheduler
from fsbridge.jobs.fullstory_segment_audiences import ALLOW_MASS_EXIT
from fsbridge.store import fullstory_jobs
from tests.conftest import Bridge, start_bridge
from tests.fake_fullstory import FILES_HOST, FakeFullstory

JOB = "fullstory_segment_audiences"


def config(**job: Any) -> FsbridgeConfig:
    options = {"enabled": True, "poll_every": 0.001, "segments": [{"id": "seg_power", "key": "power_users",
               "name": "Power users"}]} | job  # fmt: skip
    return FsbridgeConfig.model_validate({"identity": {"fullstory_uid_prefix": "app-"}, "jobs": {JOB: options}})


def rows(*uids: str, emails: tuple[str, ...] = (), nobody: int = 0) -> list[dict[str, Any]]:
    found = [{"IndvId": n, "Uid": f"app-{uid}", "Email": f"{uid}@x.io"} for n, uid in enumerate(uids)]
    found += [{"IndvId": 100 + n, "Email": email} for n, email in enumerate(emails)]
    return found + [{"IndvId": 200 + n, "DisplayName": "anonymous"} for n in range(nobody)]


def traits(b: Bridge) -> list[tuple[str, Any]]:
    return [(m["userId"], m["traits"]["fs_power_users"]) for m in b.upstream.messages() if m["type"] == "identify"]


def tracks(b: Bridge) -> list[tuple[str, str]]:
    return [(m["event"], m["userId"]) for m in b.upstream.messages() if m["type"] == "track"]


async def run(b: Bridge) -> tuple[str, dict[str, Any]]:
    result = await b.runtime.scheduler.run_now(JOB)
    await b.drain()
    return result.outcome, result.counts or {}


@pytest.fixture
async def fullstory() -> FakeFullstory:
    return FakeFullstory()


@pytest.fixture
async def bridge(tmp_path: Path, fullstory: FakeFullstory) -> AsyncIterator[Bridge]:
    b = await start_bridge(tmp_path, fullstory, config=config())
    yield b
    await b.client.aclose()
    await b.runtime.stop()


async def test_the_first_run_sends_every_member_as_entered(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """Members by uid (prefix removed) and by email through the identity links; rows naming nobody are counted."""
    await bridge.post_segment({"type": "identify", "userId": "u_mail", "messageId": "i-1",
                               "traits": {"email": "Known@Example.com"}})  # fmt: skip
    await bridge.drain()
    fullstory.exports["seg_power"] = rows("u_1", "u_2", emails=("known@example.com", "stranger@x.io"), nobody=1)
    outcome, counts = await run(bridge)
    assert "ok" == outcome
    assert {"rows": 5, "members": 3, "entered": 3, "exited": 0, "unmatched": 2} == counts
    assert [("u_1", True), ("u_2", True), ("u_mail", True)] == sorted(traits(bridge))
    assert sorted(("Audience Entered", u) for u in ("u_1", "u_2", "u_mail")) == sorted(tracks(bridge))
    [track] = [m for m in bridge.upstream.messages() if m.get("userId") == "u_1" and m["type"] == "track"]
    assert {"audience_key": "fs_power_users", "audience_name": "Power users", "source": "fullstory"} == track[
        "properties"
    ]
    assert [{"segmentId": "seg_power", "type": "TYPE_INDIVIDUAL", "format": "FORMAT_NDJSON", "timeRange": {}}] == (
        fullstory.started
    )
    [download] = [r for r in fullstory.requests if r.url.host == FILES_HOST]
    assert "authorization" not in download.headers  # a pre-signed URL: the key does not travel there
    api_calls = [r for r in fullstory.requests if r.url.host != FILES_HOST and "/v1/" in r.url.path]
    assert all(r.headers["Authorization"].startswith("Basic ") for r in api_calls)


async def test_a_member_leaving_and_an_unchanged_export(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """The next run sends only the change (false and Audience Exited); an unchanged export sends nothing."""
    fullstory.exports["seg_power"] = rows("u_1", "u_2")
    await run(bridge)
    fullstory.exports["seg_power"] = rows("u_2", "u_3")
    outcome, counts = await run(bridge)
    assert ("ok", 1, 1, 2) == (outcome, counts["entered"], counts["exited"], counts["members"])
    assert [("u_1", True), ("u_2", True), ("u_3", True), ("u_1", False)] == traits(bridge)
    assert ("Audience Exited", "u_1") == tracks(bridge)[-1]
    sent = len(bridge.upstream.messages())
    outcome, counts = await run(bridge)
    assert ("ok", 0, 0) == (outcome, counts["entered"], counts["exited"])
    assert sent == len(bridge.upstream.messages())


@pytest.mark.parametrize("failure", ["failed_operation", "cut_file"])
async def test_a_failed_export_changes_nothing(bridge: Bridge, fullstory: FakeFullstory, failure: str) -> None:
    """A FAILED operation or a file cut short fails the run; nothing is sent; the next run diffs against
    the last successful membership."""
    fullstory.exports["seg_power"] = rows("u_1", "u_3", "u_4")
    await run(bridge)
    fullstory.exports["seg_power"] = rows("u_2", "u_3", "u_4")
    if failure == "failed_operation":
        fullstory.operation_states = ["PENDING", "FAILED"]
    else:
        fullstory.cut_files = True
    sent = len(bridge.upstream.messages())
    outcome, _ = await run(bridge)
    assert outcome.startswith("failed: ExportFailedError")
    assert ("FAILED" in outcome) == (failure == "failed_operation")
    assert sent == len(bridge.upstream.messages())
    fullstory.cut_files = False
    outcome, counts = await run(bridge)
    assert ("ok", 1, 1) == (outcome, counts["entered"], counts["exited"])
    assert [("u_1", True), ("u_3", True), ("u_4", True), ("u_2", True), ("u_1", False)] == traits(bridge)


def gzipped(text: bytes) -> bytes:
    return gzip.compress(text)


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        (b"", "the export file is empty"),
        (b'{"Uid": "app-u_2"}\n', "the export file is not gzip"),
        (gzipped(b'{"Uid": "app-u_2"}\n')[:-8] + b"\0" * 8, "not valid gzip"),
        (gzipped(b'{"Uid": "app-u_2"}\n["not", "an object"]\n'), "line 2 of the export file is not a JSON object"),
        (gzipped(b'{"Uid": "' + b"x" * (1024 * 1024 + 1) + b'"}\n'), "line 1 of the export file is longer than 1 MiB"),
        (gzipped(b"\n" * (3 * 1024 * 1024)), "inflates past max_export_bytes (2,097,152 bytes)"),
    ],
    ids=["empty", "not gzip", "bad trailer", "not an object", "long line", "bomb"],
)
async def test_an_export_that_is_not_whole_gzip_ndjson_changes_nothing(
    tmp_path: Path, fullstory: FakeFullstory, file: bytes, reason: str
) -> None:
    """Empty, not gzip, a bad gzip trailer, a line that is no JSON object or is over 1 MiB, or a file that inflates
    past max_export_bytes: the run fails with the reason, and no member exits."""
    b = await start_bridge(tmp_path, fullstory, config=config(max_export_bytes="2MiB"))
    try:
        fullstory.exports["seg_power"] = rows("u_1", "u_2")
        assert "ok" == (await run(b))[0]
        fullstory.raw_files["seg_power"] = file
        sent = len(b.upstream.messages())
        outcome, _ = await run(b)
        assert outcome.startswith("failed: ExportFailedError"), outcome
        assert reason in outcome
        assert sent == len(b.upstream.messages())
        jobs = (await b.client.get("/ops/api/jobs", headers=b.ops_headers())).json()["items"]
        assert reason in next(j for j in jobs if j["name"] == JOB)["last_outcome"]
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_mass_exit_is_refused_unless_allowed(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """More than max_exit_fraction of the members leaving at once (an export of nobody) changes nothing; the
    CLI's --allow-mass-exit option applies that run."""
    fullstory.exports["seg_power"] = rows("u_1", "u_2", "u_3")
    await run(bridge)
    fullstory.exports["seg_power"] = rows(nobody=1)
    outcome, _ = await run(bridge)
    assert "3 of the 3 members of fs_power_users would leave at once" in outcome
    assert "--allow-mass-exit" in outcome
    assert [] == [t for t in traits(bridge) if t[1] is False]
    result = await bridge.runtime.scheduler.run_now(JOB, frozenset({ALLOW_MASS_EXIT}))
    await bridge.drain()
    assert ("ok", 3) == (result.outcome, (result.counts or {})["exited"])
    assert 3 == len([t for t in traits(bridge) if t[1] is False])


@pytest.mark.parametrize(
    ("location", "fetched"),
    [
        ("http://files.example.com/x.ndjson.gz", False),
        ("ftp://files.example.com/x.ndjson.gz", False),
        ("https://user:pw@files.example.com/x.ndjson.gz", False),
        ("http://127.0.0.1:9/x.ndjson.gz", True),
    ],
)
async def test_only_https_or_loopback_locations_are_fetched(
    bridge: Bridge, fullstory: FakeFullstory, location: str, fetched: bool
) -> None:
    """A results location that is not https (or http to loopback) is never fetched, and the run fails."""
    fullstory.location = location
    outcome, _ = await run(bridge)
    assert outcome.startswith("failed:")
    assert fetched == any(str(r.url) == location for r in fullstory.requests)
    if not fetched:
        assert "location" in outcome


async def test_a_stalled_download_fails_after_max_wait_and_delays_no_other_job(
    tmp_path: Path, fullstory: FakeFullstory
) -> None:
    """A download that stops arriving fails at max_wait; meanwhile the scheduler's other jobs run."""
    b = await start_bridge(tmp_path, fullstory, config=config(max_wait=0.5))
    try:
        fullstory.exports["seg_power"] = rows("u_1")
        fullstory.stall_files = True
        scheduler = b.runtime.scheduler
        export = asyncio.create_task(scheduler.run_now(JOB))
        while not any(r.url.host == FILES_HOST for r in fullstory.requests):  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0)
        other = await scheduler.run_now("retention")
        assert ("ok", False) == (other.outcome, export.done())
        result = await export
        assert "took longer than max_wait (0.5 s)" in result.outcome
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_run_killed_while_applying_is_finished_once(
    bridge: Bridge, fullstory: FakeFullstory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the first applied chunk (chunks of 2 here): the next run applies the rest of the same
    export, and every member gets exactly one trait and one track."""
    monkeypatch.setattr(fullstory_jobs, "CHUNK", 2)
    fullstory.exports["seg_power"] = rows(*(f"u_{n}" for n in range(7)))
    store = bridge.runtime.store
    applied = asyncio.Event()
    real_apply = store.apply_entered

    async def apply_then_die(*args: Any) -> tuple[int, str | None]:
        if applied.is_set():
            await asyncio.Event().wait()  # the process is killed here
        result = await real_apply(*args)
        applied.set()
        return result

    monkeypatch.setattr(store, "apply_entered", apply_then_die)
    scheduler = bridge.runtime.scheduler
    task = asyncio.create_task(scheduler.run_now(JOB))
    await applied.wait()
    await asyncio.sleep(0)
    task.cancel()
    monkeypatch.setattr(store, "apply_entered", real_apply)
    await bridge.drain()
    assert 2 == len(traits(bridge))  # the first chunk is committed and sent
    fresh = Scheduler(store, bridge.clock, list(scheduler.jobs.values()), "replica-b", run_for=60)
    bridge.clock.advance(RUN_FOR_SECONDS + 1)  # the dead run's claim expires
    result = await fresh.run_now(JOB)
    await bridge.drain()
    assert "ok" == result.outcome
    assert sorted(f"u_{n}" for n in range(7)) == sorted(u for u, _ in traits(bridge))
    assert 7 == len(tracks(bridge))
    assert [] == fullstory.started[1:]  # the resumed run applied the staged export; it exported nothing new


async def test_two_replicas_run_it_once_per_interval(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """Two schedulers sharing the store: one export per interval."""
    fullstory.exports["seg_power"] = rows("u_1")
    jobs = list(bridge.runtime.scheduler.jobs.values())
    a = Scheduler(bridge.runtime.store, bridge.clock, jobs, "replica-a")
    b = Scheduler(bridge.runtime.store, bridge.clock, jobs, "replica-b")
    ran = [r.name for r in await a.run_due() + await b.run_due() if r.name == JOB]
    assert [JOB] == ran
    assert 1 == len(fullstory.started)


async def test_without_tracks_and_after_a_deletion(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """send_tracks: false sends traits only; a Segment deletion forgets the user's segment membership."""
    b = await start_bridge(tmp_path, fullstory, config=config(send_tracks=False))
    try:
        fullstory.exports["seg_power"] = rows("u_1", "u_2")
        await run(b)
        assert ([], 2) == (tracks(b), len(traits(b)))
        await b.post_segment({"type": "delete", "userId": "u_1", "messageId": "del-1"})
        await b.drain()
        with sqlite3.connect(tmp_path / "fsbridge.db") as conn:
            assert [("u_2",)] == conn.execute("SELECT user_id FROM segment_members").fetchall()
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_it_is_listed_with_its_counts(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """GET /ops/api/jobs shows the job's last outcome and counts (members, entered, exited, unmatched)."""
    fullstory.exports["seg_power"] = rows("u_1", nobody=2)
    await run(bridge)
    items = (await bridge.client.get("/ops/api/jobs", headers=bridge.ops_headers())).json()["items"]
    [job] = [i for i in items if i["name"] == JOB]
    counts = job["last_counts"]
    assert ("ok", 1, 1, 0, 2) == (
        job["last_outcome"],
        *(counts[k] for k in ("members", "entered", "exited", "unmatched")),
    )
