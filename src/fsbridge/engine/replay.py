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
from typing import Literal

import orjson

from fsbridge.engine.dispatch import envelope_of
from fsbridge.engine.mapping import resolve
from fsbridge.envelope import Envelope
from fsbridge.errors import MappingError
from fsbridge.flows.base import Flow
from fsbridge.store import DispatchResult, NewDelivery, Store
from fsbridge.store.base import DeliveryStatus

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


async def replay_flow(
    store: Store,
    flow: Flow,
    since: float,
    *,
    resolve_identities: Resolver,
    apply: bool,
    dry_run: bool,
    now: float,
    limit: int = 10_000,
) -> list[ReplayItem]:
    """Compare what `flow` would send now for events received since `since` with what it sent."""
    events = [e for e in await store.list_inbox(since, limit) if flow.trigger.matches(envelope_of(e))]
    envelopes = await resolve_identities([envelope_of(e) for e in events])
    previous = await store.deliveries_for_events([e.id for e in events], flow.name)
    items: list[ReplayItem] = []
    enqueue: list[DispatchResult] = []
    for event, envelope in zip(events, envelopes, strict=True):
        old = previous.get(event.id)
        reason = flow.held_back_by(envelope)
        if reason is not None:
            items.append(ReplayItem(event.id, "now_filtered" if old else "still_filtered", reason))
            continue
        output = resolve(flow.mapping, envelope)
        try:
            draft = flow.target.render(output, "draft")
        except MappingError as exc:
            items.append(ReplayItem(event.id, "error", str(exc)))
            continue
        new_text = _comparable(draft, flow)
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
            message_id = replay_id(flow, event.source, event.dedup_key, draft)
            body = flow.target.render(output, message_id)
            status: DeliveryStatus = "dry_run" if dry_run else "pending"
            delivery = NewDelivery(
                flow.name, flow.target.destination, message_id, body, status, action=flow.target.action
            )
            enqueue.append(DispatchResult(event.id, deliveries=[delivery]))
    if enqueue:
        await store.record_dispatch(enqueue, now)
    return items
