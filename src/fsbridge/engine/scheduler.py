"""Scheduler: runs named jobs on an interval, once per cluster.

A run is claimed in the store with one conditional update (due, and no live run holds it), so of
several replicas exactly one runs each interval; the claim holds the job for `run_for` seconds, so
a replica that dies mid-run frees it. A job reads the cursor the last run left and may checkpoint
a new one as it goes, so a run after a crash resumes where the last one stopped. Each run's outcome
(`ok` or `failed: <reason>`) and counts are stored for `GET /ops/api/jobs` and `fsbridge jobs list`.

The store already coordinates every other piece of work between replicas, on SQLite and on
PostgreSQL alike; APScheduler's job stores and procrastinate (PostgreSQL only) would each add a
second coordination mechanism that covers only one of the two engines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fsbridge.clock import Clock
from fsbridge.log import get_logger
from fsbridge.store.jobs import JobStore

log = get_logger(__name__)
RUN_FOR_SECONDS = 600.0


class JobContext:
    """What a running job gets: the cursor the last run left, a way to save a new one, and the
    options an operator gave a run started by hand (`fsbridge jobs run NAME --allow-mass-exit`)."""

    def __init__(
        self, store: JobStore, name: str, owner: str, cursor: str | None, options: frozenset[str] = frozenset()
    ) -> None:
        self._store, self._name, self._owner = store, name, owner
        self.cursor = cursor
        self.options = options

    async def checkpoint(self, cursor: str | None) -> None:
        await self._store.save_job_cursor(self._name, self._owner, cursor)
        self.cursor = cursor


class Job(Protocol):
    name: str

    async def run(self, context: JobContext) -> dict[str, Any]:
        """Do one run; return what it counted (shown as `last_counts`)."""
        ...


@dataclass(frozen=True)
class ScheduledJob:
    job: Job
    every: float
    enabled: bool = True


@dataclass(frozen=True)
class RunResult:
    name: str
    ran: bool
    outcome: str = ""
    counts: dict[str, Any] | None = None


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        clock: Clock,
        jobs: Sequence[ScheduledJob],
        owner: str,
        *,
        poll_interval: float = 1.0,
        run_for: float = RUN_FOR_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.jobs = {scheduled.job.name: scheduled for scheduled in jobs}
        self.owner = owner
        self.poll_interval = poll_interval
        self.run_for = run_for
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[RunResult]] = {}

    async def due(self) -> list[ScheduledJob]:
        """The enabled jobs that are due now."""
        # A read, so a tick with nothing due takes no write from intake's writer.
        states, now = await self.store.job_states(), self.clock.now()
        found = []
        for scheduled in self.jobs.values():
            state = states.get(scheduled.job.name)
            # Due, or a run that never finished (its runner died) whose claim has expired: it resumes now.
            unfinished = state is not None and state.running_until is not None and state.running_until < now
            if scheduled.enabled and (state is None or state.next_run_at <= now or unfinished):
                found.append(scheduled)
        return found

    async def run_due(self) -> list[RunResult]:
        """Run every enabled job that is due and that this process claims, side by side."""
        results = await asyncio.gather(*(self._run(scheduled, force=False) for scheduled in await self.due()))
        return [result for result in results if result.ran]

    async def run_now(self, name: str, options: frozenset[str] = frozenset()) -> RunResult:
        """Run one job now, unless a run of it is in progress somewhere (`fsbridge jobs run`)."""
        return await self._run(self.jobs[name], force=True, options=options)

    async def _run(self, scheduled: ScheduledJob, *, force: bool, options: frozenset[str] = frozenset()) -> RunResult:
        name = scheduled.job.name
        now = self.clock.now()
        claimed = await self.store.claim_job_run(name, self.owner, now, scheduled.every, self.run_for, force=force)
        if claimed is None:
            return RunResult(name, ran=False)
        context = JobContext(self.store, name, self.owner, claimed.cursor, options)
        try:
            counts = await scheduled.job.run(context)
        except Exception as exc:  # a job's failure is its outcome; the scheduler goes on
            outcome, counts = f"failed: {type(exc).__name__}: {exc}"[:500], {}
            log.error("job.failed", job=name, error=str(exc))
        else:
            outcome = "ok"
            log.info("job.finished", job=name, **{k: v for k, v in counts.items() if isinstance(v, int)})
        await self.store.finish_job_run(name, self.owner, self.clock.now(), outcome, counts, context.cursor)
        return RunResult(name, ran=True, outcome=outcome, counts=counts)

    async def states(self) -> list[dict[str, Any]]:
        """Every job with its interval, last run and next run, as the ops API and the CLI show them."""
        stored = await self.store.job_states()
        items = []
        for name, scheduled in sorted(self.jobs.items()):
            state = stored.get(name)
            items.append(
                {
                    "name": name,
                    "enabled": scheduled.enabled,
                    "every": scheduled.every,
                    "last_started_at": state.last_started_at if state else None,
                    "last_finished_at": state.last_finished_at if state else None,
                    "last_outcome": state.last_outcome if state else None,
                    "last_counts": state.last_counts if state else {},
                    "next_run_at": (state.next_run_at if state else self.clock.now()) if scheduled.enabled else None,
                    "running": bool(state and state.running_until and state.running_until > self.clock.now()),
                }
            )
        return items

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fsbridge-scheduler")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._running.clear()

    async def _loop(self) -> None:
        """Each due job runs in its own task, so a slow one (a long download) delays no other; a job
        still running here is not started again."""
        while True:
            try:
                for scheduled in await self.due():
                    name = scheduled.job.name
                    if name not in self._running:
                        task = asyncio.create_task(self._run(scheduled, force=False), name=f"fsbridge-job-{name}")
                        self._running[name] = task
                        task.add_done_callback(lambda _, name=name: self._running.pop(name, None))  # type: ignore[misc]
            except Exception as exc:  # the store is unreachable: try again next tick
                log.error("scheduler.failed", error=str(exc))
            await asyncio.sleep(self.poll_interval)
