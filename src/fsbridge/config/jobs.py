"""The `jobs:` section: the scheduled jobs, each run once per cluster, and their own knobs."""

from __future__ import annotations

from pydantic import (
    ByteSize,
    Field,
    model_validator,
)

from fsbridge.config.fields import Duration, TraitValues, _Strict


class JobConfig(_Strict):
    enabled: bool = True
    every: Duration | None = None  # None: the job's own default


class FullstorySegment(_Strict):
    """A Fullstory segment exported as an audience: its id in Fullstory, and the key of the trait
    (`fs_<key>`) and of the audience it becomes."""

    id: str = Field(min_length=1)
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")  # snake_case, as every trait fsbridge sends
    name: str | None = None  # shown as audience_name (default: the key)


class SegmentAudiencesJobConfig(JobConfig):
    """Fullstory segments become Segment audiences: boolean traits `fs_<key>` and, with
    `send_tracks`, Audience Entered / Exited tracks (Part 2)."""

    enabled: bool = False
    segments: list[FullstorySegment] = Field(default_factory=list)
    send_tracks: bool = True  # also send Audience Entered / Audience Exited tracks
    poll_every: Duration = 5.0  # between polls of the export's operation
    max_wait: Duration = 1800.0  # an export not done (or a file not downloaded) by then fails the run
    # A run in which more than this share of a segment's members would leave at once changes nothing
    # and fails (a broken or empty file would otherwise remove everyone); --allow-mass-exit applies one.
    max_exit_fraction: float = Field(default=0.5, ge=0, le=1)
    max_export_bytes: ByteSize = Field(default=ByteSize(2 * 1024**3), gt=0)  # "2GiB": an export inflating past it fails

    @model_validator(mode="after")
    def _keys_are_unique(self) -> SegmentAudiencesJobConfig:
        keys = [s.key for s in self.segments]
        if len(keys) != len(set(keys)):
            msg = "each segment needs its own key"
            raise ValueError(msg)
        if self.enabled and not self.segments:
            msg = "enabled, but no segments are listed"
            raise ValueError(msg)
        return self


class HighValueSessionsJobConfig(JobConfig):
    """New sessions of users in these audiences (or with these profile traits) reach Slack (Part 2)."""

    enabled: bool = False
    audiences: list[str] = Field(default_factory=list)
    traits: TraitValues = Field(default_factory=dict)  # trait: accepted values
    max_users_per_run: int = Field(
        default=200, ge=1, le=100_000
    )  # users checked a run, the least recently checked first


class JobsConfig(_Strict):
    """Scheduled jobs, each run once per cluster; `every` overrides a job's interval."""

    health_monitor: JobConfig = Field(default_factory=JobConfig)
    retention: JobConfig = Field(default_factory=JobConfig)
    fullstory_segment_audiences: SegmentAudiencesJobConfig = Field(default_factory=SegmentAudiencesJobConfig)
    high_value_sessions: HighValueSessionsJobConfig = Field(default_factory=HighValueSessionsJobConfig)
    experience_recovery: JobConfig = Field(default_factory=JobConfig)  # every: 1h
    health_score_recompute: JobConfig = Field(default_factory=JobConfig)  # every: flows.health_score.recompute_every
    feature_adoption: JobConfig = Field(default_factory=JobConfig)  # every: the window / 24, at most 1h
