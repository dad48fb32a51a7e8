"""Replay through a changed mapping: stored raw events are run again through the current flow, and
what would be sent is compared with what was sent. With `apply`, each changed or new message is
enqueued under a new stable id (derived from the event, the flow and the new content, so replaying
the same change twice enqueues nothing more)."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson

from fsbridge.engine.dispatch import envelope_of
from fsbridge.engine.flow import Flow
from fsbridge.engine.rendering import DestinationLimits, render_flow
from fsbridge.envelope import Envelope
from fsbridge.store import DispatchResult, NewDelivery
from fsbridge.store.deliveries import DeadLetterStore
from fsbridge.store.dispatch import DispatchStore
from fsbridge.store.intake import InboxReads
from fsbridge.store.records import AWAITING_ENRICHMENT, DeliveryStatus

Outcome = Literal["unchanged", "changed", "new", "now_filtered", "still_filtered", "error"]
Resolver = Callable[[list[Envelope]], Awaitable[list[Envelope]]]


@dataclass
class ReplayItem:
    event_id: str
    outcome: Outcome
    detail: str = ""
    diff: list[str] = field(default_factory=list)


def replay_id(flow: Flow, source: str, dedup_key: str, body: bytes) -> str:
    content = hashlib.sha256(body).hexdigest()
    digest = hashlib.sha256(f"{source}\n{dedup_key}\n{flow.name}\nreplay\n{content}".encode()).hexdigest()
    return f"fsb-{digest[:40]}"


def _comparable(body: bytes, flow: Flow) -> str:
    message = orjson.loads(body)
    if isinstance(message, dict) and flow.target.id_field:
        message.pop(flow.target.id_field, None)
    return json.dumps(message, indent=2, sort_keys=True, ensure_ascii=False)


class ReplayStore(InboxReads, DeadLetterStore, DispatchStore, Protocol):
    """What replay reads (stored events, what was sent) and writes (the new deliveries)."""


async def replay_flow(
    store: ReplayStore,
    flow: Flow,
    since: float,
    *,
    resolve_identities: Resolver,
    apply: bool,
    limits: DestinationLimits,
    now: float,
    limit: int = 10_000,
) -> list[ReplayItem]:
    """Compare what `flow` would send now for events received since `since` with what it sent.
    Each message is rendered as dispatch renders it (`engine.rendering`): the same filters, size
    limit and, for flows that skip unchanged updates, the same comparison with the last sync."""
    events = [e for e in await store.list_inbox(since, limit) if flow.trigger.matches(envelope_of(e))]
    envelopes = await resolve_identities([envelope_of(e) for e in events])
    previous = await store.deliveries_for_events([e.id for e in events], flow.name)
    drafts = [render_flow(flow, envelope, limits, message_id="draft") for envelope in envelopes]
    snapshots = await store.sync_snapshots([d.sync_scope for d in drafts if d.sync_scope is not None])
    items: list[ReplayItem] = []
    enqueue: list[DispatchResult] = []
    for event, envelope, draft in zip(events, envelopes, drafts, strict=True):
        old = previous.get(event.id)
        if draft.held_back is not None:
            items.append(ReplayItem(event.id, "now_filtered" if old else "still_filtered", draft.held_back))
            continue
        if draft.error is not None or draft.body is None:
            items.append(ReplayItem(event.id, "error", draft.error or "nothing rendered"))
            continue
        if draft.sync_scope is not None and snapshots.get(draft.sync_scope) == draft.content_hash:
            items.append(ReplayItem(event.id, "unchanged", "identical to the last successful sync"))
            continue
        new_text = _comparable(draft.body, flow)
        if old is not None and old.status != "dead":
            old_text = _comparable(old.body, flow)
            if old_text == new_text:
                items.append(ReplayItem(event.id, "unchanged"))
                continue
            diff = difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), "sent", "would send", lineterm="")
            items.append(ReplayItem(event.id, "changed", diff=list(diff)))
        else:
            items.append(ReplayItem(event.id, "new", diff=[f"+{line}" for line in new_text.splitlines()]))
        if apply:
            message_id = replay_id(flow, event.source, event.dedup_key, draft.body)
            final = render_flow(flow, envelope, limits, message_id=message_id)
            if final.body is None or final.error is not None:
                continue
            status: DeliveryStatus = "dry_run" if limits.dry_run else "pending"
            delivery = NewDelivery(
                flow.name,
                flow.target.destination,
                message_id,
                final.body,
                status,
                action=flow.target.action,
                sync_scope=final.sync_scope,
                content_hash=final.content_hash,
                # A flow that enriches shows (and queues) its plan: the look-ups happen when it is sent.
                awaiting=AWAITING_ENRICHMENT if final.awaiting_lookups else None,
            )
            enqueue.append(DispatchResult(event.id, deliveries=[delivery]))
    if enqueue:
        await store.record_dispatch(enqueue, now)
    return items
