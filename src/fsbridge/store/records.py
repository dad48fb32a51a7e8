"""Records that cross the store boundary: what intake, dispatch and delivery hand the store and
what it hands back. Plain frozen dataclasses with no behaviour, imported by every role module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fsbridge.store.aggregates import AggregateStep
from fsbridge.store.profiles import ForgetUser, ProfileUpdate

# `filtered`: a delivery that waited for a look-up which found nothing (its reason in last_error);
# it counts as the flow's filtered outcome, not as a destination's.
DeliveryStatus = Literal["pending", "delivered", "dead", "parked", "dry_run", "filtered"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "dead", "parked", "dry_run")
# The `awaiting` of a delivery whose flow enriches: its body is the plan of look-ups, and it is
# rendered when it is sent (engine/enricher.py).
AWAITING_ENRICHMENT = "enrich"
# The action of a dead letter whose flow could not produce a message: its body is the inbound event,
# so replaying it as it is would send that event; it is rendered again instead (`fsbridge replay`).
UNRENDERED = "unrendered"


@dataclass(frozen=True, slots=True)
class NewInboxEvent:
    source: str
    stream: str
    dedup_key: str
    kind: str
    body: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class NewQuarantined:
    source: str
    stream: str
    dedup_key: str
    body: bytes
    error: str
    received_at: float


@dataclass(frozen=True, slots=True)
class Accepted:
    """The id under which an event is stored; `duplicate` when it was stored before."""

    id: str
    duplicate: bool


# Not frozen, but read-only by convention: one is built per event and per row on the drain's hot
# path, where a frozen dataclass's __init__ costs about 8x a plain one (1.8 µs against 0.23 µs at 17 fields).
@dataclass(slots=True)
class InboxEvent:
    id: str
    source: str
    stream: str
    dedup_key: str
    kind: str
    body: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    id: str
    source: str
    stream: str
    body: bytes
    error: str
    received_at: float
    status: str


@dataclass(slots=True)  # read-only by convention, as InboxEvent
class NewDelivery:
    """A message a flow produced for one destination. `status` is `dead` when the mapping failed.
    `sync_scope` and `content_hash` let a later identical update be recognised as redundant."""

    flow: str
    destination: str
    message_id: str
    body: bytes
    status: DeliveryStatus = "pending"
    last_error: str | None = None
    action: str = ""
    sync_scope: str | None = None
    content_hash: str | None = None
    aggregate: AggregateStep | None = None  # sent only if this event makes the count reach the threshold
    awaiting: str | None = None  # AWAITING_ENRICHMENT: look-ups and rendering happen when it is sent
    not_before: float | None = None  # not sent before this time (a coalesced update waits for its interval)
    event_id: str | None = None  # the inbound event it comes from, when not the dispatch result's own


@dataclass(frozen=True, slots=True)
class IdentityClaim:
    """`value` (an identifier of `kind`) belongs to Segment user `user_id`."""

    kind: str
    value: str
    user_id: str


@dataclass(frozen=True, slots=True)
class IdentityConflict:
    kind: str
    value: str
    kept_user_id: str
    claimed_by: str


@dataclass(frozen=True, slots=True)
class GroupMembership:
    group_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class AudienceChange:
    user_id: str
    audience_key: str
    member: bool


@dataclass(frozen=True, slots=True)
class FlowSkip:
    """A flow that matched the event's trigger but held it back, and why."""

    flow: str
    reason: str


# Read-only by convention, not frozen: one is built per routed click, and a frozen dataclass's
# __init__ costs four times a plain one's (0.7 against 0.17 µs for these six fields).
@dataclass(slots=True)
class Signal:
    """A frustration signal of one user (`user_key`: `u:<userId>`, or `a:<anonymousId>` for a user
    Segment does not know yet), fed to the per-user aggregations in the dispatch transaction."""

    user_key: str
    kind: str  # rage_click, dead_click, error_click
    at: float
    session_id: str | None
    session_url: str | None
    event_id: str = ""


@dataclass(slots=True)  # read-only by convention, as Signal: one per counted use
class FeatureUse:
    """One use of a feature counted for adoption (`flows.feature_adoption`), by whom when known."""

    feature: str
    user_id: str | None
    at: float


@dataclass(slots=True)  # read-only by convention, as InboxEvent: one per routed event
class DispatchResult:
    """Everything routing one inbox event produced; written in one transaction."""

    inbox_id: str
    deliveries: list[NewDelivery] = field(default_factory=list)
    filtered: list[FlowSkip] = field(default_factory=list)
    received_at: float | None = None  # when the event came in (read from the inbox when not given)
    claims: list[IdentityClaim] = field(default_factory=list)
    groups: list[GroupMembership] = field(default_factory=list)
    audiences: list[AudienceChange] = field(default_factory=list)
    profiles: list[ProfileUpdate] = field(default_factory=list)
    forget: list[ForgetUser] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    feature_uses: list[FeatureUse] = field(default_factory=list)
    user_id: str | None = None  # the Segment userId the event is about, as dispatch resolved it (search)


@dataclass(frozen=True, slots=True)
class DispatchFailure:
    """An event that could not be routed this time, and why."""

    inbox_id: str
    error: str


@dataclass(frozen=True, slots=True)
class Undispatched:
    """Stored events not routed yet: how many, and when the oldest arrived (None: there are none)."""

    events: int
    oldest_received_at: float | None


@dataclass(slots=True)  # read-only by convention, as InboxEvent
class Delivery:
    id: str
    inbox_id: str
    flow: str
    destination: str
    message_id: str
    body: bytes
    status: DeliveryStatus
    attempts: int
    created_at: float
    received_at: float
    retry_started_at: float
    next_attempt_at: float
    send_alone: bool
    last_status_code: int | None
    last_error: str | None
    last_response: str | None = None
    action: str = ""
    sync_scope: str | None = None  # set when a success is remembered to suppress redundant updates
    awaiting: str | None = None  # AWAITING_ENRICHMENT: `body` is the plan, rendered when it is sent


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempted_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None


@dataclass(slots=True)  # read-only by convention, as InboxEvent
class DeliveryUpdate:
    """What one attempt (or a dry-run rendering) did to a delivery."""

    delivery_id: str
    status: DeliveryStatus
    next_attempt_at: float
    attempt: AttemptRecord | None
    send_alone: bool = False
    last_status_code: int | None = None
    last_error: str | None = None
    ends_deletion: bool = False  # it is a deletion request's call, now done: the call and the request go
    # False when the delivery has no sync scope, so there is no snapshot to record on success
    # (most deliveries: a per-row look-up for nothing costs the drain several per cent).
    may_have_snapshot: bool = True


@dataclass(frozen=True, slots=True)
class EventStory:
    """Everything that happened to one inbound event."""

    event: InboxEvent
    dispatched_at: float | None
    filtered: list[FlowSkip]
    deliveries: list[Delivery]
    attempts: dict[str, list[AttemptRecord]]
