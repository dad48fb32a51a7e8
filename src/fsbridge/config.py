"""The flow configuration file (`config/fsbridge.yaml`): reviewable, non-secret knobs for the
worker, the destinations and each flow. It is validated at start-up; every problem is reported with
its YAML line and its path (`flows.frustration_to_segment_track.signals.0: ...`), and the server
refuses to start until the file is right."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fsbridge.errors import ConfigError

FRUSTRATION_SIGNALS = ("rage_click", "dead_click", "error_click")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """`30s`, `15m`, `2h`, `7d` or a number of seconds, as seconds; anything else is left for the
    model to refuse with its line."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNITS[match.group(2)]
    msg = f"{value!r} is not a duration: write 30s, 15m, 2h, 7d or a number of seconds"
    raise ValueError(msg)


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _values_as_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
    return value


# Profile traits and their accepted values: `{plan: [enterprise, business]}`; one value needs no list.
TraitValues = Annotated[dict[str, list[Any]], BeforeValidator(_values_as_lists)]


class WorkerConfig(_Strict):
    """How the worker claims and routes stored events."""

    poll_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    lease_seconds: float = Field(default=60.0, gt=0)
    dispatch_batch: int = Field(default=2000, ge=1, le=10_000)
    max_dispatch_attempts: int = Field(default=3, ge=1, le=100)  # then an event that cannot be routed is quarantined
    dispatch_retry_seconds: float = Field(default=5.0, ge=0)  # wait before routing a failed event again


class IntakeConfig(_Strict):
    """Bounds on what one authenticated request may carry."""

    segment_max_messages: int = Field(default=2500, ge=1, le=100_000)  # Segment sends at most 2,500 a batch


class ServerConfig(_Strict):
    """Limits on every connection, enforced before a request reaches authentication."""

    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)  # request line and headers
    max_headers: int = Field(default=100, ge=8, le=10_000)  # more answer 431
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)  # from a request's first byte to its last header
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)  # from the last header to the body's end
    idle_timeout_seconds: float = Field(default=5.0, gt=0, le=3600)  # a connection with no request in progress
    max_connections: int = Field(default=1000, ge=1, le=100_000)  # past it the longest-idle one is closed
    # One peer address's share: more are answered 503 (behind a proxy every client is the proxy).
    max_connections_per_client: int = Field(default=500, ge=1, le=100_000)


