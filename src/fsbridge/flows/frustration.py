"""Frustration signals seen by Fullstory Streams (rage, dead and error clicks) become Segment
`track` events, so analytics can segment users by frustration. Message Filter + Translator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsbridge.engine.mapping import Const, First, Lookup, Meta, Path, StableId, Unless
from fsbridge.flows.base import Flow, TargetAction, kind_in, on
from fsbridge.sources.fullstory import STREAM_SOURCE
from fsbridge.targets.segment import SegmentTrack

if TYPE_CHECKING:
    from fsbridge.config import FrustrationFlowConfig

NAME = "frustration_to_segment_track"
SEGMENT_TRACK = TargetAction("segment", "track", SegmentTrack, id_field="messageId")

USER_ID = Path("user.user_id", "user.uid")
SESSION_ID = Path("session.session_id", "session_id", "session.id")


def frustration_to_segment_track(options: FrustrationFlowConfig) -> Flow:
    return Flow(
        name=NAME,
        trigger=on(STREAM_SOURCE),
        when=(kind_in(frozenset(options.signals)),),
        mapping={
            "event": Lookup(Meta("kind"), options.event_names),
            "userId": USER_ID,
            "anonymousId": Unless(USER_ID, then=StableId(First(SESSION_ID, Path("session_url")), "session")),
            "timestamp": First(
                Path("event.event_time", "event_time", "timestamp", cast="timestamp"),
                Meta("received_at", cast="timestamp"),
            ),
            "properties": {
                "signal_type": Meta("kind"),
                "session_url": Path("session_url", "session.session_url", "session.url"),
                "session_id": SESSION_ID,
                "page_url": Path("event.url", "event.page_url", "url", "page_url"),
                "page_name": Path("event.page_name", "page_name"),
                "element_text": Path("event.target_text", "target_text"),
                "element_name": Path("event.element_name", "element_name"),
                "source": Const("fullstory"),
            },
            "context": {"traits": {"email": Path("user.user_email", "user.email", cast="email")}},
        },
        target=SEGMENT_TRACK,
    )
