"""The scheduler: a job runs once per interval across replicas, resumes from its cursor after its
runner dies, records its outcome, and is listed by the ops API and the CLI."""

from __future__ import annotations

import asyncio
from typing import Any

from fsbridge.clock import FrozenClock
from fsbridge.engine.scheduler import JobContext, ScheduledJob, Scheduler
from tests.conftest import OPS_TOKEN, Bridge


class Counting:
    """Processes items 0..9 in order, checkpointing after each; can hang after item `hang_after`."""

    name = "counting"

    def __init__(self, hang_after: int | None = None) -> None:
        self.processed: list[int] = []
        self.hang_after = hang_after
        self.hanging = asyncio.Event()

    async def run(self, context: JobContext) -> dict[str, Any]:
        start = int(context.cursor or 0)
        for item in range(start, 10):
            self.processed.append(item)
            await context.checkpoint(str(item + 1))
            if item == self.hang_after:
                self.hanging.set()
                await asyncio.Event().wait()  # killed here
        await context.checkpoint(None)
        return {"items": 10 - start}


class Failing:
    name = "failing"

    async def run(self, context: JobContext) -> dict[str, Any]:
        raise RuntimeError("export not ready")


async def test_two_replicas_run_a_job_once_per_interval(bridge: Bridge) -> None:
    """Two schedulers on one store: each interval, exactly one of them runs the job."""
    clock = FrozenClock()
    job = Counting()
    a = Scheduler(bridge.runtime.store, clock, [ScheduledJob(job, 60)], "replica-a")
    b = Scheduler(bridge.runtime.store, clock, [ScheduledJob(job, 60)], "replica-b")
    ran = [len(await a.run_due()) + len(await b.run_due()) for _ in range(3)]
    clock.advance(60)
    ran += [len(await b.run_due()) + len(await a.run_due())]
    assert [1, 0, 0, 1] == ran
    assert list(range(10)) * 2 == job.processed


async def test_a_job_resumes_from_its_cursor_after_its_runner_dies(bridge: Bridge) -> None:
    """A runner killed mid-run leaves its cursor; the next run (another replica) continues from it."""
    clock = FrozenClock()
    hanging = Counting(hang_after=4)
    a = Scheduler(bridge.runtime.store, clock, [ScheduledJob(hanging, 60)], "replica-a", run_for=120)
    task = asyncio.create_task(a.run_due())
    await hanging.hanging.wait()
    task.cancel()  # the process dies: no outcome is recorded
    resumed = Counting()
    b = Scheduler(bridge.runtime.store, clock, [ScheduledJob(resumed, 60)], "replica-b", run_for=120)
    clock.advance(60)
    assert [] == await b.run_due()  # a's claim still holds the job
    clock.advance(61)
    [result] = await b.run_due()
    assert ("ok", {"items": 5}) == (result.outcome, result.counts)
    assert [0, 1, 2, 3, 4] == hanging.processed
    assert [5, 6, 7, 8, 9] == resumed.processed


async def test_a_failed_run_is_recorded_and_listed(bridge: Bridge) -> None:
    """A job that raises records `failed: <reason>`; GET /ops/api/jobs lists every job's state."""
    scheduler = bridge.runtime.scheduler
    scheduler.jobs["failing"] = ScheduledJob(Failing(), 300)
    [result] = [r for r in await scheduler.run_due() if r.name == "failing"]
    assert "failed: RuntimeError: export not ready" == result.outcome
    items = (await bridge.client.get("/ops/api/jobs", headers=bridge.ops_headers())).json()["items"]
    by_name = {item["name"]: item for item in items}
    expected = {"health_monitor", "retention", "fullstory_segment_audiences", "high_value_sessions", "failing",
                "experience_recovery", "health_score_recompute", "feature_adoption"}  # fmt: skip
    assert expected == set(by_name)
    failing = by_name["failing"]
    assert failing["last_outcome"].startswith("failed: RuntimeError")
    assert failing["next_run_at"] == bridge.clock.now() + 300
    assert {"name", "enabled", "every", "last_started_at", "last_finished_at", "last_outcome", "last_counts",
            "next_run_at"} <= set(failing)  # fmt: skip
    assert {"alerts": 0} == by_name["health_monitor"]["last_counts"]
    await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
    page = (await bridge.client.get("/ops")).text
    assert "failed: RuntimeError: export not ready" in page
    assert '<tr class="job">' in page


async def test_a_run_that_died_is_resumed_when_its_claim_expires_not_an_interval_later(bridge: Bridge) -> None:
    """Hourly job, 2-minute claim: a runner that died mid-run is resumed by the next tick after the
    claim expires, from its cursor, instead of waiting for the next hourly run."""
    clock = FrozenClock()
    hanging = Counting(hang_after=2)
    a = Scheduler(bridge.runtime.store, clock, [ScheduledJob(hanging, 3600)], "replica-a", run_for=120)
    task = asyncio.create_task(a.run_due())
    await hanging.hanging.wait()
    task.cancel()
    resumed = Counting()
    b = Scheduler(bridge.runtime.store, clock, [ScheduledJob(resumed, 3600)], "replica-b", run_for=120)
    clock.advance(121)
    [result] = await b.run_due()
    assert ("ok", [3, 4, 5, 6, 7, 8, 9]) == (result.outcome, resumed.processed)
    clock.advance(60)
    assert [] == await b.run_due()  # finished: the next run is an interval after the claim
