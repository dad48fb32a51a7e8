"""Event stages, one module each, run in this order on every event before its flows. A stage is
added by writing its module and one line in `event_stages`, never by a branch in the router."""

from __future__ import annotations

from fsbridge.config import FeatureAdoptionConfig
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.stages.audiences import AudienceMembership
from fsbridge.engine.stages.base import EventStage
from fsbridge.engine.stages.feature_usage import FeatureUsage
from fsbridge.engine.stages.identity import GroupMembership, IdentityClaims
from fsbridge.engine.stages.loop_guard import LoopGuard
from fsbridge.engine.stages.profiles import Profiles
from fsbridge.engine.stages.signals import Signals


def event_stages(
    rules: IdentityRules, signal_kinds: frozenset[str] = frozenset(), adoption: FeatureAdoptionConfig | None = None
) -> tuple[EventStage, ...]:
    """`signal_kinds`: the Streams signals some per-user aggregation counts (none: no signal stage);
    `adoption`: the features whose use is counted (None: no feature-usage stage)."""
    stages: tuple[EventStage, ...] = (
        LoopGuard(),
        IdentityClaims(rules),
        GroupMembership(rules),
        AudienceMembership(rules),
        Profiles(rules),
    )
    if signal_kinds:
        stages = (*stages, Signals(rules, signal_kinds))
    if adoption is not None and adoption.enabled and adoption.features:
        stages = (*stages, FeatureUsage(rules, adoption))
    return stages


__all__ = ["EventStage", "event_stages"]
