"""The health monitor as a job: one check of every condition per interval, once per cluster; the
alerts it queues are delivered to Slack like any delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsbridge.engine.scheduler import JobContext, ScheduledJob

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime

NAME = "health_monitor"


class HealthMonitorJob:
    name = NAME

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def run(self, context: JobContext) -> dict[str, Any]:
        sent = await self.runtime.monitor.check_once()
        if sent:
            self.runtime.worker.notify_due("slack")
        return {"alerts": len(sent)}


def health_monitor_job(runtime: Runtime) -> ScheduledJob:
    config = runtime.config
    every = config.jobs.health_monitor.every or config.health.interval_seconds
    enabled = config.health.enabled and config.jobs.health_monitor.enabled
    return ScheduledJob(HealthMonitorJob(runtime), every, enabled)
