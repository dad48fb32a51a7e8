"""The durable store: inbox of raw events (Idempotent Receiver), quarantine, deliveries with their
attempt log (Dead Letter Channel), and destination state. `Store` is the interface; SQLite is the
embedded engine, and a PostgreSQL engine implements the same interface for several replicas."""

from __future__ import annotations

from fsbridge.store.base import Store, open_store
from fsbridge.store.profiles import ForgetUser, ProfileUpdate, UserRecord
from fsbridge.store.records import (
    Accepted,
    AttemptRecord,
    AudienceChange,
    Delivery,
    DeliveryUpdate,
    DispatchFailure,
    DispatchResult,
    EventStory,
    FeatureUse,
    FlowSkip,
    GroupMembership,
    IdentityClaim,
    IdentityConflict,
    InboxEvent,
    NewDelivery,
    NewInboxEvent,
    NewQuarantined,
    QuarantinedEvent,
    Signal,
    Undispatched,
)

__all__ = [
    "Accepted",
    "AttemptRecord",
    "AudienceChange",
    "Delivery",
    "DeliveryUpdate",
    "DispatchFailure",
    "DispatchResult",
    "EventStory",
    "FeatureUse",
    "FlowSkip",
    "ForgetUser",
    "GroupMembership",
    "IdentityClaim",
    "IdentityConflict",
    "InboxEvent",
    "NewDelivery",
    "NewInboxEvent",
    "NewQuarantined",
    "ProfileUpdate",
    "QuarantinedEvent",
    "Signal",
    "Store",
    "Undispatched",
    "UserRecord",
    "open_store",
]
