"""The built-in flows, written in the same flow language as user-defined ones; their options in
`config/fsbridge.yaml` fill in the spec (which signals, which event names, which id paths)."""

from __future__ import annotations

from typing import Any

from fsbridge.config import (
    DeletionFlowConfig,
    FlaggedSessionFlowConfig,
    FlowSpec,
    FrustrationFlowConfig,
    IdentifyFlowConfig,
    IdentityConfig,
    SessionUrlFlowConfig,
)
from fsbridge.sources import fullstory

FRUSTRATION = "frustration_to_segment_track"
IDENTIFY = "segment_identify_to_fullstory_user"
DELETION = "segment_delete_to_fullstory_user"
SESSION_URL = "session_url_to_segment"
AUDIENCE_TRAITS = "fullstory_segment_to_segment_identify"
AUDIENCE_TRACKS = "fullstory_segment_to_segment_track"
HIGH_VALUE_SESSION = "high_value_session_to_slack"
FLAGGED_SESSION = "flagged_session_to_segment"
SEGMENT_EMAIL_PATHS = ["traits.email", "context.traits.email", "properties.email"]

SESSION_PATHS = list(fullstory.SESSION_PATHS)


def frustration_spec(options: FrustrationFlowConfig, identity: IdentityConfig) -> FlowSpec:
    """Fullstory Streams rage, dead and error clicks become Segment track events."""
    # The Fullstory user id, or the Segment userId that identity links found for its email or anonymous id.
    user_id: dict[str, Any] = {
        "first": [{"path": identity.fullstory_user_id_paths, "cast": ["string", "trim"]}, {"path": "$resolved_user_id"}]
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


def session_url_spec(options: SessionUrlFlowConfig, identity: IdentityConfig) -> FlowSpec:
    """CRM and support tracks (Opportunity Created, Ticket Created...) get the user's most recent
    Fullstory session: a Segment track `Fullstory Session Linked` with its replay link."""
    user_id = {"function": "segment_user_id"}
    carried = {name: {"path": f"properties.{name}"} for name in options.carry_properties}
    return FlowSpec(
        description=session_url_spec.__doc__ or "",
        trigger={"source": "segment", "kinds": ["track"]},
        when=[{"name": "is_trigger_event", "path": "event", "one_of": list(options.trigger_events)}],
        enrich={
            "session": {
                "lookup": "fullstory.latest_session",
                "with": {"uid": user_id, "email": {"path": SEGMENT_EMAIL_PATHS, "cast": "email"}},
                "max_age": options.max_session_age,
                "cache_for": options.cache_for,
            }
        },
        target="segment.track",
        mapping={
            "event": {"const": options.event_name},
            "userId": user_id,
            "anonymousId": {"path": "anonymousId", "cast": "string", "unless": user_id},
            "timestamp": {
                "first": [{"path": "timestamp", "cast": "timestamp"}, {"path": "$received_at", "cast": "timestamp"}]
            },
            "properties": {
                "session_url": {"path": "$enriched.session.url"},
                "session_id": {"path": "$enriched.session.session_id"},
                "session_started_at": {"path": "$enriched.session.started_at"},
                "trigger_event": {"path": "event"},
                "trigger_message_id": {"path": "messageId"},
                **carried,
                "source": "fullstory",
            },
        },
    )


def flagged_session_spec(options: FlaggedSessionFlowConfig, identity: IdentityConfig) -> FlowSpec:
    """A Fullstory note (or an event of a configured Stream) on a key account's session becomes a
    Segment track `Session Flagged For Outreach` with the replay link and the note."""
    triggers: list[dict[str, Any]] = []
    if options.notes:
        triggers.append({"source": "fullstory", "kinds": ["note.created"]})
    if options.streams:
        triggers.append({"source": "fullstory_stream", "streams": list(options.streams)})
    # A Stream's event names its user (the uid, or a Segment userId the links know); a note names
    # only the Fullstory user, whose uid is asked of Fullstory.
    stream_user: dict[str, Any] = {
        "first": [{"path": identity.fullstory_user_id_paths, "cast": ["string", "trim"]}, {"path": "$resolved_user_id"}]
    }
    properties: dict[str, Any] = {
        "session_url": {"path": ["data.sessionUrl", "session_url", "session.session_url", "session.url"]},
        "reason": {"first": [{"lookup": "$kind", "table": {"note.created": "note"}}, {"path": "$stream"}]},
        "flagged_by": {"path": "data.author", "cast": "string"},
        "account_id": {"path": "$enriched.profile.group_id", "cast": "string"},
        "source": "fullstory",
    }
    if options.include_note_text:
        properties["note_text"] = {"function": "note_text"}
    return FlowSpec(
        enabled=options.enabled and bool(triggers),
        description=flagged_session_spec.__doc__ or "",
        trigger=triggers[0] if triggers else {"source": "fullstory", "kinds": ["note.created"]},
        also_on=triggers[1:],
        enrich={
            "fullstory_user": {
                "lookup": "fullstory.user",
                "with": {"id": {"function": "fullstory_user_from_urls"}},
                "unless": stream_user,
                "cache_for": options.cache_for,
            },
            "profile": {
                "lookup": "fsbridge.profile",
                "with": {"user_id": {"first": [stream_user, {"path": "$enriched.fullstory_user.user_id"}]}},
                "key_accounts": options.key_accounts.model_dump(),
            },
        },
        target="segment.track",
        mapping={
            "event": {"const": options.event_name},
            "userId": {"path": "$enriched.profile.user_id"},
            "timestamp": {
                "first": [
                    {"path": ["data.created", "event.event_time"], "cast": "timestamp"},
                    {"path": "$received_at", "cast": "timestamp"},
                ]
            },
            "properties": properties,
        },
    )


def audience_traits_spec() -> FlowSpec:
    """A user entering or leaving an exported Fullstory segment (`jobs.fullstory_segment_audiences`)
    becomes a Segment identify with the boolean trait `fs_<key>`, the trait an audience is built on."""
    return FlowSpec(
        description=audience_traits_spec.__doc__ or "",
        trigger={"source": "fullstory_api", "kinds": ["segment.membership"]},
        when=[{"name": "has_user", "path": "user_id", "exists": True}],
        target="segment.identify",
        mapping={
            "userId": {"path": "user_id", "cast": "string"},
            "traits": {"function": "audience_trait"},
            "timestamp": {"path": "$received_at", "cast": "timestamp"},
        },
    )


def audience_tracks_spec() -> FlowSpec:
    """The same change as a Segment track `Audience Entered` or `Audience Exited`."""
    return FlowSpec(
        description=audience_tracks_spec.__doc__ or "",
        trigger={"source": "fullstory_api", "kinds": ["segment.membership"]},
        when=[{"name": "has_user", "path": "user_id", "exists": True}],
        target="segment.track",
        mapping={
            "event": {"path": "event"},
            "userId": {"path": "user_id", "cast": "string"},
            "timestamp": {"path": "$received_at", "cast": "timestamp"},
            "properties": {
                "audience_key": {"path": "audience_key"},
                "audience_name": {"path": "audience_name"},
                "source": "fullstory",
            },
        },
    )


def high_value_session_spec() -> FlowSpec:
    """A new session of a high-value user (`jobs.high_value_sessions`) becomes one Slack message."""
    return FlowSpec(
        description=high_value_session_spec.__doc__ or "",
        trigger={"source": "fullstory_api", "kinds": ["session.started"]},
        target="slack.message",
        mapping={
            "text": {"template": "New Fullstory session of a high-value user {user_id}: {session_url}"},
            "blocks": {"function": "high_value_session_blocks", "trusted": True},  # it escapes its values
            "unfurl_links": False,
        },
    )


def trend_alert_spec(target: str) -> FlowSpec:
    """A Fullstory `segment.trend.alert` whose direction is BELOW (flows.feature_adoption's notify)."""
    summary = (
        "Fullstory: {data.alertConfig.segmentName} fell to {data.value} (below {data.alertConfig.threshold},"
        " {data.alertConfig.duration})"
    )
    mapping: dict[str, Any] = (
        {"text": {"template": summary + ": {data.alertConfig.description}. {data.notificationUrl}"},
         "unfurl_links": False}
        if target == "slack"
        else {"summary": {"template": summary},
              "description": {"template": "{data.alertConfig.description}\n\nFullstory alert: {data.notificationUrl}"},
              "labels": ["fullstory-alert"]}
    )  # fmt: skip
    return FlowSpec(
        description=trend_alert_spec.__doc__ or "",
        trigger={"source": "fullstory", "kinds": ["segment.trend.alert"]},
        when=[{"name": "is_a_drop", "path": "data.alertConfig.direction", "equals": "BELOW"}],
        target="slack.message" if target == "slack" else "jira.issue",
        mapping=mapping,
    )
