"""`flows.health_score` (Part 2): a per-user behavioural score from the decayed weights of the
user's signals, sent as identify traits `fullstory_health_score` and `fullstory_health_band` when
the band changes or the score moved by at least `min_change` since the value last sent (coalesced
with frustration_traits' `min_interval`). The `health_score_recompute` job recomputes scores as
signals age, so scores recover without new traffic."""

from __future__ import annotations

from fsbridge.config import HealthScoreConfig
from fsbridge.flows.aggregations.coalescing import sync
from fsbridge.flows.aggregations.outbox import Outbox
from fsbridge.flows.aggregations.score import Score, score_of, still_counting
from fsbridge.flows.aggregations.state import UserState
from fsbridge.store import Signal

NAME = "health_score"
AT_RISK_SESSION = "at_risk_session"


class HealthScore:
    name = NAME

    def __init__(self, config: HealthScoreConfig, min_interval: float) -> None:
        self.config = config
        self.min_interval = min_interval

    def on_signal(self, state: UserState, signal: Signal, out: Outbox, *, at_risk: bool) -> None:
        if self.config.weights.get(signal.kind, 0) > 0:
            state.signals.append([signal.kind, signal.at])
        if at_risk and self.config.weights.get(AT_RISK_SESSION, 0) > 0:
            state.signals.append([AT_RISK_SESSION, signal.at])

    def score(self, state: UserState, now: float) -> Score:
        bands = self.config.bands
        return score_of(state.signals, self.config.weights, self.config.half_life, now, bands.good, bands.fair)

    def flush(self, state: UserState, now: float, out: Outbox) -> Score:
        state.signals = still_counting(state.signals, self.config.weights, self.config.half_life, now)
        score = self.score(state, now)
        state.score, state.band = score.value, score.band
        record = state.sync_of(NAME)
        last = record.pending if record.pending is not None else record.sent
        last_score = int(last["fullstory_health_score"]) if last else 100
        last_band = str(last["fullstory_health_band"]) if last else "good"
        if score.band != last_band or abs(score.value - last_score) >= self.config.min_change:
            values = {"fullstory_health_score": score.value, "fullstory_health_band": score.band}
            sync(NAME, state, values, self.min_interval, now, out)
        return score
