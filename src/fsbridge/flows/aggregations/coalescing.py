"""Coalescing (Part 2): a flow's traits are sent only when a value changed, and at most once per
user per `min_interval`. The first change may be sent at once; a later change inside the interval
queues one identify for the interval's end that holds no values yet (`awaiting = 'coalesced'`):
further changes only update the user's state, and the identify is rendered when it is sent
(`pending.py`), from the values current then, in one transaction with the state it moves to
`sent`. A change that waits in an identify already queued
is an identify saved, counted per flow; so is a pending identify dropped because the values went
back to what was last sent."""

from __future__ import annotations

from typing import Any

import orjson

from fsbridge.flows.aggregations.outbox import Outbox, message_id
from fsbridge.flows.aggregations.state import UserState

AWAITING = "coalesced"


def sync(flow: str, state: UserState, values: dict[str, Any], min_interval: float, now: float, out: Outbox) -> None:
    """Send, schedule or fold this flow's current trait values for the user."""
    record = state.sync_of(flow)
    if record["pending_id"] is not None:
        # An identify is queued and not rendered yet (rendering moves its values to `sent`, in the
        # same transaction): it will carry these values.
        if values != record["pending"]:
            out.coalesced[flow] += 1  # folded into the identify already queued
        record["pending"] = None if values == record["sent"] else values  # None: it will send nothing
        return
    sent, sent_at = record["sent"], record["sent_at"]
    if values == sent:
        return  # nothing changed since what was sent
    if sent_at is None or now - sent_at >= min_interval:
        changed = {k: v for k, v in values.items() if (sent or {}).get(k) != v}
        mid = message_id(flow, state.user_key, "identify", now)
        body = out.render(flow, "identify", state, {"traits": changed}, mid, now)
        out.deliveries.append(out.delivery(flow, "identify", body, mid))
        record["sent"], record["sent_at"] = values, now
        return
    due = sent_at + min_interval
    mid = message_id(flow, state.user_key, "identify", due)
    plan = orjson.dumps({"coalesced": flow, "user_key": state.user_key, "due": due})
    out.deliveries.append(out.delivery(flow, "identify", plan, mid, not_before=due, awaiting=AWAITING))
    record["pending"], record["pending_id"], record["pending_due"] = values, mid, due
