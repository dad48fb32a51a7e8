"""Profile stages: the last traits and group per user, and forgetting a user a deletion names."""

from __future__ import annotations

from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.profiles import forgotten, profile_updates
from fsbridge.envelope import Envelope
from fsbridge.sources import segment
from fsbridge.store import DispatchResult


class Profiles:
    name = "profiles"
    sources = frozenset({segment.SOURCE})

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        result.profiles.extend(profile_updates(envelope, self.rules))
        result.forget.extend(forgotten(envelope, self.rules))
        return True
