"""Scheduled jobs, one module each, registered in `JOBS` by name: the health monitor (part 1's Slack
alerts), retention, Fullstory segments as Segment audiences, and new sessions of high-value users.
A job is added by writing its module and one line here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fsbridge.engine.scheduler import ScheduledJob
from fsbridge.jobs.feature_adoption import feature_adoption_job
from fsbridge.jobs.fullstory_segment_audiences import segment_audiences_job
from fsbridge.jobs.health_monitor import health_monitor_job
from fsbridge.jobs.high_value_sessions import high_value_sessions_job
from fsbridge.jobs.retention import retention_job
from fsbridge.jobs.user_state_ticks import experience_recovery_job, health_score_recompute_job

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime

JOBS: dict[str, Callable[[Runtime], ScheduledJob]] = {
    "health_monitor": health_monitor_job,
    "retention": retention_job,
    "fullstory_segment_audiences": segment_audiences_job,
    "high_value_sessions": high_value_sessions_job,
    "experience_recovery": experience_recovery_job,
    "health_score_recompute": health_score_recompute_job,
    "feature_adoption": feature_adoption_job,
}


def scheduled_jobs(runtime: Runtime) -> list[ScheduledJob]:
    return [build(runtime) for build in JOBS.values()]
