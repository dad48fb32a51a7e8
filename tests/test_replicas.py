"""Several replicas over one PostgreSQL: two api and two worker processes, a few thousand events,
one worker killed with SIGKILL mid-way. Every accepted event is delivered; duplicates are counted.
127.0.0.1 only; bounded in count and time."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from pathlib import Path

import httpx
import pytest

from fsbridge.testing import free_port
from tests.conftest import RAGE_CLICK
from tests.faults.test_faults import Row, append_to_report
from tests.postgres_server import PostgresServer
from tests.servers import ROOT, FakeSegment, Server, base_env

TOKEN = "replica-test-stream-token"
EVENTS = 3000
KILL_AFTER_DELIVERED = 600

pytestmark = pytest.mark.slow

# Short timeouts, so a killed worker's leases (timeout + 5 s at least) come back within the test.
CONFIG = """\
worker: {poll_interval_seconds: 0.2, lease_seconds: 8}
destinations:
  segment: {timeout_seconds: 2, max_batch_messages: 50, concurrency: 2}
  fullstory: {timeout_seconds: 2}
  slack: {timeout_seconds: 2}
  jira: {timeout_seconds: 2}
"""


async def _send_all(api_urls: list[str]) -> set[str]:
    acked: set[str] = set()
    numbers = iter(range(EVENTS))
    targets = itertools.cycle(api_urls)

    async def sender(client: httpx.AsyncClient) -> None:
        for n in numbers:
            mark = f"event-{n}"
            payload = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": mark}}
            response = await client.post(
                f"{next(targets)}/webhooks/fullstory/streams/replicas",
                json=payload,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            if response.status_code == 202:
                acked.add(mark)

    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=32)) as client:
        await asyncio.gather(*(sender(client) for _ in range(32)))
    return acked


def test_two_api_two_workers_one_killed(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """Every event a replica accepted reaches Segment although a worker dies mid-way; duplicates counted."""
    url = postgres_server.create_database()
    shutil.copytree(ROOT / "config", tmp_path / "config")
    (tmp_path / "config" / "fsbridge.yaml").write_text(CONFIG)
    with FakeSegment(delay=0.02) as segment:
        env = base_env(
            tmp_path,
            FSBRIDGE_DATABASE_URL=url,
            FSBRIDGE_FULLSTORY_STREAM_TOKENS=TOKEN,
            FSBRIDGE_SEGMENT_WRITE_KEY="wk",
            FSBRIDGE_SEGMENT_API_URL=segment.url,
            FSBRIDGE_RETRY_BASE_SECONDS="0",
        )
        apis = [Server(tmp_path, env, free_port(), role="api") for _ in range(2)]
        workers = [Server(tmp_path, env, free_port(), role="worker") for _ in range(2)]
        processes = [*apis, *workers]
        try:
            for process in processes:
                process.start()
            started = time.monotonic()
            acked_future = asyncio.run(_start_and_kill(apis, workers[0], segment))
            segment.wait_until(lambda s: acked_future <= set(s.marks()), timeout=90)
            elapsed = time.monotonic() - started
        finally:
            for process in processes:
                process.stop()
        marks, ids = segment.marks(), segment.message_ids()
        row = Row.of(
            "2 api + 2 workers on PostgreSQL, one worker SIGKILLed", acked_future, marks,
            f"{EVENTS} events in {elapsed:.1f} s",
        )  # fmt: skip
        report = (
            f"acked={row.acked} delivered_unique={len(marks)} duplicates={row.duplicates} "
            f"lost={row.lost} seconds={elapsed:.1f}"
        )
        print(f"\nreplicas: {report}")
        append_to_report(row)
        (tmp_path / "replicas-report.txt").write_text(report)
        assert 0 == row.lost, report
        assert workers[0].process is not None
        assert -9 == workers[0].process.returncode, "the worker was killed with SIGKILL mid-way"
        assert EVENTS == len(acked_future), report
        assert len(marks) == len(ids), report  # one stable messageId per event, however often it was sent
    postgres_server.drop_database(url)


async def _start_and_kill(apis: list[Server], victim: Server, segment: FakeSegment) -> set[str]:
    """Send every event through both api replicas while killing one worker once deliveries are flowing."""

    async def kill_when_busy() -> None:
        busy = await asyncio.to_thread(segment.wait_until, lambda s: len(s.messages) >= KILL_AFTER_DELIVERED, 60)
        assert busy, "deliveries never reached the kill point"
        await asyncio.to_thread(victim.kill)

    killer = asyncio.create_task(kill_when_busy())
    acked = await _send_all([api.url for api in apis])
    await asyncio.wait_for(killer, timeout=60)
    return acked
