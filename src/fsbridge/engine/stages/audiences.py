"""Audience membership stage: Engage audience entries and exits recorded per user."""

from __future__ import annotations

from fsbridge.engine.audiences import audience_changes
from fsbridge.engine.identity import IdentityRules
from fsbridge.envelope import Envelope
from fsbridge.sources import segment
from fsbridge.store import DispatchResult


class AudienceMembership:
    name = "audience_membership"
    sources = frozenset({segment.SOURCE})

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        result.audiences.extend(audience_changes(envelope, self.rules.segment_user_id(envelope.payload)))
        return True
