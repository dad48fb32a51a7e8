"""Pending identifies (coalescing, Part 2), rendered when they are sent: a coalesced identify is
queued for the end of its flow's `min_interval` holding no values (`awaiting = 'coalesced'`). When
a delivery loop claims it, the store runs `render_pending` inside one write transaction: it reads
the user's state, renders the identify with the values current then (only what changed since the
last identify sent), and moves them to `sent` in the state, so a change dispatched meanwhile is
either in this identify or in the next, never lost. If the values went back to what was sent, a
later identify superseded it, or a deletion removed the user, it ends filtered with the reason."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from fsbridge.engine.enricher import Enriched
from fsbridge.flows.aggregations.outbox import Outbox
from fsbridge.flows.aggregations.state import UserState
from fsbridge.store import Delivery, IdentityConflict


class PendingStore(Protocol):
    async def render_pending(self, deliveries: list[Delivery], renderer: PendingRenderer) -> list[Enriched]: ...


class PendingRenderer:
    """Renders claimed coalesced identifies against their users' states (no store of its own:
    the store calls it inside its transaction, and a backtest on states held in memory)."""

    def __init__(self, segment_dry_run: bool) -> None:
        self.segment_dry_run = segment_dry_run

    @staticmethod
    def user_key(delivery: Delivery) -> str:
        return str(orjson.loads(delivery.body)["user_key"])

    def render(self, delivery: Delivery, text: str | None) -> tuple[Enriched, str | None]:
        """The outcome for one claimed identify, and the user's new state (None: unchanged)."""
        plan: dict[str, Any] = orjson.loads(delivery.body)
        if text is None:
            return Enriched(delivery, "filtered", "the user's state is gone (deleted, or expired)"), None
        flow = str(plan["coalesced"])
        state = UserState.from_json(str(plan["user_key"]), text)
        record = state.sync.get(flow)
        if record is None or record["pending_id"] != delivery.message_id:
            return Enriched(delivery, "filtered", "superseded: a later identify carries these traits"), None
        values = record["pending"]
        record["pending"] = record["pending_id"] = record["pending_due"] = None
        traits = {k: v for k, v in (values or {}).items() if (record["sent"] or {}).get(k) != v}
        if not traits:
            reason = "unchanged: the values went back to what was last sent"
            return Enriched(delivery, "filtered", reason), state.to_json()
        due = float(plan["due"])
        delivery.body = Outbox(self.segment_dry_run).render(
            flow, "identify", state, {"traits": traits}, delivery.message_id, due
        )
        delivery.awaiting = None
        record["sent"], record["sent_at"] = values, due
        return Enriched(delivery, "ready"), state.to_json()


class PendingIdentifies(PendingRenderer):
    """The delivery loop's enricher for coalesced identifies: the store renders them in one transaction."""

    def __init__(self, store: PendingStore, segment_dry_run: bool) -> None:
        super().__init__(segment_dry_run)
        self.store = store

    async def enrich(self, deliveries: list[Delivery]) -> tuple[list[Enriched], list[IdentityConflict]]:
        return await self.store.render_pending(deliveries, self), []
