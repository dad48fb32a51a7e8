"""The flow configuration file (`config/fsbridge.yaml`): reviewable, non-secret knobs for the
worker, the destinations and each flow. It is validated at start-up; every problem is reported with
its YAML line and its path (`flows.frustration_to_segment_track.signals.0: ...`), and the server
refuses to start until the file is right.

The sections live beside this module (`fields`, `flows`, `jobs`); their models are re-exported here,
so `fsbridge.config` stays the one place callers import configuration from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from fsbridge.config.fields import Duration as Duration
from fsbridge.config.fields import TraitValues as TraitValues
from fsbridge.config.fields import _Strict
from fsbridge.config.fields import parse_duration as parse_duration
from fsbridge.config.flows import (
    FRUSTRATION_SIGNALS as FRUSTRATION_SIGNALS,
)
from fsbridge.config.flows import (
    SCORE_SIGNALS as SCORE_SIGNALS,
)
from fsbridge.config.flows import (
    AggregateSpec as AggregateSpec,
)
from fsbridge.config.flows import (
    CohortsSpec as CohortsSpec,
)
from fsbridge.config.flows import (
    DeletionFlowConfig as DeletionFlowConfig,
)
from fsbridge.config.flows import (
    EnrichSpec as EnrichSpec,
)
from fsbridge.config.flows import (
    ExperienceAtRiskConfig as ExperienceAtRiskConfig,
)
from fsbridge.config.flows import (
    FeatureAdoptionConfig as FeatureAdoptionConfig,
)
from fsbridge.config.flows import (
    FeatureSpec as FeatureSpec,
)
from fsbridge.config.flows import (
    FlaggedSessionFlowConfig as FlaggedSessionFlowConfig,
)
from fsbridge.config.flows import (
    FlowsConfig as FlowsConfig,
)
from fsbridge.config.flows import (
    FlowSpec as FlowSpec,
)
from fsbridge.config.flows import (
    FrustrationFlowConfig as FrustrationFlowConfig,
)
from fsbridge.config.flows import (
    FrustrationTraitsConfig as FrustrationTraitsConfig,
)
from fsbridge.config.flows import (
    HealthScoreConfig as HealthScoreConfig,
)
from fsbridge.config.flows import (
    IdentifyFlowConfig as IdentifyFlowConfig,
)
from fsbridge.config.flows import (
    KeyAccounts as KeyAccounts,
)
from fsbridge.config.flows import (
    Notify as Notify,
)
from fsbridge.config.flows import (
    NpsFollowUpConfig as NpsFollowUpConfig,
)
from fsbridge.config.flows import (
    ScoreBands as ScoreBands,
)
from fsbridge.config.flows import (
    SessionUrlFlowConfig as SessionUrlFlowConfig,
)
from fsbridge.config.flows import (
    Source as Source,
)
from fsbridge.config.flows import (
    TargetName as TargetName,
)
from fsbridge.config.flows import (
    TriggerSpec as TriggerSpec,
)
from fsbridge.config.jobs import (
    FullstorySegment as FullstorySegment,
)
from fsbridge.config.jobs import (
    HighValueSessionsJobConfig as HighValueSessionsJobConfig,
)
from fsbridge.config.jobs import (
    JobConfig as JobConfig,
)
from fsbridge.config.jobs import (
    JobsConfig as JobsConfig,
)
from fsbridge.config.jobs import (
    SegmentAudiencesJobConfig as SegmentAudiencesJobConfig,
)
from fsbridge.errors import ConfigError


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
