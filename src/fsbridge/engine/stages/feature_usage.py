"""Feature-usage stage (Part 2, `flows.feature_adoption`): an event that is a configured feature's
use (a Segment track of its `event`, or an event of its Fullstory Stream, passing its `where`
filters) becomes a `FeatureUse`, counted per cohort and window in the dispatch transaction."""

from __future__ import annotations

from dataclasses import dataclass

from fsbridge.config import FeatureAdoptionConfig
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.language import compile_filters
from fsbridge.engine.mapping import Filter
from fsbridge.envelope import MISSING, Envelope
from fsbridge.sources import segment
from fsbridge.sources.fullstory import STREAM_SOURCE
from fsbridge.store import DispatchResult, FeatureUse


@dataclass(frozen=True)
class Feature:
    name: str
    source: str
    event: str | None
    stream: str | None
    where: tuple[Filter, ...]

    def used_by(self, envelope: Envelope) -> bool:
        if envelope.source != self.source:
            return False
        if self.source == segment.SOURCE:
            if envelope.kind != "track" or envelope.get("event") != self.event:
                return False
        elif envelope.stream != self.stream:
            return False
        return all(check.test(envelope) for check in self.where)


class FeatureUsage:
    name = "feature_usage"
    sources = frozenset({segment.SOURCE, STREAM_SOURCE})

    def __init__(self, rules: IdentityRules, config: FeatureAdoptionConfig) -> None:
        self.rules = rules
        self.features = tuple(
            Feature(
                name, spec.source, spec.event, spec.stream, compile_filters(spec.where, ("features", name, "where"))
            )
            for name, spec in config.features.items()
        )

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        for feature in self.features:
            if feature.used_by(envelope):
                result.feature_uses.append(FeatureUse(feature.name, self._user(envelope), envelope.received_at))
        return True

    def _user(self, envelope: Envelope) -> str | None:
        if envelope.source == segment.SOURCE:
            return self.rules.segment_user_id(envelope.payload)
        user = self.rules.fullstory_user(envelope)
        return user if user is not MISSING else envelope.resolved_user_id
