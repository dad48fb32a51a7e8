"""The time-driven transitions of the per-user aggregations (Part 2), as two jobs over the store's
user states, a chunk of users per transaction: `experience_recovery` (users at risk for
`recover_after` without another at-risk session recover: `Experience Recovered`), and
`health_score_recompute` (scores recover as signals age: a changed band or a move of `min_change`
is sent, and NPS follow-up releases users whose score is back). Each chunk is decided and written
in one transaction, so a transition is sent once across replicas and restarts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsbridge.engine.scheduler import JobContext, ScheduledJob

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime


class UserStateTick:
    def __init__(self, runtime: Runtime, name: str, *, recovery: bool) -> None:
        self.runtime = runtime
        self.name = name
        self.recovery = recovery

    async def run(self, context: JobContext) -> dict[str, Any]:
        runtime = self.runtime
        if not runtime.aggregations.enabled:
            return {"users": 0, "messages": 0}
        now = runtime.clock.now()
        recover_before = now - runtime.config.flows.experience_at_risk.recover_after if self.recovery else None
        users = messages = 0
        after: str | None = context.cursor or ""
        while after is not None:
            seen, queued, after = await runtime.store.tick_user_states(runtime.aggregations, now, recover_before, after)
            users, messages = users + seen, messages + queued
            await context.checkpoint(after)
        if messages:
            runtime.worker.notify_due("segment")
        return {"users": users, "messages": messages}


def experience_recovery_job(runtime: Runtime) -> ScheduledJob:
    config = runtime.config.jobs.experience_recovery
    enabled = config.enabled and runtime.config.flows.experience_at_risk.enabled
    return ScheduledJob(UserStateTick(runtime, "experience_recovery", recovery=True), config.every or 3600.0, enabled)


def health_score_recompute_job(runtime: Runtime) -> ScheduledJob:
    config = runtime.config.jobs.health_score_recompute
    flows = runtime.config.flows
    every = config.every or flows.health_score.recompute_every
    job = UserStateTick(runtime, "health_score_recompute", recovery=False)
    return ScheduledJob(job, every, config.enabled and flows.health_score.enabled)
