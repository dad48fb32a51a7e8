"""Identity stages: which identifiers belong to which Segment user (claims), and which account a
user is in (group membership), from what a source says."""

from __future__ import annotations

from fsbridge.engine.identity import IdentityRules
from fsbridge.envelope import Envelope
from fsbridge.sources import segment
from fsbridge.store import DispatchResult


class IdentityClaims:
    name = "identity_claims"
    sources = frozenset({segment.SOURCE})

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        result.claims.extend(self.rules.claims(envelope))
        return True


class GroupMembership:
    name = "group_membership"
    sources = frozenset({segment.SOURCE})

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        result.groups.extend(self.rules.groups(envelope))
        return True
