"""Golden sequences for the aggregations: each `config/examples/golden_aggregations/<flow>/
<case>.in.json` is a sequence of signals (or, for feature_adoption, feature uses) and job ticks
(seconds from a fixed start) under a configuration, and `<case>.out.json` the exact messages that
flow sends, in order, with the destination each goes to (a coalesced identify rendered with the
values of its due time). The deciders run as the store runs them, on state kept in memory here.
Run with FSBRIDGE_UPDATE_GOLDEN=1 to rewrite the outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.config import FsbridgeConfig
from fsbridge.flows.aggregations import UserAggregations
from fsbridge.flows.aggregations.coalescing import AWAITING
from fsbridge.flows.aggregations.pending import PendingRenderer
from fsbridge.flows.feature_adoption import FeatureAdoption
from fsbridge.store import Delivery, NewDelivery, Signal
from fsbridge.store.feature_counts import ALL, AdoptionState

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "config" / "examples" / "golden_aggregations").glob("*/*.in.json"))
UPDATE = os.environ.get("FSBRIDGE_UPDATE_GOLDEN") == "1"
START = 1_795_000_000.0


def as_delivery(d: NewDelivery) -> Delivery:
    return Delivery("dlv", "", d.flow, d.destination, d.message_id, d.body, d.status, 0, 0.0, 0.0, 0.0,
                    d.not_before or 0.0, False, None, None, awaiting=d.awaiting)  # fmt: skip


def run_adoption(case: dict[str, Any]) -> list[NewDelivery]:
    """The alerts the feature_adoption job queues, in order: uses (`use`, with the cohorts the user
    is in besides `all`) counted per window as the store counts them, and job runs (`tick`)."""
    config = FsbridgeConfig.model_validate({"flows": case["config"]}).flows.feature_adoption
    adoption = FeatureAdoption(config, dry_run={"slack": False, "jira": False})
    counts: dict[tuple[str, str], dict[float, int]] = {}
    states: dict[tuple[str, str], AdoptionState] = {}
    sent: list[NewDelivery] = []
    for step in case["steps"]:
        now = START + step["at"]
        if step.get("tick"):
            changed, queued = adoption.decide(counts, states, now)
            states.update(changed)
            sent += queued
            continue
        window = (now // config.window) * config.window
        everyone = [ALL] if adoption.rules.counts_all else []
        for cohort in (*everyone, *step["use"]["cohorts"]):
            series = counts.setdefault((step["use"]["feature"], cohort), {})
            series[window] = series.get(window, 0) + 1
    return sent


def run(case: dict[str, Any]) -> list[NewDelivery]:
    """The messages sent, in order, as a delivery loop would send them: a coalesced identify is
    rendered (and moves its user's values to sent) once its due time has come, before later steps."""
    aggregations = UserAggregations(
        FsbridgeConfig.model_validate({"flows": case["config"]}).flows, segment_dry_run=False
    )
    renderer = PendingRenderer(segment_dry_run=False)
    states: dict[str, str | None] = {}
    waiting: list[NewDelivery] = []
    sent: list[NewDelivery] = []

    def send_due(until: float) -> None:
        for d in sorted((d for d in waiting if (d.not_before or 0) <= until), key=lambda d: d.not_before or 0):
            waiting.remove(d)
            delivery = as_delivery(d)
            key = renderer.user_key(delivery)
            result, new_state = renderer.render(delivery, states.get(key))
            if new_state is not None:
                states[key] = new_state
            if result.outcome == "ready":
                sent.append(NewDelivery(d.flow, d.destination, d.message_id, delivery.body))

    for n, step in enumerate(case["steps"]):
        now = START + step["at"]
        send_due(now)
        if step.get("tick"):
            decision = aggregations.tick(dict(states), now)
        else:
            s = step["signal"]
            url = f"https://app.fullstory.com/ui/o/session/{s.get('session')}"
            signal = Signal(s["user_key"], s["kind"], now, s.get("session"), url, f"evt-{n}")
            decision = aggregations.decide({signal.user_key: states.get(signal.user_key)}, [signal], now)
        for row in decision.rows:
            states[row.user_key] = row.state
        for d in decision.deliveries:
            (waiting if d.awaiting == AWAITING else sent).append(d)
    send_due(float("inf"))
    return sent


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name.removesuffix('.in.json')}")
def test_golden_sequence(case: Path) -> None:
    """The flow named by the folder sends exactly the expected messages for the sequence."""
    expected_file = case.with_name(case.name.replace(".in.json", ".out.json"))
    flow = case.parent.name
    data = orjson.loads(case.read_bytes())
    sent = run_adoption(data) if flow == "feature_adoption" else run(data)
    actual = [{"to": d.destination, **orjson.loads(d.body)} for d in sent if d.flow == flow]
    if UPDATE:
        expected_file.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert orjson.loads(expected_file.read_bytes()) == actual


def test_every_aggregation_flow_has_a_sequence() -> None:
    """Each of the five aggregation flows has at least one golden sequence."""
    flows = {"experience_at_risk", "frustration_traits", "health_score", "nps_follow_up", "feature_adoption"}
    assert flows == {c.parent.name for c in CASES}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["rage_click", "dead_click", "error_click", "tick"]), st.integers(0, 6 * 3600)),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 20),
)
def test_the_first_score_sent_carries_both_traits(steps: list[tuple[str, int]], min_change: int) -> None:
    """Whatever the signals and ticks, the first health-score identify carries the score and the band."""
    sequence = [
        {"at": at, "tick": True}
        if kind == "tick"
        else {"at": at, "signal": {"user_key": "u:u_1", "kind": kind, "session": "s1"}}
        for kind, at in sorted(steps, key=lambda s: s[1])
    ]
    sent = run({"config": {"health_score": {"min_change": min_change}}, "steps": sequence})
    scores = [orjson.loads(d.body)["traits"] for d in sent if d.flow == "health_score"]
    if scores:
        assert {"fullstory_health_score", "fullstory_health_band"} <= scores[0].keys()
