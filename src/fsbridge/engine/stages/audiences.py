"""Audience membership stage: Engage audience membership from what Segment sends, recorded per
user: `Audience Entered` / `Audience Exited` tracks, and identify calls whose traits carry the
audience's boolean (context.personas)."""

from __future__ import annotations

from typing import Any

from fsbridge.engine.identity import IdentityRules
from fsbridge.envelope import Envelope, lookup
from fsbridge.sources import segment
from fsbridge.store import AudienceChange, DispatchResult

ENTERED, EXITED = "Audience Entered", "Audience Exited"


class AudienceMembership:
    name = "audience_membership"
    sources = frozenset({segment.SOURCE})

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        result.audiences.extend(audience_changes(envelope, self.rules.segment_user_id(envelope.payload)))
        return True


def audience_changes(envelope: Envelope, user_id: str | None) -> list[AudienceChange]:
    message: Any = envelope.payload
    if user_id is None or not isinstance(message, dict):
        return []
    if envelope.kind == "track" and message.get("event") in (ENTERED, EXITED):
        key = lookup(message, "properties.audience_key")
        if isinstance(key, str) and key:
            return [AudienceChange(user_id, key, message["event"] == ENTERED)]
        return []
    if envelope.kind == "identify" and lookup(message, "context.personas.computation_class") == "audience":
        key = lookup(message, "context.personas.computation_key")
        traits = message.get("traits")
        if isinstance(key, str) and isinstance(traits, dict) and isinstance(traits.get(key), bool):
            return [AudienceChange(user_id, key, traits[key])]
    return []
