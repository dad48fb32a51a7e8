"""`flows.experience_at_risk` (Part 2): when one session of a user reaches `threshold` counted
signals, one track `Experience At Risk` and one identify `experience_at_risk: true` (with
`experience_at_risk_since`), once per session; when `recover_after` has passed since the user's
last at-risk session (checked by the `experience_recovery` job), one track `Experience Recovered`
and one identify `experience_at_risk: false`."""

from __future__ import annotations

from typing import ClassVar

from fsbridge.config import ExperienceAtRiskConfig
from fsbridge.flows.aggregations.outbox import Outbox, iso
from fsbridge.flows.aggregations.state import UserState
from fsbridge.store import Signal

NAME = "experience_at_risk"


class ExperienceAtRisk:
    name: ClassVar[str] = NAME

    def __init__(self, config: ExperienceAtRiskConfig) -> None:
        self.config = config
        self.signals = frozenset(config.signals)

    def on_signal(self, state: UserState, signal: Signal, out: Outbox) -> bool:
        """Count the signal in its session; True when this signal put the session at risk."""
        if signal.kind not in self.signals or signal.session_id is None:
            return False
        counted = state.sessions.setdefault(signal.session_id, [0, signal.at, 0, signal.at])
        counted[0] += 1
        counted[3] = signal.at
        state.keep_recent_sessions()
        if counted[2] or counted[0] < self.config.threshold:
            return False
        counted[2] = 1  # once per session: a fourth signal sends nothing more
        if not state.at_risk:
            state.at_risk, state.at_risk_since = True, signal.at
        state.last_at_risk_at = signal.at
        properties = {
            "session_id": signal.session_id,
            "session_url": signal.session_url,
            "signal_count": counted[0],
            "threshold": self.config.threshold,
            "first_signal_at": iso(counted[1]),
        }
        out.track(NAME, state, "Experience At Risk", properties, signal.at, signal.session_id)
        since = state.at_risk_since if state.at_risk_since is not None else signal.at
        traits = {"experience_at_risk": True, "experience_at_risk_since": iso(since)}
        out.identify(NAME, state, traits, signal.at, "at_risk", signal.session_id)
        return True

    def tick(self, state: UserState, now: float, out: Outbox) -> None:
        """Recovery: no at-risk session for `recover_after`."""
        last = state.last_at_risk_at
        if not state.at_risk or last is None or now - last < self.config.recover_after:
            return
        since = state.at_risk_since
        state.at_risk = False
        state.at_risk_since = None
        out.track(NAME, state, "Experience Recovered", {"at_risk_since": iso(since or last)}, now, "recovered", since)
        out.identify(NAME, state, {"experience_at_risk": False}, now, "recovered", since)
