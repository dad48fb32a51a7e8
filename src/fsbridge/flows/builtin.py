"""The built-in flows, written in the same flow language as user-defined ones; their options in
`config/fsbridge.yaml` fill in the spec (which signals, which event names, which id paths)."""

from __future__ import annotations

from typing import Any

from fsbridge.config import (
    DeletionFlowConfig,
    FlowSpec,
    FrustrationFlowConfig,
    IdentifyFlowConfig,
    IdentityConfig,
)

FRUSTRATION = "frustration_to_segment_track"
IDENTIFY = "segment_identify_to_fullstory_user"
DELETION = "segment_delete_to_fullstory_user"

SESSION_PATHS = ["session.session_id", "session_id", "session.id", "session_url"]


def frustration_spec(options: FrustrationFlowConfig, identity: IdentityConfig) -> FlowSpec:
    """Fullstory Streams rage, dead and error clicks become Segment track events."""
    # The Fullstory user id, or the Segment userId that identity links found for its email or anonymous id.
    user_id: dict[str, Any] = {
        "first": [{"path": identity.fullstory_user_id_paths, "cast": "string"}, {"path": "$resolved_user_id"}]
    }
    enrich: dict[str, Any] = {}
    if identity.lookup_fullstory_users and identity.fullstory_email_paths:
        # An email no Segment call linked yet: ask Fullstory for its uid when the track is sent
        # (optional: when Fullstory cannot say, the track goes out anonymous).
        enrich["identity"] = {
            "lookup": "fullstory.user_by_email",
            "with": {"email": {"path": identity.fullstory_email_paths, "cast": "email"}},
            "required": False,
            "unless": user_id,
        }
        user_id = {"first": [*user_id["first"], {"path": "$enriched.identity.user_id"}]}
    mapping: dict[str, Any] = {
        "event": {"lookup": "$kind", "table": options.event_names},
        "userId": user_id,
        "anonymousId": {"stable_id": {"path": SESSION_PATHS}, "namespace": "session", "unless": user_id},
        "timestamp": {
            "first": [
                {"path": ["event.event_time", "event_time", "timestamp"], "cast": "timestamp"},
                {"path": "$received_at", "cast": "timestamp"},
            ]
        },
        "properties": {
            "signal_type": {"path": "$kind"},
            "session_url": {"path": ["session_url", "session.session_url", "session.url"]},
            "session_id": {"path": SESSION_PATHS[:3]},
            "page_url": {"path": ["event.url", "event.page_url", "url", "page_url"]},
            "page_name": {"path": ["event.page_name", "page_name"]},
            "element_text": {"path": ["event.target_text", "target_text"]},
            "element_name": {"path": ["event.element_name", "element_name"]},
            "source": "fullstory",
        },
    }
    if identity.fullstory_email_paths:
        mapping["context"] = {"traits": {"email": {"path": identity.fullstory_email_paths, "cast": "email"}}}
    return FlowSpec(
        description=frustration_spec.__doc__ or "",
        trigger={"source": "fullstory_stream"},
        when=[{"name": "is_frustration_signal", "path": "$kind", "one_of": list(options.signals)}],
        enrich=enrich,
        target="segment.track",
        mapping=mapping,
    )


def identify_spec(options: IdentifyFlowConfig, identity: IdentityConfig) -> FlowSpec:
    """Segment identify calls upsert Fullstory users (POST /v2/users), never redundantly."""
    return FlowSpec(
        description=identify_spec.__doc__ or "",
        trigger={"source": "segment", "kinds": ["identify"]},
        when=[{"name": "has_user_id", "path": identity.segment_user_id_path, "exists": True}],
        target="fullstory.user",
        skip_unchanged=options.skip_unchanged,
        mapping={
            "uid": {"function": "fullstory_uid"},
            "email": {"path": ["traits.email", "context.traits.email"], "cast": "email"},
            "display_name": {"first": [{"path": "traits.name", "cast": "string"}, {"function": "full_name"}]},
            "properties": {"function": "fullstory_user_properties"},
            "schema": {"function": "fullstory_user_schema"},
        },
    )


def deletion_spec(options: DeletionFlowConfig, identity: IdentityConfig) -> FlowSpec:
    """Segment user deletion requests delete the Fullstory user (DELETE /v2/users?uid=)."""
    return FlowSpec(
        description=deletion_spec.__doc__ or "",
        trigger={"source": "segment", "kinds": ["delete"]},
        when=[{"name": "has_user_id", "path": identity.segment_user_id_path, "exists": True}],
        target="fullstory.delete_user",
        mapping={"uid": {"function": "fullstory_uid"}},
    )
