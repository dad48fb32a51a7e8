"""The per-user aggregation flows of Part 2, one module each: `experience_at_risk`,
`frustration_traits`, `health_score` and `nps_follow_up`. `UserAggregations` is the decider the
store calls inside the dispatch transaction (and the recovery and recompute jobs call through the
store): it folds each user's signals into the user's state and says what to send. A flow is added
by writing its module and wiring it here."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fsbridge.config import FRUSTRATION_SIGNALS, FlowsConfig
from fsbridge.flows.aggregations.experience_at_risk import ExperienceAtRisk
from fsbridge.flows.aggregations.frustration_traits import FrustrationTraits
from fsbridge.flows.aggregations.health_score import AT_RISK_SESSION, HealthScore
from fsbridge.flows.aggregations.nps_follow_up import NpsFollowUp
from fsbridge.flows.aggregations.outbox import Outbox
from fsbridge.flows.aggregations.score import Score
from fsbridge.flows.aggregations.state import UserState
from fsbridge.store import Signal
from fsbridge.store.user_state import Decision, StateRow

DAY = 86400.0


class UserAggregations:
    def __init__(self, flows: FlowsConfig, *, segment_dry_run: bool) -> None:
        self.segment_dry_run = segment_dry_run
        self.at_risk = ExperienceAtRisk(flows.experience_at_risk) if flows.experience_at_risk.enabled else None
        self.traits = FrustrationTraits(flows.frustration_traits) if flows.frustration_traits.enabled else None
        interval = flows.frustration_traits.min_interval
        self.health = HealthScore(flows.health_score, interval) if flows.health_score.enabled else None
        self.nps = NpsFollowUp(flows.nps_follow_up) if flows.nps_follow_up.enabled and self.health else None
        kinds: set[str] = set()
        if self.at_risk:
            kinds |= self.at_risk.signals
        if self.traits:
            kinds |= set(FRUSTRATION_SIGNALS)
        if self.health:
            kinds |= {k for k, w in flows.health_score.weights.items() if w > 0 and k != AT_RISK_SESSION}
        self.signal_kinds = frozenset(kinds)
        # How long a user's state is kept after their last signal, at the least: until the heaviest
        # signal's contribution is below 0.001 (it no longer moves a rounded score).
        weight = max(flows.health_score.weights.values(), default=0.0)
        decay = flows.health_score.half_life * math.log2(max(weight, 0.001) / 0.001)
        self.keep_for = max(flows.frustration_traits.window, decay, DAY)
        self.recover_after = flows.experience_at_risk.recover_after

    @property
    def enabled(self) -> bool:
        return bool(self.signal_kinds)

    def decide(self, stored: dict[str, str | None], signals: Sequence[Signal], now: float) -> Decision:
        out = Outbox(self.segment_dry_run)
        rows = []
        by_user: dict[str, list[Signal]] = {}
        for signal in signals:  # each user's signals keep their order
            by_user.setdefault(signal.user_key, []).append(signal)
        at_risk_flow, traits, health = self.at_risk, self.traits, self.health
        for user_key in sorted(by_user):
            state = UserState.from_json(user_key, stored.get(user_key))
            for signal in by_user[user_key]:
                out.event_id = signal.event_id or None
                at_risk = at_risk_flow.on_signal(state, signal, out) if at_risk_flow else False
                if traits:
                    traits.on_signal(state, signal, out)
                if health:
                    health.on_signal(state, signal, out, at_risk=at_risk)
                if signal.at > state.last_seen:
                    state.last_seen = signal.at
            self._flush(state, now, out, signals_arrived=True)
            rows.append(self._row(state))
        return Decision(rows, out.deliveries, out.coalesced)

    def tick(self, stored: dict[str, str | None], now: float) -> Decision:
        out = Outbox(self.segment_dry_run)
        rows = []
        for user_key, text in stored.items():
            if text is None:
                continue
            state = UserState.from_json(user_key, text)
            if self.at_risk:
                self.at_risk.tick(state, now, out)
            self._flush(state, now, out, signals_arrived=False)
            rows.append(self._row(state))
        return Decision(rows, out.deliveries, out.coalesced)

    def explain(self, text: str | None, user_key: str, now: float) -> tuple[UserState, Score | None]:
        state = UserState.from_json(user_key, text)
        return state, self.health.score(state, now) if self.health else None

    def _flush(self, state: UserState, now: float, out: Outbox, *, signals_arrived: bool) -> None:
        if self.traits:
            self.traits.flush(state, now, out, changed=signals_arrived)
        if self.health:
            value, band = self.health.flush(state, now, out)
            if self.nps:
                health = self.health
                self.nps.flush(state, value, band, lambda: health.score(state, now), now, out)

    def _row(self, state: UserState) -> StateRow:
        expires = state.last_seen + self.keep_for
        if state.at_risk and state.last_at_risk_at is not None:
            expires = max(expires, state.last_at_risk_at + self.recover_after + DAY)  # rare: not the hot path
        for record in state.sync.values():
            if (due := record["pending_due"]) is not None and due + DAY > expires:
                expires = due + DAY
        return StateRow(state.user_key, state.to_json(), state.at_risk, state.last_at_risk_at, state.score,
                        state.band, expires)  # fmt: skip
