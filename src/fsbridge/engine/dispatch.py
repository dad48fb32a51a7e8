"""Content-Based Router: a stored inbox event goes to every flow whose trigger it matches; each flow
filters, maps and renders it (through `engine.rendering`) into a delivery for its destination. What
a flow holds back is recorded with the filter's reason; a flow that fails on the event becomes a
dead letter of that flow with the reason, and the other flows and events go on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import orjson

from fsbridge.config import FeatureAdoptionConfig
from fsbridge.engine.flow import Flow
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.rendering import DestinationLimits, Rendering, render_flow
from fsbridge.engine.stages import EventStage, event_stages
from fsbridge.envelope import Envelope, has_dotted_keys
from fsbridge.log import get_logger
from fsbridge.store import DispatchResult, FlowSkip, InboxEvent, NewDelivery
from fsbridge.store.records import AWAITING_ENRICHMENT, UNRENDERED

log = get_logger(__name__)
OVERSIZED_EXCERPT_BYTES = 2048
DELETED_USER = "deleted: the user was deleted (a tombstone keeps anything more being sent about them)"


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
        self,
        flows: Sequence[Flow],
        destinations: Mapping[str, DestinationLimits],
        identity: IdentityRules,
        *,
        lookups_available: bool = False,
        signal_kinds: frozenset[str] = frozenset(),
        adoption: FeatureAdoptionConfig | None = None,
    ) -> None:
        self.flows = tuple(flows)
        self.destinations = dict(destinations)
        self.identity = identity
        # False without a Fullstory API key (or in dry-run): optional look-ups are skipped, and a
        # delivery that needs one is recorded as dry_run with its plan.
        self.lookups_available = lookups_available
        self.stages = event_stages(identity, signal_kinds, adoption)
        self._stages_of: dict[str, tuple[EventStage, ...]] = {}  # per source, so others skip the loop

    def route(self, envelope: Envelope, raw: bytes) -> DispatchResult:
        """The event stages (`engine/stages/`), then every flow's outcome for one event. A flow that
        fails on it becomes a dead letter of that flow; what a stage raises fails the event alone,
        and the worker counts it."""
        user_id = self.identity.named_user(envelope)  # recorded for event search
        result = DispatchResult(envelope.event_id, received_at=envelope.received_at, user_id=user_id)
        if envelope.user_deleted and envelope.kind != "delete":  # a repeated deletion request still runs
            result.filtered += [FlowSkip(f.name, DELETED_USER) for f in self.flows if f.trigger.matches(envelope)]
            return result
        stages = self._stages_of.get(envelope.source)
        if stages is None:
            stages = self._stages_of[envelope.source] = tuple(s for s in self.stages if envelope.source in s.sources)
        for stage in stages:
            if not stage.apply(envelope, result):
                return result
        for flow in self.flows:
            if not flow.trigger.matches(envelope):
                continue
            rendering = render_flow(
                flow, envelope, self.destinations[flow.target.destination], lookups_available=self.lookups_available
            )
            if rendering.held_back is not None:
                result.filtered.append(FlowSkip(flow.name, rendering.held_back))
                log.debug("flow.filtered", flow=flow.name, event_id=envelope.event_id, reason=rendering.held_back)
                continue
            result.deliveries.append(self._delivery(rendering, envelope, raw))
        return result

    def _delivery(self, rendering: Rendering, envelope: Envelope, raw: bytes) -> NewDelivery:
        flow = rendering.flow
        destination, action = flow.target.destination, flow.target.action
        if rendering.error is not None:
            log.warning("flow.mapping_failed", flow=flow.name, event_id=envelope.event_id, error=rendering.error)
            # The dead letter keeps what the flow could not turn into a message: its body, or the event.
            if rendering.body is not None:  # rendered, but over the size limit: no replay could send it
                # as it is, and the event is stored already: the dead letter keeps the message's start only.
                excerpt = rendering.body[:OVERSIZED_EXCERPT_BYTES]
                error = f"{rendering.error} (its first {len(excerpt):,} bytes are kept)"
                return NewDelivery(flow.name, destination, rendering.message_id, excerpt, "dead", error, UNRENDERED)
            # The stored bytes, not a re-serialisation: a payload may nest deeper than orjson writes.
            return NewDelivery(flow.name, destination, rendering.message_id, raw, "dead", rendering.error, UNRENDERED)
        assert rendering.body is not None
        dry_run = self.destinations[destination].dry_run
        if rendering.awaiting_lookups:
            return NewDelivery(
                flow.name,
                destination,
                rendering.message_id,
                rendering.body,
                "dry_run" if dry_run or not self.lookups_available else "pending",
                None if self.lookups_available else "look-ups need FSBRIDGE_FULLSTORY_API_KEY (dry run)",
                action,
                awaiting=AWAITING_ENRICHMENT,
                aggregate=rendering.aggregate,
            )
        return NewDelivery(
            flow.name,
            destination,
            rendering.message_id,
            rendering.body,
            "dry_run" if dry_run else "pending",
            action=action,
            sync_scope=rendering.sync_scope,
            content_hash=rendering.content_hash,
            aggregate=rendering.aggregate,
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
