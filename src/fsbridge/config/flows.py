"""The `flows:` section: each built-in flow's knobs and the custom flows written in the flow language."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fsbridge.config.fields import Duration, TraitValues, _Strict

FRUSTRATION_SIGNALS = ("rage_click", "dead_click", "error_click")


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
