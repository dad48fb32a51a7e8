"""The target actions a flow can name (`target: segment.track`), each with its request model."""

from __future__ import annotations

from fsbridge.engine.flow import TargetAction
from fsbridge.targets.fullstory import FullstoryCreateEvent, FullstoryCreateUser, FullstoryDeleteUser
from fsbridge.targets.jira import JiraIssue
from fsbridge.targets.segment import SegmentIdentify, SegmentTrack
from fsbridge.targets.slack import SlackMessage, escape_mrkdwn

TARGETS: dict[str, TargetAction] = {
    "segment.track": TargetAction("segment", "track", SegmentTrack, id_field="messageId"),
    "segment.identify": TargetAction("segment", "identify", SegmentIdentify, id_field="messageId"),
    "fullstory.event": TargetAction("fullstory", "events.create", FullstoryCreateEvent, exclude_none=True),
    "fullstory.user": TargetAction(
        "fullstory", "users.create", FullstoryCreateUser, exclude_none=True, scope_field="uid"
    ),
    "fullstory.delete_user": TargetAction("fullstory", "users.delete", FullstoryDeleteUser),
    "slack.message": TargetAction("slack", "message", SlackMessage, exclude_none=True, escape=escape_mrkdwn),
    "jira.issue": TargetAction("jira", "issue", JiraIssue, id_field="messageId"),
}
