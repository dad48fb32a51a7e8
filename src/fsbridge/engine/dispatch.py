"""Content-Based Router: a stored inbox event goes to every flow whose trigger it matches; each flow
filters, maps and renders it into a delivery for its destination. What a flow holds back is
recorded with the filter's reason; a rendering error becomes a dead letter with the reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from fsbridge.envelope import Envelope
from fsbridge.errors import MappingError
from fsbridge.flows.base import Flow, stable_message_id
from fsbridge.log import get_logger
from fsbridge.store import DispatchResult, FlowSkip, InboxEvent, NewDelivery

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DestinationLimits:
    dry_run: bool
    max_message_bytes: int | None


def envelope_of(event: InboxEvent) -> Envelope:
    return Envelope(
        event_id=event.id,
        source=event.source,
        stream=event.stream,
        kind=event.kind,
        dedup_key=event.dedup_key,
        received_at=event.received_at,
        payload=orjson.loads(event.body),
    )


class Router:
    def __init__(self, flows: Sequence[Flow], destinations: Mapping[str, DestinationLimits]) -> None:
        self.flows = tuple(flows)
        self.destinations = dict(destinations)

    def route(self, event: InboxEvent) -> DispatchResult:
        envelope = envelope_of(event)
        result = DispatchResult(event.id)
        for flow in self.flows:
            if not flow.trigger.matches(envelope):
                continue
            reason = flow.held_back_by(envelope)
            if reason is not None:
                result.filtered.append(FlowSkip(flow.name, reason))
                log.debug("flow.filtered", flow=flow.name, event_id=event.id, reason=reason)
                continue
            result.deliveries.append(self._render(flow, envelope))
        return result

    def _render(self, flow: Flow, envelope: Envelope) -> NewDelivery:
        destination = flow.target.destination
        limits = self.destinations[destination]
        message_id = stable_message_id(envelope, flow.name)
        try:
            body = flow.render(envelope)
        except MappingError as exc:
            log.warning("flow.mapping_failed", flow=flow.name, event_id=envelope.event_id, error=str(exc))
            return NewDelivery(flow.name, destination, message_id, orjson.dumps(envelope.payload), "dead", str(exc))
        if limits.max_message_bytes is not None and len(body) > limits.max_message_bytes:
            error = (
                f"the message is {len(body):,} bytes, over {destination}'s limit of "
                f"{limits.max_message_bytes:,} bytes a message"
            )
            log.warning("flow.message_too_large", flow=flow.name, event_id=envelope.event_id, bytes=len(body))
            return NewDelivery(flow.name, destination, message_id, body, "dead", error)
        return NewDelivery(flow.name, destination, message_id, body, "dry_run" if limits.dry_run else "pending")
