"""`flows.nps_follow_up` (Part 2): on a user's health score, with hysteresis. Below
`suppress_below`: identify `nps_suppressed: true` and track `NPS Survey Suppressed`; below
`outreach_below`: track `Experience Outreach Requested` with the top contributions, once per drop;
back at `release_at` or more: identify `nps_suppressed: false`. Each transition is sent once."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from fsbridge.config import NpsFollowUpConfig
from fsbridge.flows.aggregations.outbox import Outbox, iso
from fsbridge.flows.aggregations.score import Score
from fsbridge.flows.aggregations.state import UserState

NAME = "nps_follow_up"
TOP_REASONS = 3


class NpsFollowUp:
    name: ClassVar[str] = NAME

    def __init__(self, config: NpsFollowUpConfig) -> None:
        self.config = config

    def flush(self, state: UserState, value: int, band: str, explain: Callable[[], Score], now: float,
              out: Outbox) -> None:  # fmt: skip
        config, cycle = self.config, state.nps_cycle
        if not state.nps_suppressed and value < config.suppress_below:
            state.nps_suppressed = True
            out.identify(NAME, state, {"nps_suppressed": True}, now, "suppressed", cycle)
            out.track(NAME, state, "NPS Survey Suppressed", {"score": value, "band": band}, now, "suppressed", cycle)
        if state.nps_suppressed and not state.nps_outreach and value < config.outreach_below:
            state.nps_outreach = True
            facts = {"score": value, "band": band}
            reasons = [
                {"signal": c.signal, "at": iso(c.at), "weight": c.weight, "value": round(c.value, 2)}
                for c in sorted(explain().contributions, key=lambda c: c.value, reverse=True)[:TOP_REASONS]
            ]
            out.track(
                NAME, state, "Experience Outreach Requested", {**facts, "reasons": reasons}, now, "outreach", cycle
            )
        if state.nps_suppressed and value >= config.release_at:
            state.nps_suppressed = state.nps_outreach = False
            out.identify(NAME, state, {"nps_suppressed": False}, now, "released", cycle)
            state.nps_cycle += 1
