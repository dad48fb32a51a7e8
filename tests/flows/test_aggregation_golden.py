"""Golden sequences for the per-user aggregations: each `config/examples/golden_aggregations/<flow>/
<case>.in.json` is a sequence of signals and job ticks (seconds from a fixed start) under a
configuration, and `<case>.out.json` the exact messages that flow sends, in order (a coalesced
identify rendered with the values of its due time). The decider runs as the store runs it, on
states kept in memory here. Run with FSBRIDGE_UPDATE_GOLDEN=1 to rewrite the outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsbridge.config import FsbridgeConfig
from fsbridge.flows.aggregations import UserAggregations
from fsbridge.flows.aggregations.coalescing import AWAITING
from fsbridge.flows.aggregations.pending import PendingIdentifies
from fsbridge.store import Delivery, NewDelivery, Signal

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "config" / "examples" / "golden_aggregations").glob("*/*.in.json"))
UPDATE = os.environ.get("FSBRIDGE_UPDATE_GOLDEN") == "1"
START = 1_795_000_000.0


def as_delivery(d: NewDelivery) -> Delivery:
    return Delivery("dlv", "", d.flow, d.destination, d.message_id, d.body, d.status, 0, 0.0, 0.0, 0.0,
                    d.not_before or 0.0, False, None, None, awaiting=d.awaiting)  # fmt: skip


def run(case: dict[str, Any]) -> list[NewDelivery]:
    """The messages sent, in order, as a delivery loop would send them: a coalesced identify is
    rendered (and moves its user's values to sent) once its due time has come, before later steps."""
    aggregations = UserAggregations(
        FsbridgeConfig.model_validate({"flows": case["config"]}).flows, segment_dry_run=False
    )
    renderer = PendingIdentifies(None, segment_dry_run=False)  # type: ignore[arg-type]
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
    actual = [orjson.loads(d.body) for d in run(orjson.loads(case.read_bytes())) if d.flow == flow]
    if UPDATE:
        expected_file.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert orjson.loads(expected_file.read_bytes()) == actual


def test_every_aggregation_flow_has_a_sequence() -> None:
    """Each of the four per-user aggregation flows has at least one golden sequence."""
    assert {"experience_at_risk", "frustration_traits", "health_score", "nps_follow_up"} == {
        c.parent.name for c in CASES
    }
