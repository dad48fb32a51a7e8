"""What the per-user aggregations decide in one transaction: the Segment messages to queue (each
with a stable messageId from the flow and what it is about), the pending coalesced identifies to
update in place, and how many identifies coalescing saved per flow."""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fsbridge.flows.aggregations.state import UserState
from fsbridge.flows.targets import TARGETS
from fsbridge.store import NewDelivery
from fsbridge.store.base import DeliveryStatus
from fsbridge.store.user_state import PendingUpdate


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_id(flow: str, *about: Any) -> str:
    digest = hashlib.sha256("\n".join([flow, *map(str, about)]).encode()).hexdigest()
    return f"fsb-{digest[:40]}"


@dataclass
class Outbox:
    segment_dry_run: bool
    deliveries: list[NewDelivery] = field(default_factory=list)
    updates: list[PendingUpdate] = field(default_factory=list)
    coalesced: collections.Counter[str] = field(default_factory=collections.Counter)
    event_id: str | None = None  # the inbound event being folded in (None: a job's tick)

    def _who(self, state: UserState) -> dict[str, Any]:
        return {"userId": state.user_id, "anonymousId": state.anonymous_id}

    def render(self, flow: str, kind: str, state: UserState, body: dict[str, Any], mid: str, at: float) -> bytes:
        target = TARGETS[f"segment.{kind}"]
        return target.render({**self._who(state), "timestamp": iso(at), **body}, mid)

    def delivery(self, flow: str, kind: str, body: bytes, mid: str, not_before: float | None = None) -> NewDelivery:
        status: DeliveryStatus = "dry_run" if self.segment_dry_run else "pending"
        return NewDelivery(
            flow, "segment", mid, body, status, action=kind, not_before=not_before, event_id=self.event_id
        )

    def track(
        self, flow: str, state: UserState, event: str, properties: dict[str, Any], at: float, *about: Any
    ) -> None:
        mid = message_id(flow, state.user_key, "track", event, *about)
        body = self.render(
            flow, "track", state, {"event": event, "properties": {**properties, "source": "fullstory"}}, mid, at
        )
        self.deliveries.append(self.delivery(flow, "track", body, mid))

    def identify(self, flow: str, state: UserState, traits: dict[str, Any], at: float, *about: Any) -> None:
        mid = message_id(flow, state.user_key, "identify", *about)
        body = self.render(flow, "identify", state, {"traits": traits}, mid, at)
        self.deliveries.append(self.delivery(flow, "identify", body, mid))
