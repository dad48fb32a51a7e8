"""The `feature_adoption` job (Part 2): decides every closed window of feature adoption, and queues
the drop alerts and recovery messages, in one transaction (`flows/feature_adoption.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsbridge.engine.scheduler import JobContext, ScheduledJob

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime


class FeatureAdoptionJob:
    name = "feature_adoption"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def run(self, context: JobContext) -> dict[str, Any]:
        adoption = self.runtime.adoption
        if adoption is None:
            return {"alerts": 0}
        now = self.runtime.clock.now()
        alerts = await self.runtime.store.evaluate_adoption(adoption, now, adoption.since(now))
        if alerts:
            self.runtime.worker.notify_due()
        return {"alerts": alerts}


def feature_adoption_job(runtime: Runtime) -> ScheduledJob:
    config, flow = runtime.config.jobs.feature_adoption, runtime.config.flows.feature_adoption
    every = config.every or min(flow.window / 24, 3600.0)
    return ScheduledJob(FeatureAdoptionJob(runtime), every, config.enabled and flow.enabled)
