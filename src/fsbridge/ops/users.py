"""What operators read about one user's aggregations (Part 2): the health score with every
contribution, and the at-risk state, for `GET /ops/api/users/{user_id}` and
`fsbridge score explain USER_ID` alike, so both show the same numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsbridge.flows.aggregations.outbox import iso

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime


def user_key(user_id: str) -> str:
    """A user as the aggregations name it: `a:<anonymousId>` as given, else `u:<userId>`."""
    return user_id if user_id.startswith("a:") else f"u:{user_id}"


async def explain_user(runtime: Runtime, user_id: str) -> dict[str, Any] | None:
    """The user's score now, its contributions (newest first) and band; None when nothing is kept."""
    if runtime.aggregations.health is None:
        return None
    text = await runtime.store.user_state(user_key(user_id))
    if text is None:
        return None
    state, score = runtime.aggregations.explain(text, user_key(user_id), runtime.clock.now())
    if score is None:
        return None
    contributions = [
        {"signal": c.signal, "at": iso(c.at), "weight": c.weight, "value": round(c.value, 4)}
        for c in score.contributions
    ]
    return {
        "score": score.value,
        "band": score.band,
        "total": round(score.total, 4),
        "half_life_seconds": runtime.config.flows.health_score.half_life,
        "contributions": contributions,
        "at_risk": {
            "at_risk": state.at_risk,
            "since": iso(state.at_risk_since) if state.at_risk_since else None,
            "last_at_risk_session_at": iso(state.last_at_risk_at) if state.last_at_risk_at else None,
        },
        "nps_suppressed": state.nps_suppressed,
    }
