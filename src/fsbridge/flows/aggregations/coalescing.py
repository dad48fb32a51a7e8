"""Coalescing (Part 2): a flow's traits are sent only when a value changed, and at most once per
user per `min_interval`. The first change may be sent at once; later changes inside the interval
wait in one pending identify, scheduled for the interval's end, whose values are replaced in place
by each later change, so one identify at the end carries the values current then. Each change
folded into a pending identify is an identify saved, counted per flow."""

from __future__ import annotations

from typing import Any

from fsbridge.flows.aggregations.outbox import Outbox, message_id
from fsbridge.flows.aggregations.state import UserState
from fsbridge.store.user_state import PendingUpdate


def sync(flow: str, state: UserState, values: dict[str, Any], min_interval: float, now: float, out: Outbox) -> None:
    """Send, schedule or fold this flow's current trait values for the user."""
    record = state.sync_of(flow)
    if record.pending is not None and record.pending_due is not None and record.pending_due <= now:
        # The pending identify's time has come: it is being sent (or was), with its values.
        record.sent, record.sent_at = record.pending, record.pending_due
        record.pending = record.pending_id = record.pending_due = None
    latest = record.pending if record.pending is not None else record.sent
    if latest == values:
        return  # nothing changed since what was (or will be) sent
    if record.pending_id is not None and values == record.sent:
        # Back to what was last sent: the pending identify would change nothing, so it is dropped.
        out.updates.append(PendingUpdate(record.pending_id, None, None))
        record.pending = record.pending_id = record.pending_due = None
        out.coalesced[flow] += 1
        return
    changed = {k: v for k, v in values.items() if (record.sent or {}).get(k) != v}
    if record.pending is not None and record.pending_id is not None and record.pending_due is not None:
        body = out.render(flow, "identify", state, {"traits": changed or values}, record.pending_id, now)
        fallback_due = now + min_interval
        fallback_id = message_id(flow, state.user_key, "identify", fallback_due)
        fallback_body = out.render(flow, "identify", state, {"traits": changed or values}, fallback_id, now)
        fallback = out.delivery(flow, "identify", fallback_body, fallback_id, not_before=fallback_due)
        out.updates.append(PendingUpdate(record.pending_id, body, fallback))
        record.pending = values
        out.coalesced[flow] += 1
        return
    if record.sent_at is None or now - record.sent_at >= min_interval:
        mid = message_id(flow, state.user_key, "identify", now)
        out.deliveries.append(
            out.delivery(flow, "identify", out.render(flow, "identify", state, {"traits": changed}, mid, now), mid)
        )
        record.sent, record.sent_at = values, now
        return
    due = record.sent_at + min_interval
    mid = message_id(flow, state.user_key, "identify", due)
    body = out.render(flow, "identify", state, {"traits": changed}, mid, now)
    out.deliveries.append(out.delivery(flow, "identify", body, mid, not_before=due))
    record.pending, record.pending_id, record.pending_due = values, mid, due
