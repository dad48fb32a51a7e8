"""Frustration signals seen by Fullstory Streams (rage, dead and error clicks) become Segment
`track` events, so analytics can segment users by frustration. Message Filter + Translator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsbridge.config import IdentityConfig
from fsbridge.engine.mapping import Const, First, Lookup, Meta, Path, StableId, Unless
from fsbridge.flows.base import Flow, TargetAction, kind_in, on
from fsbridge.sources.fullstory import STREAM_SOURCE
from fsbridge.targets.segment import SegmentTrack

if TYPE_CHECKING:
    from fsbridge.config import FrustrationFlowConfig

NAME = "frustration_to_segment_track"
SEGMENT_TRACK = TargetAction("segment", "track", SegmentTrack, id_field="messageId")

SESSION_ID = Path("session.session_id", "session_id", "session.id")


def frustration_to_segment_track(options: FrustrationFlowConfig, identity: IdentityConfig | None = None) -> Flow:
    identity = identity or IdentityConfig()
    # The Fullstory user id, or the Segment userId that identity links found for its email or anonymous id.
    user_id = First(Path(*identity.fullstory_user_id_paths, cast="string"), Meta("resolved_user_id"))
    return Flow(
        name=NAME,
        trigger=on(STREAM_SOURCE),
        when=(kind_in(frozenset(options.signals)),),
        mapping={
            "event": Lookup(Meta("kind"), options.event_names),
            "userId": user_id,
            "anonymousId": Unless(user_id, then=StableId(First(SESSION_ID, Path("session_url")), "session")),
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
            "context": {"traits": {"email": Path(*identity.fullstory_email_paths, cast="email")}},
        },
        target=SEGMENT_TRACK,
    )
