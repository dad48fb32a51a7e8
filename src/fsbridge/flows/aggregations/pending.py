"""Pending identifies (coalescing, Part 2), rendered when they are sent: a coalesced identify is
queued for the end of its flow's `min_interval` holding no values (`awaiting = 'coalesced'`); when
a delivery loop claims it, this renderer reads the user's state and renders the identify with the
values current then, carrying only what changed since the identify sent before it. If the values
went back to what was sent, or a deletion removed the user, it ends filtered with the reason."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from fsbridge.engine.enricher import Enriched
from fsbridge.flows.aggregations.outbox import Outbox
from fsbridge.flows.aggregations.state import UserState
from fsbridge.store import Delivery, IdentityClaim, IdentityConflict
from fsbridge.store.lookups import RenderedDelivery


class PendingStore(Protocol):
    async def user_states_of(self, keys: list[str]) -> dict[str, str | None]: ...
    async def record_rendered(
        self, rendered: list[RenderedDelivery], claims: list[IdentityClaim], now: float
    ) -> list[IdentityConflict]: ...


class PendingIdentifies:
    def __init__(self, store: PendingStore, segment_dry_run: bool) -> None:
        self.store = store
        self.segment_dry_run = segment_dry_run

    async def enrich(self, deliveries: list[Delivery]) -> tuple[list[Enriched], list[IdentityConflict]]:
        plans = {d.id: orjson.loads(d.body) for d in deliveries}
        states = await self.store.user_states_of(sorted({str(p["user_key"]) for p in plans.values()}))
        results = [self._render(d, plans[d.id], states.get(str(plans[d.id]["user_key"]))) for d in deliveries]
        rendered = [RenderedDelivery(r.delivery.id, r.delivery.body) for r in results if r.outcome == "ready"]
        if rendered:
            await self.store.record_rendered(rendered, [], 0.0)
        return results, []

    def _render(self, delivery: Delivery, plan: dict[str, Any], text: str | None) -> Enriched:
        if text is None:
            return Enriched(delivery, "filtered", "the user's state is gone (deleted, or expired)")
        flow, key = str(plan["coalesced"]), str(plan["user_key"])
        state = UserState.from_json(key, text)
        record = state.sync.get(flow)
        if record is not None and record.pending_id == delivery.message_id:
            values, base = record.pending, record.base
        elif record is not None and record.sent_id == delivery.message_id:
            values, base = record.sent, None  # moved to sent when its time came; its base is gone
        else:
            return Enriched(delivery, "filtered", "superseded: a later identify carries these traits")
        if values is None:
            return Enriched(delivery, "filtered", "unchanged: the values went back to what was last sent")
        traits = {k: v for k, v in values.items() if (base or {}).get(k) != v} if base is not None else values
        if not traits:
            return Enriched(delivery, "filtered", "unchanged: the values went back to what was last sent")
        out = Outbox(self.segment_dry_run)
        delivery.body = out.render(flow, "identify", state, {"traits": traits}, delivery.message_id, float(plan["due"]))
        delivery.awaiting = None
        return Enriched(delivery, "ready")
