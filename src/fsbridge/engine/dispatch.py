"""Content-Based Router: a stored inbox event goes to every flow whose trigger it matches; each flow
filters, maps and renders it into a delivery for its destination. What a flow holds back is
recorded with the filter's reason; a rendering error becomes a dead letter with the reason."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import orjson

from fsbridge.engine.audiences import audience_changes
from fsbridge.engine.identity import IdentityRules
from fsbridge.envelope import Envelope, has_dotted_keys
from fsbridge.errors import MappingError
from fsbridge.flows.base import Flow, stable_message_id
from fsbridge.log import get_logger
from fsbridge.sources import segment
from fsbridge.store import DispatchResult, FlowSkip, InboxEvent, NewDelivery

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DestinationLimits:
    dry_run: bool
    max_message_bytes: int | None


def envelope_of(event: InboxEvent) -> Envelope:
    """The envelope of a stored event (its body was checked to be JSON at intake)."""
    payload = orjson.loads(event.body)
    return Envelope(
        event_id=event.id,
        source=event.source,
        stream=event.stream,
        kind=event.kind,
        dedup_key=event.dedup_key,
        received_at=event.received_at,
        payload=payload,
        dotted_keys=has_dotted_keys(payload),
    )


class Router:
    def __init__(
        self, flows: Sequence[Flow], destinations: Mapping[str, DestinationLimits], identity: IdentityRules
    ) -> None:
        self.flows = tuple(flows)
        self.destinations = dict(destinations)
        self.identity = identity

    def route(self, envelope: Envelope) -> DispatchResult:
        result = DispatchResult(envelope.event_id, received_at=envelope.received_at)
        if envelope.source == segment.SOURCE:
            result.claims.extend(self.identity.claims(envelope))
            result.groups.extend(self.identity.groups(envelope))
            user_id = self.identity.segment_user_id(envelope.payload)
            result.audiences.extend(audience_changes(envelope, user_id))
        for flow in self.flows:
            if not flow.trigger.matches(envelope):
                continue
            reason = flow.held_back_by(envelope)
            if reason is not None:
                result.filtered.append(FlowSkip(flow.name, reason))
                log.debug("flow.filtered", flow=flow.name, event_id=envelope.event_id, reason=reason)
                continue
            result.deliveries.append(self._render(flow, envelope))
        return result

    def _render(self, flow: Flow, envelope: Envelope) -> NewDelivery:
        destination = flow.target.destination
        limits = self.destinations[destination]
        message_id = stable_message_id(envelope, flow.name)
        action = flow.target.action
        try:
            body = flow.render(envelope, message_id)
        except MappingError as exc:
            log.warning("flow.mapping_failed", flow=flow.name, event_id=envelope.event_id, error=str(exc))
            payload = orjson.dumps(envelope.payload)
            return NewDelivery(flow.name, destination, message_id, payload, "dead", str(exc), action)
        if limits.max_message_bytes is not None and len(body) > limits.max_message_bytes:
            error = (
                f"the message is {len(body):,} bytes, over {destination}'s limit of "
                f"{limits.max_message_bytes:,} bytes a message"
            )
            log.warning("flow.message_too_large", flow=flow.name, event_id=envelope.event_id, bytes=len(body))
            return NewDelivery(flow.name, destination, message_id, body, "dead", error, action)
        scope = flow.target.scope_of(body) if flow.skip_unchanged else None
        return NewDelivery(
            flow.name,
            destination,
            message_id,
            body,
            "dry_run" if limits.dry_run else "pending",
            action=action,
            sync_scope=scope,
            content_hash=hashlib.sha256(body).hexdigest() if scope else None,
        )


def suppress_unchanged(results: list[DispatchResult], snapshots: Mapping[str, str]) -> list[DispatchResult]:
    """Turn deliveries identical to what was last delivered for their scope into filtered outcomes."""
    if not snapshots:
        return results
    kept_results = []
    for result in results:
        kept, skipped = [], list(result.filtered)
        for d in result.deliveries:
            if d.sync_scope is not None and snapshots.get(d.sync_scope) == d.content_hash:
                skipped.append(FlowSkip(d.flow, "unchanged: identical to the last successful sync"))
            else:
                kept.append(d)
        kept_results.append(replace(result, deliveries=kept, filtered=skipped))
    return kept_results
