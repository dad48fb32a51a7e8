"""`flows.health_score` (Part 2): a per-user behavioural score from the decayed weights of the
user's signals, sent as identify traits `fullstory_health_score` and `fullstory_health_band` when
the band changes or the score moved by at least `min_change` since the value last sent (coalesced
with frustration_traits' `min_interval`). The `health_score_recompute` job recomputes scores as
signals age, so scores recover without new traffic."""

from __future__ import annotations

from typing import ClassVar

from fsbridge.config import HealthScoreConfig
from fsbridge.flows.aggregations.coalescing import sync
from fsbridge.flows.aggregations.outbox import Outbox
from fsbridge.flows.aggregations.score import Score, add, explain, score_of
from fsbridge.flows.aggregations.state import MAX_SIGNALS, UserState
from fsbridge.store import Signal

NAME = "health_score"
AT_RISK_SESSION = "at_risk_session"


class HealthScore:
    name: ClassVar[str] = NAME

    def __init__(self, config: HealthScoreConfig, min_interval: float) -> None:
        self.config = config
        self.min_interval = min_interval

    def on_signal(self, state: UserState, signal: Signal, out: Outbox, *, at_risk: bool) -> None:
        weights = self.config.weights
        for kind in (signal.kind, AT_RISK_SESSION) if at_risk else (signal.kind,):
            weight = weights.get(kind, 0)
            if weight > 0:
                state.signals.append([kind, signal.at])
                state.decay_sum, state.decay_at = add(
                    state.decay_sum, state.decay_at, weight, signal.at, self.config.half_life
                )
        if len(state.signals) > MAX_SIGNALS:
            del state.signals[:-MAX_SIGNALS]

    def score(self, state: UserState, now: float) -> Score:
        """The score now, with its contributions (for `score explain` and the user's page)."""
        b, c = self.config.bands, self.config
        return explain(state.signals, c.weights, state.decay_sum, state.decay_at, c.half_life, now, b.good, b.fair)

    def flush(self, state: UserState, now: float, out: Outbox) -> tuple[int, str]:
        bands = self.config.bands
        value, band, _ = score_of(state.decay_sum, state.decay_at, self.config.half_life, now, bands.good, bands.fair)
        state.score, state.band = value, band
        record = state.sync_of(NAME)
        last = record["pending"] if record["pending"] is not None else record["sent"]
        if not last:
            last_score, last_band = 100, "good"
        else:
            last_score, last_band = last["fullstory_health_score"], last["fullstory_health_band"]
        if band != last_band or abs(value - last_score) >= self.config.min_change:
            values = {"fullstory_health_score": value, "fullstory_health_band": band}
            sync(NAME, state, values, self.min_interval, now, out)
        return value, band
