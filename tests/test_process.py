"""The real server process: a new user's first run, and crash safety under SIGKILL.

Everything talks to 127.0.0.1 only; loops are bounded in count and time."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fsbridge.testing import free_port
from tests.conftest import RAGE_CLICK
from tests.faults.test_faults import Row, append_to_report
from tests.servers import FSBRIDGE, ROOT, FakeSegment, Server, base_env

TOKEN = "crash-test-stream-token"
OPS = "crash-test-ops-token"

pytestmark = pytest.mark.slow


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_new_user_first_run(workdir: Path) -> None:
    """init-env, serve, send-sample rage_click: a dry_run delivery appears, as the README walks through."""
    env = base_env(workdir)
    subprocess.run([*FSBRIDGE, "init-env"], cwd=workdir, env=env, check=True, capture_output=True)
    server = Server(workdir, env, free_port())
    with running(server):
        sent = subprocess.run(
            [*FSBRIDGE, "send-sample", "rage_click", "--url", server.url],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert 0 == sent.returncode, sent.stderr
        assert "-> 202" in sent.stdout
        ops_token = next(
            line.split("=", 1)[1]
            for line in (workdir / ".env").read_text().splitlines()
            if line.startswith("FSBRIDGE_OPS_TOKEN=")
        )
        deadline = time.monotonic() + 20
        items: list[dict[str, Any]] = []
        # The rage click's track, and the identifies of the per-user traits and health score it changed.
        expected = ["frustration_to_segment_track", "frustration_traits", "health_score"]
        while time.monotonic() < deadline and len(items) < len(expected):
            items = httpx.get(
                f"{server.url}/ops/api/deliveries?status=dry_run",
                headers={"Authorization": f"Bearer {ops_token}"},
                timeout=5,
            ).json()["items"]
            time.sleep(0.1)
        assert expected == sorted(item["flow"] for item in items)
    log = (workdir / "server.log").read_text()
    assert "DRY RUN for segment" in log
    assert ops_token not in log


async def _send_until_killed(
    server: Server, total: int, kill_after: int, concurrency: int = 32
) -> tuple[set[str], int]:
    """Post `total` distinct rage clicks; SIGKILL the server once `kill_after` were acknowledged."""
    acked: set[str] = set()
    refused = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(n)
    killed = asyncio.Event()

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal refused
        while not queue.empty():
            n = queue.get_nowait()
            mark = f"event-{n}"
            payload = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": mark}}
            try:
                response = await client.post(
                    f"{server.url}/webhooks/fullstory/streams/crash",
                    json=payload,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            except httpx.HTTPError:
                refused += 1
                continue
            if response.status_code == 202:
                acked.add(mark)
                if len(acked) >= kill_after and not killed.is_set():
                    killed.set()
                    await asyncio.to_thread(server.kill)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
    return acked, refused


def test_every_acknowledged_event_is_delivered_after_sigkill(workdir: Path) -> None:
    """SIGKILL during concurrent intake and slow delivery, then restart: every event that got 202 arrives."""
    with FakeSegment(delay=0.15) as segment:
        env = base_env(
            workdir,
            FSBRIDGE_FULLSTORY_STREAM_TOKENS=TOKEN,
            FSBRIDGE_OPS_TOKEN=OPS,
            FSBRIDGE_SEGMENT_WRITE_KEY="wk",
            FSBRIDGE_SEGMENT_API_URL=segment.url,
            FSBRIDGE_RETRY_BASE_SECONDS="0",
        )
        (workdir / "config" / "fsbridge.yaml").write_text(
            "destinations:\n  segment:\n    max_batch_messages: 20\n    concurrency: 2\n"
        )
        server = Server(workdir, env, free_port())
        server.start()
        try:
            acked, refused = asyncio.run(_send_until_killed(server, total=400, kill_after=250))
            delivered_before_restart = sum(segment.marks().values())
            server.start()
            segment.wait_until(lambda s: acked <= set(s.marks()), timeout=60)
        finally:
            server.stop()
        marks, ids = segment.marks(), segment.message_ids()
        row = Row.of(
            "fsbridge SIGKILLed during intake and delivery, restarted", acked, marks,
            f"32 concurrent senders, slow Segment; {refused} refused while down",
        )  # fmt: skip
        report = (
            f"acked={row.acked} refused_after_kill={refused} delivered_before_restart={delivered_before_restart} "
            f"delivered_unique={len(marks)} duplicates={row.duplicates} lost={row.lost}"
        )
        print(f"\ncrash-safety: {report}")
        append_to_report(row)
        (workdir / "crash-report.txt").write_text(report)
        assert 0 == row.lost, report
        assert len(acked) >= 250
        # A redelivery after the crash reuses the event's messageId, so Segment drops it as a duplicate.
        assert len(marks) == len(ids), report


def test_a_segment_export_killed_while_applying_resumes_after_restart(workdir: Path) -> None:
    """jobs.fullstory_segment_audiences SIGKILLed while it applies a 100,000-member diff, then restarted:
    the job resumes from its stored cursor and every member gets its trait once (one messageId each),
    none missed."""
    import gzip
    import json
    import sqlite3

    members = 100_000
    export = gzip.compress(b"".join(b'{"Uid":"user-%d"}\n' % n for n in range(members)), compresslevel=1)
    (workdir / "config" / "fsbridge.yaml").write_text(
        "jobs:\n  fullstory_segment_audiences:\n    enabled: true\n    poll_every: 0.05s\n    send_tracks: false\n"
        "    segments: [{id: everyone, key: members}]\n"
    )
    database = workdir / "var" / "fsbridge.db"
    with FakeSegment(export=export) as fake:
        env = base_env(
            workdir,
            FSBRIDGE_OPS_TOKEN=OPS,
            FSBRIDGE_SEGMENT_WRITE_KEY="wk",
            FSBRIDGE_SEGMENT_API_URL=fake.url,
            FSBRIDGE_FULLSTORY_API_KEY="fs-key",
            FSBRIDGE_FULLSTORY_API_URL=fake.url,
            FSBRIDGE_RETRY_BASE_SECONDS="0",
        )
        server = Server(workdir, env, free_port())
        server.start()
        killed_at = None
        try:
            deadline = time.monotonic() + 60
            while killed_at is None and time.monotonic() < deadline:
                with contextlib.suppress(sqlite3.Error), sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                    cursor = (db.execute("SELECT cursor FROM jobs WHERE name = 'fullstory_segment_audiences'")
                              .fetchone() or [None])[0]  # fmt: skip
                    applied = db.execute("SELECT COUNT(*) FROM inbox WHERE source = 'fullstory_api'").fetchone()[0]
                    if cursor and '"apply"' in cursor and 0 < applied < members:
                        server.kill()
                        killed_at = applied
                time.sleep(0.01)
            assert killed_at is not None, "the job was not caught while applying"
            server.start()

            def every_member(f: FakeSegment) -> bool:
                return len({m["userId"] for m in f.messages if m["type"] == "identify"}) >= members

            assert fake.wait_until(every_member, timeout=180), "not every member's trait arrived"
        finally:
            server.stop()
        identifies = [m for m in fake.messages if m["type"] == "identify"]
        ids_per_user: dict[str, set[str]] = {}
        for message in identifies:
            ids_per_user.setdefault(message["userId"], set()).add(message["messageId"])
        with sqlite3.connect(database) as db:
            outcome = db.execute("SELECT last_outcome, cursor FROM jobs WHERE name = 'fullstory_segment_audiences'")
            last_outcome, cursor = outcome.fetchone()
        report = (
            f"killed after {killed_at:,} of {members:,} changes were applied; members={len(ids_per_user):,} "
            f"identifies_received={len(identifies):,} (redelivered after the kill: {len(identifies) - members:,})"
        )
        print(f"\nsegment-export crash: {report}")
        (workdir / "export-crash-report.txt").write_text(json.dumps({"report": report}))
        assert {f"user-{n}" for n in range(members)} == set(ids_per_user), report
        assert all(len(ids) == 1 for ids in ids_per_user.values()), "a change was sent twice under two messageIds"
        assert ("ok", None) == (last_outcome, cursor)
