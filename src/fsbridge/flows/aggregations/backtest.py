"""Backtest of the per-user aggregation flows (`fsbridge backtest experience_at_risk`, and
`frustration_traits`, `health_score`, `nps_follow_up`, and `feature_adoption`): the stored events since a time are
turned into signals by the same stage dispatch runs, and folded in order into users' states held
in memory, starting empty; a coalesced identify is rendered at its due time, as a delivery loop
would. Nothing in the store is read but the events, and nothing is written or sent. The named flow
is backtested even when it is disabled in the configuration."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from fsbridge.config import CohortsSpec, FeatureAdoptionConfig, FlowsConfig, IdentityConfig
from fsbridge.engine.backtest import Backtest, record_example
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.stages.feature_usage import FeatureUsage
from fsbridge.engine.stages.signals import Signals
from fsbridge.envelope import Envelope
from fsbridge.flows.aggregations import UserAggregations
from fsbridge.flows.aggregations.coalescing import AWAITING
from fsbridge.flows.aggregations.pending import PendingRenderer
from fsbridge.flows.feature_adoption import FeatureAdoption
from fsbridge.store import Delivery, DispatchResult, NewDelivery, Signal
from fsbridge.store.feature_counts import ALL, AdoptionState

PER_USER_FLOWS = ("experience_at_risk", "frustration_traits", "health_score", "nps_follow_up")


def enabled_for_backtest(flows: FlowsConfig, name: str) -> FlowsConfig:
    """The flows as configured, with `name` on (and the score under NPS follow-up, which reads it)."""
    wanted = {name, "health_score"} if name == "nps_follow_up" else {name}
    update = {n: getattr(flows, n).model_copy(update={"enabled": True}) for n in wanted}
    return flows.model_copy(update=update)


def backtest_user_flow(
    flows: FlowsConfig, identity: IdentityConfig, name: str, envelopes: Sequence[Envelope]
) -> Backtest:
    """What `name` would have sent for these stored events (already resolved to users), in order."""
    aggregations = UserAggregations(enabled_for_backtest(flows, name), segment_dry_run=False)
    stage = Signals(IdentityRules(identity), aggregations.signal_kinds)
    renderer = PendingRenderer(segment_dry_run=False)
    states: dict[str, str | None] = {}
    waiting: list[NewDelivery] = []
    result = Backtest()

    def count(delivery: NewDelivery, body: bytes) -> None:
        if delivery.flow != name:
            return
        message = orjson.loads(body)
        label = message.get("event") or f"identify {', '.join(sorted(message.get('traits', {})))}"
        record_example(result, str(label), message)

    def send_due(until: float) -> None:
        for new in sorted((d for d in waiting if (d.not_before or 0.0) <= until), key=lambda d: d.not_before or 0.0):
            waiting.remove(new)
            due = new.not_before or 0.0
            delivery = Delivery("backtest", "", new.flow, new.destination, new.message_id, new.body, new.status,
                                0, 0.0, 0.0, 0.0, due, False, None, None, awaiting=new.awaiting)  # fmt: skip
            key = renderer.user_key(delivery)
            outcome, state = renderer.render(delivery, states.get(key))
            if state is not None:
                states[key] = state
            if outcome.outcome == "ready":
                count(new, delivery.body)

    for envelope in sorted(envelopes, key=lambda e: e.received_at):
        dispatch = DispatchResult(envelope.event_id)
        stage.apply(envelope, dispatch)
        if not dispatch.signals:
            continue
        result.events += 1
        send_due(envelope.received_at)
        signal: Signal
        for signal in dispatch.signals:
            decision = aggregations.decide({signal.user_key: states.get(signal.user_key)}, [signal], signal.at)
            for row in decision.rows:
                states[row.user_key] = row.state
            for new in decision.deliveries:
                if new.awaiting == AWAITING:
                    waiting.append(new)
                else:
                    count(new, new.body)
    send_due(float("inf"))
    return result


MAX_WINDOWS = 10_000  # a backtest over more windows than this decides only the latest ones


def backtest_feature_adoption(
    adoption: FeatureAdoptionConfig, identity: IdentityConfig, envelopes: Sequence[Envelope], now: float
) -> Backtest:
    """What `feature_adoption` would have alerted for these stored events, for the cohort `all`:
    a cohort's membership is known as it is today, not as it was, so history is counted for
    everyone. Each window up to the last stored use's is decided once it closes, as the job does."""
    config = adoption.model_copy(update={"enabled": True, "cohorts": CohortsSpec(include_all=True)})
    stage = FeatureUsage(IdentityRules(identity), config)
    decider = FeatureAdoption(config, dry_run={})
    window = config.window
    counts: dict[tuple[str, str], dict[float, int]] = {}
    result = Backtest()
    for envelope in envelopes:
        dispatch = DispatchResult(envelope.event_id)
        stage.apply(envelope, dispatch)
        for use in dispatch.feature_uses:
            result.events += 1
            series = counts.setdefault((use.feature, ALL), {})
            start = (use.at // window) * window
            series[start] = series.get(start, 0) + 1
    if not counts:
        return result
    # Each window from the first use's to the last use's, decided as it closes (not later than now).
    last = min(now, max(max(series) for series in counts.values()) + window)
    closes = max(min(min(series) for series in counts.values()) + window, last - (MAX_WINDOWS - 1) * window)
    states: dict[tuple[str, str], AdoptionState] = {}
    while closes <= last:
        changed, alerts = decider.decide(counts, states, closes)
        states.update(changed)
        for alert in alerts:
            record_example(result, f"{alert.destination}.{alert.action}", orjson.loads(alert.body))
        closes += window
    return result
