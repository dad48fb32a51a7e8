"""Retention as a job: prunes finished work older than `retention:` allows (Part 2), so the store's
size stays flat under a steady load. Pending, parked and dry-run work is never pruned, nor are
identity links, quarantined events or alert states."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsbridge.engine.scheduler import JobContext, ScheduledJob
from fsbridge.store.jobs import RetentionPeriods

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime

NAME = "retention"
DEFAULT_EVERY = 3600.0


class RetentionJob:
    name = NAME

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        r = runtime.config.retention
        self.periods = RetentionPeriods(inbox=r.inbox, delivered=r.delivered, dead=r.dead, filtered=r.filtered)

    async def run(self, context: JobContext) -> dict[str, Any]:
        return await self.runtime.store.prune(self.runtime.clock.now(), self.periods)


def retention_job(runtime: Runtime) -> ScheduledJob:
    config = runtime.config.jobs.retention
    return ScheduledJob(RetentionJob(runtime), config.every or DEFAULT_EVERY, config.enabled)