class BreakerConfig(_Strict):
    """Open when, over `window_seconds`, at least `min_requests` were made and `failure_ratio` failed."""

    window_seconds: float = Field(default=300.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    failure_ratio: float = Field(default=0.7, gt=0, le=1)
    open_seconds: float = Field(default=30.0, gt=0)


class _DestinationConfig(_Strict):
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    concurrency: int = Field(default=4, ge=1, le=64)
    rate_limit_per_second: float = Field(default=20.0, gt=0)  # requests; a 429 halves it for a while
    burst: int = Field(default=20, ge=1)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class SegmentDestinationConfig(_DestinationConfig):
    max_batch_messages: int = Field(default=2500, ge=1, le=2500)
    concurrency: int = Field(default=2, ge=1, le=64)
    rate_limit_per_second: float = Field(default=50.0, gt=0)
    burst: int = Field(default=50, ge=1)


class FullstoryDestinationConfig(_DestinationConfig):
    pass


class SlackDestinationConfig(_DestinationConfig):
    concurrency: int = Field(default=1, ge=1, le=64)
    rate_limit_per_second: float = Field(default=1.0, gt=0)  # Slack's incoming webhooks take about one a second
    burst: int = Field(default=3, ge=1)


class JiraDestinationConfig(_DestinationConfig):
    """Jira Cloud (Part 2): issues in `project_key`, of `issue_type`, labelled `fsbridge`."""

    project_key: str | None = Field(
        default=None, pattern=r"^[A-Z][A-Z0-9_]{1,9}$"
    )  # the Jira project issues are opened in (such as OPS); required for the jira destination
    issue_type: str = Field(default="Task", min_length=1)  # the type of the issues opened
    concurrency: int = Field(default=1, ge=1, le=8)
    rate_limit_per_second: float = Field(default=2.0, gt=0)
    burst: int = Field(default=5, ge=1)


class DestinationsConfig(_Strict):
    segment: SegmentDestinationConfig = Field(
        default_factory=SegmentDestinationConfig
    )  # Segment's Tracking API (batches to /v1/batch)
    fullstory: FullstoryDestinationConfig = Field(
        default_factory=FullstoryDestinationConfig
    )  # Fullstory's server API (user upserts and deletions, events, look-ups)
    slack: SlackDestinationConfig = Field(default_factory=SlackDestinationConfig)  # a Slack incoming webhook
    jira: JiraDestinationConfig = Field(default_factory=JiraDestinationConfig)


class HealthConfig(_Strict):
    """The health monitor: when to alert in Slack (once per condition, then once when it clears)."""

    enabled: bool = True
    interval_seconds: float = Field(default=60.0, gt=0)  # how often the conditions are checked
    success_window_minutes: float = Field(default=15.0, gt=0)  # the window the delivery success rate is measured over
    success_rate_below: float = Field(
        default=0.95, gt=0, le=1
    )  # alert when a destination's success rate falls below this
    success_min_attempts: int = Field(default=20, ge=1)  # and only after this many attempts in the window
    volume_window_minutes: float = Field(default=60.0, gt=0)  # the window inbound volume is counted over
    volume_compare_to: Literal["day", "week"] = "day"  # compared with the same window a day or a week before
    volume_change_percent: float = Field(default=50.0, gt=0)  # alert on a drop or a spike of at least this much
    volume_min_events: int = Field(default=50, ge=1)  # and only when either window has at least this many events
    dead_letter_window_minutes: float = Field(default=15.0, gt=0)  # the window new dead letters are counted over
    dead_letters_above: int = Field(default=0, ge=0)  # alert when more dead letters than this appear in it
    breaker_open_minutes: float = Field(default=5.0, ge=0)  # alert when a circuit breaker stays open this long
    undispatched_older_than_minutes: float = Field(default=10.0, gt=0)  # also a /readyz reason


class IdentityConfig(_Strict):
    """How ids line up between the two systems."""

    segment_user_id_path: str = "userId"
    fullstory_user_id_paths: list[str] = Field(default_factory=lambda: ["user.user_id", "user.uid"], min_length=1)
    fullstory_email_paths: list[str] = Field(
        default_factory=lambda: ["user.user_email", "user.email"]
    )  # where a Fullstory payload carries the user's email
    # Where a Fullstory payload carries an anonymous id Segment may know.
    fullstory_anonymous_id_paths: list[str] = Field(
        default_factory=lambda: ["user.segmentAnonymousId", "user.segment_anonymous_id"]
    )
    fullstory_uid_prefix: str = ""
    hash_emails: bool = False
    lookup_fullstory_users: bool = True  # ask Fullstory for the uid of an email no Segment call linked yet


class FrustrationFlowConfig(_Strict):
    enabled: bool = True
    signals: list[str] = Field(
        default_factory=lambda: list(FRUSTRATION_SIGNALS), min_length=1
    )  # which signals become tracks (rage_click, dead_click, error_click)
    # The Segment event name of each signal.
    event_names: dict[str, str] = Field(
        default_factory=lambda: {
            "rage_click": "Rage Click Detected",
            "dead_click": "Dead Click Detected",
            "error_click": "Error Click Detected",
        }
    )

    @model_validator(mode="after")
    def _every_signal_has_a_name(self) -> FrustrationFlowConfig:
        unnamed = [s for s in self.signals if s not in self.event_names]
        if unnamed:
            msg = f"event_names has no Segment event name for {', '.join(unnamed)}"
            raise ValueError(msg)
        return self


class IdentifyFlowConfig(_Strict):
    enabled: bool = True
    skip_unchanged: bool = True


class DeletionFlowConfig(_Strict):
    enabled: bool = True


SCORE_SIGNALS = (*FRUSTRATION_SIGNALS, "at_risk_session")


class ExperienceAtRiskConfig(_Strict):
    """`threshold` counted signals in one session mark the user Experience At Risk; `recover_after`
    without another at-risk session clears it (Part 2)."""

    enabled: bool = True
    signals: list[str] = Field(default_factory=lambda: ["rage_click"], min_length=1)  # the signals counted per session
    threshold: int = Field(default=3, ge=1, le=1000)  # signals in one session that put the user at risk
    recover_after: Duration = 7 * 86400.0

    @field_validator("signals")
    @classmethod
    def _known_signals(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in FRUSTRATION_SIGNALS]
        if unknown:
            msg = f"unknown signal {unknown[0]!r} (signals: {', '.join(FRUSTRATION_SIGNALS)})"
            raise ValueError(msg)
        return value


class FrustrationTraitsConfig(_Strict):
    """Per-user counts of each frustration signal in the current `window`, as identify traits sent
    when they change, at most once per `min_interval` (Part 2)."""

    enabled: bool = True
    window: Duration = 7 * 86400.0  # the counting window; it names the traits (fullstory_rage_clicks_7d)
    min_interval: Duration = 900.0


class ScoreBands(_Strict):
    good: float = Field(default=70, ge=0, le=100)  # a score at or above: good
    fair: float = Field(default=40, ge=0, le=100)  # at or above: fair; below: poor

    @model_validator(mode="after")
    def _ordered(self) -> ScoreBands:
        if self.fair > self.good:
            msg = "bands.fair must not be above bands.good"
            raise ValueError(msg)
        return self


class HealthScoreConfig(_Strict):
    """A behavioural health score per user: 100 minus the decayed weights of their signals (Part 2)."""

    enabled: bool = True
    half_life: Duration = 7 * 86400.0  # a signal's weight halves every half_life
    # Each signal's weight (and an at-risk session's).
    weights: dict[str, float] = Field(
        default_factory=lambda: {"rage_click": 5.0, "dead_click": 2.0, "error_click": 3.0, "at_risk_session": 10.0}
    )
    bands: ScoreBands = Field(default_factory=ScoreBands)
    min_change: int = Field(default=5, ge=1, le=100)
    recompute_every: Duration = 3600.0  # how often every score is recomputed as signals age

    @field_validator("weights")
    @classmethod
    def _known_signals(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [s for s in value if s not in SCORE_SIGNALS]
        if unknown:
            msg = f"a weight for an unknown signal {unknown[0]!r} (signals: {', '.join(SCORE_SIGNALS)})"
            raise ValueError(msg)
        negative = [s for s, w in value.items() if w < 0]
        if negative:
            msg = f"the weight of {negative[0]} must not be negative"
            raise ValueError(msg)
        return value


class NpsFollowUpConfig(_Strict):
    """NPS surveys suppressed while a user's score is low, outreach below a lower mark, and release
    with hysteresis (Part 2)."""

    enabled: bool = True
    suppress_below: float = Field(default=60, ge=0, le=100)
    outreach_below: float = Field(default=40, ge=0, le=100)
    release_at: float = Field(default=70, ge=0, le=100)

    @model_validator(mode="after")
    def _hysteresis(self) -> NpsFollowUpConfig:
        if not self.outreach_below <= self.suppress_below <= self.release_at:
            msg = "expected outreach_below <= suppress_below <= release_at"
            raise ValueError(msg)
        return self


class FeatureSpec(_Strict):
    """A feature's use: a Segment track of `event`, or an event of the Fullstory Stream `stream`."""

    source: Literal["segment", "fullstory_stream"]
    event: str | None = None
    stream: str | None = None
    where: list[Any] = Field(default_factory=list)  # filters, as in a flow's `when`

    @model_validator(mode="after")
    def _names_its_events(self) -> FeatureSpec:
        if self.source == "segment" and not self.event:
            msg = "a segment feature names its track: event: <name>"
            raise ValueError(msg)
        if self.source == "fullstory_stream" and not self.stream:
            msg = "a fullstory_stream feature names its Stream: stream: <name>"
            raise ValueError(msg)
        return self


class CohortsSpec(_Strict):
    """The cohorts counted: audience members, and users with a trait's value. The cohort `all`
    (every user) is counted when none is configured, or with `include_all: true`."""

    audiences: list[str] = Field(
        default_factory=list
    )  # Segment audiences (or exported Fullstory segments) counted as cohorts
    traits: TraitValues = Field(
        default_factory=dict
    )  # profile traits and the values that make a cohort, trait: [values]
    include_all: bool = False  # count the cohort all (every user) beside the configured ones

    @property
    def counts_all(self) -> bool:
        return self.include_all or not (self.audiences or self.traits)


Notify = Literal["slack", "jira"]


class FeatureAdoptionConfig(_Strict):
    """Each feature's uses per cohort and window; a closed window below `drop_below` times the
    mean of the `baseline_windows` before it alerts `notify`, and a later recovery is announced (Part 2)."""

    enabled: bool = False
    features: dict[str, FeatureSpec] = Field(default_factory=dict)
    cohorts: CohortsSpec = Field(default_factory=CohortsSpec)
    window: Duration = 86400.0  # the counting window
    baseline_windows: int = Field(default=7, ge=1, le=90)
    drop_below: float = Field(default=0.7, gt=0, lt=1)
    min_baseline: float = Field(default=20, ge=0)
    notify: list[Notify] = Field(default_factory=lambda: list[Notify](["slack"]), min_length=1)


class SessionUrlFlowConfig(_Strict):
    """CRM and support events get the user's latest session replay link (Part 2)."""

    enabled: bool = True
    # The Segment tracks that get the latest session.
    trigger_events: list[str] = Field(
        default_factory=lambda: [
            "Opportunity Created",
            "Opportunity Stage Changed",
            "Ticket Created",
            "Conversation Started",
        ],
        min_length=1,
    )
    # The trigger's properties copied onto Fullstory Session Linked.
    carry_properties: list[str] = Field(
        default_factory=lambda: ["opportunity_id", "deal_id", "ticket_id", "conversation_id", "account_id", "stage"]
    )
    max_session_age: Duration = 30 * 86400.0
    event_name: str = Field(default="Fullstory Session Linked", min_length=1)
    cache_for: Duration = 300.0


class KeyAccounts(_Strict):
    """Who counts as a key account: any of these (all empty: every known user)."""

    audiences: list[str] = Field(default_factory=list)  # members of these audiences are key accounts
    group_ids: list[str] = Field(default_factory=list)  # users in these Segment groups are key accounts
    traits: TraitValues = Field(default_factory=dict)  # trait: accepted values


class FlaggedSessionFlowConfig(_Strict):
    """Sessions flagged in Fullstory (a note, or a Stream) for key accounts become outreach (Part 2)."""

    enabled: bool = True
    notes: bool = True  # Fullstory note.created webhooks flag sessions
    streams: list[str] = Field(default_factory=list)  # events of these Streams flag sessions too
    key_accounts: KeyAccounts = Field(default_factory=KeyAccounts)
    include_note_text: bool = True
    event_name: str = Field(default="Session Flagged For Outreach", min_length=1)
    cache_for: Duration = 300.0


Source = Literal["fullstory", "fullstory_stream", "segment", "fullstory_api"]
TargetName = Literal[
    "segment.track",
    "segment.identify",
    "fullstory.event",
    "fullstory.user",
    "fullstory.delete_user",
    "slack.message",
    "jira.issue",
]


class TriggerSpec(_Strict):
    source: Source
    kinds: list[str] = Field(default_factory=list)
    streams: list[str] = Field(default_factory=list)  # fullstory_stream: only these Streams (by name)


class AggregateSpec(_Strict):
    """Count the flow's events per key (and window); send one message when a key reaches `threshold`."""

    key: Any  # a directive, such as {template: "{user.user_id}|{session.session_id}"}
    threshold: int = Field(ge=1)
    window: Duration | None = None  # none: one count per key until it expires
    keep_for: Duration = 7 * 86400.0  # a key's count is forgotten this long after its last event


class EnrichSpec(_Strict):
    """One look-up before the mapping, made when the delivery is sent (see `engine/enricher.py`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lookup: str  # fullstory.latest_session, fullstory.user, fullstory.user_by_email
    with_: dict[str, Any] = Field(alias="with", default_factory=dict)  # argument: directive
    required: bool = True  # nothing found: the delivery ends filtered (else $enriched.<name> is missing)
    unless: Any = None  # skip the look-up when this value is present
    cache_for: Duration = 300.0
    max_age: Duration | None = None  # fullstory.latest_session: older sessions count as none
    key_accounts: KeyAccounts | None = None  # fsbridge.profile: a user outside them counts as none


class FlowSpec(_Strict):
    """One user-defined flow (see fsbridge.flows.spec and the README)."""

    enabled: bool = True
    description: str = ""
    trigger: TriggerSpec
    also_on: list[TriggerSpec] = Field(default_factory=list)  # more triggers: any of them starts the flow

    when: list[Any] = Field(default_factory=list)
    sample: float | None = Field(default=None, gt=0, le=1)
    max_per_minute: int | None = Field(default=None, ge=1)
    skip_unchanged: bool = False
    aggregate: AggregateSpec | None = None
    enrich: dict[str, EnrichSpec] = Field(default_factory=dict)  # name: look-up, read as $enriched.<name>
    when_enriched: list[Any] = Field(default_factory=list)  # filters on $enriched values, when it is sent
    target: TargetName
    mapping: dict[str, Any]

    @field_validator("mapping")
    @classmethod
    def _not_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            msg = "a mapping needs at least one output field"
            raise ValueError(msg)
        return value


class FlowsConfig(BaseModel):
    """The built-in flows' options, and any number of user-defined flows under other names."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FlowSpec] = Field(init=False)

    frustration_to_segment_track: FrustrationFlowConfig = Field(default_factory=FrustrationFlowConfig)
    segment_identify_to_fullstory_user: IdentifyFlowConfig = Field(default_factory=IdentifyFlowConfig)
    segment_delete_to_fullstory_user: DeletionFlowConfig = Field(default_factory=DeletionFlowConfig)
    session_url_to_segment: SessionUrlFlowConfig = Field(default_factory=SessionUrlFlowConfig)
    flagged_session_to_segment: FlaggedSessionFlowConfig = Field(default_factory=FlaggedSessionFlowConfig)
    experience_at_risk: ExperienceAtRiskConfig = Field(default_factory=ExperienceAtRiskConfig)
    frustration_traits: FrustrationTraitsConfig = Field(default_factory=FrustrationTraitsConfig)
    health_score: HealthScoreConfig = Field(default_factory=HealthScoreConfig)
    nps_follow_up: NpsFollowUpConfig = Field(default_factory=NpsFollowUpConfig)
    feature_adoption: FeatureAdoptionConfig = Field(default_factory=FeatureAdoptionConfig)

    @property
    def custom(self) -> dict[str, FlowSpec]:
        return dict(self.__pydantic_extra__ or {})


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


class RetentionConfig(_Strict):
    """How long finished work is kept (Part 2). Pending, parked and dry-run work is never pruned."""

    inbox: Duration = 30 * 86400.0  # raw events whose deliveries are all finished
    delivered: Duration = 30 * 86400.0  # delivered deliveries and their attempts
    dead: Duration = 90 * 86400.0  # dead letters and their attempts
    filtered: Duration = 7 * 86400.0  # the record of what a flow held back
    tombstones: Duration = 30 * 86400.0  # a deleted user's keyed hash, which keeps anything more being sent


class FsbridgeConfig(_Strict):
    version: Literal[1] = 1
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    destinations: DestinationsConfig = Field(default_factory=DestinationsConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    flows: FlowsConfig = Field(default_factory=FlowsConfig)

    @model_validator(mode="after")
    def _lease_outlives_requests(self) -> FsbridgeConfig:
        # A lease shorter than a request lets another worker claim a delivery still in flight.
        destinations = self.destinations
        timeout = max(
            d.timeout_seconds
            for d in (destinations.segment, destinations.fullstory, destinations.slack, destinations.jira)
        )
        if self.worker.lease_seconds < timeout + 5:
            msg = f"worker.lease_seconds must be at least the longest destination timeout + 5 s ({timeout + 5:g})"
            raise ValueError(msg)
        return self


def load_config(path: Path) -> FsbridgeConfig:
    """Read and validate `path`; ConfigError lists every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration file ({exc.strerror})."]) from exc
    return parse_config(text, str(path))


def parse_config(text: str, name: str = "<config>") -> FsbridgeConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: the configuration must be a mapping of sections."])
    try:
        config = FsbridgeConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown setting '{loc[-1]}'"
            problems.append(_located(name, root, loc, message))
        raise ConfigError(problems) from exc
    # Imported here: the flow compiler imports this module.
    from fsbridge.flows import check_flows

    flow_problems = check_flows(config)
    if flow_problems:
        raise ConfigError([_located(name, root, [str(p) for p in loc], message) for loc, message in flow_problems])
    return config


def _located(name: str, root: Any, loc: list[str], message: str) -> str:
    return f"{name}:{_line_of(root, loc)}: {'.'.join(loc) or '(top level)'}: {message}"


def _line_of(node: Any, loc: list[str]) -> int:
    """The 1-based line of the deepest YAML node on `loc` that exists."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            if match is None:
                return line
            line = (key or match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return line
    return line
