"""What operators read about one user: the profile, links, memberships, the health score with every
contribution and the at-risk state, and the user's latest events and deliveries, for
`GET /ops/api/users/{user_id}`, the dashboard's user page and `fsbridge score explain USER_ID`
alike, so all show the same numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from fsbridge.envelope import Envelope, has_dotted_keys
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


USER_ACTIVITY = 50  # the newest events and deliveries a user's page lists
USER_DELIVERY_FIELDS = ("id", "event_id", "flow", "destination", "status", "attempts", "last_status_code",
                        "last_error", "created_at", "next_attempt_at")  # fmt: skip


async def user_record_json(runtime: Runtime, user_id: str) -> dict[str, Any] | None:
    """Everything fsbridge holds about one Segment user, as the ops API answers it; None: nothing."""
    record = await runtime.store.user_record(user_id)
    explained = await explain_user(runtime, user_id)
    if record is None and explained is None:
        return None
    rules = runtime.router.identity
    uid = rules.fullstory_uid(user_id)

    def about(source: str, kind: str, body: bytes) -> bool:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        envelope = Envelope("", source, "", kind, "", 0.0, payload, dotted_keys=has_dotted_keys(payload))
        return rules.named_user(envelope) in (user_id, uid)

    events, deliveries = await runtime.store.user_activity([user_id, uid], USER_ACTIVITY, about)
    score = {k: v for k, v in explained.items() if k not in ("at_risk", "nps_suppressed")} if explained else None
    return {
        "user_id": user_id,
        "profile": {
            "traits": record.traits if record else {},
            "group_id": record.group_id if record else None,
            "updated_at": record.updated_at if record else None,
        },
        "identity_links": record.identity_links if record else [],
        "audiences": record.audiences if record else {},
        "groups": record.groups if record else [],
        "score": score,
        "at_risk": explained["at_risk"] if explained else None,
        "nps_suppressed": explained["nps_suppressed"] if explained else None,
        "events": [dict(zip(("id", "source", "stream", "kind", "received_at"), e, strict=True)) for e in events],
        "deliveries": [dict(zip(USER_DELIVERY_FIELDS, d, strict=True)) for d in deliveries],
    }
