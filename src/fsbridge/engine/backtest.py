"""Backtest: a flow run over stored raw events as dispatch would run it (the same renderer, limits
and identity links), reading only: nothing is written, enqueued or sent, and no look-up is made in
Fullstory. It answers "what would this flow have sent?" before the flow is enabled."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fsbridge.engine.dispatch import envelope_of
from fsbridge.engine.flow import Flow
from fsbridge.engine.rendering import DestinationLimits, render_flow
from fsbridge.envelope import Envelope
from fsbridge.store.intake import InboxReads

Resolver = Callable[[list[Envelope]], Awaitable[list[Envelope]]]
EXAMPLES = 3


@dataclass
class Backtest:
    events: int = 0  # stored events the flow's trigger matches
    would_send: Counter[str] = field(default_factory=Counter)  # by event name (or action)
    held_back: Counter[str] = field(default_factory=Counter)  # by the filter that held events back
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)


async def backtest_flow(
    store: InboxReads, flow: Flow, since: float, *, resolve_identities: Resolver, limits: DestinationLimits, limit: int
) -> Backtest:
    result = Backtest()
    stored = [envelope_of(e) for e in await store.list_inbox(since, limit)]
    envelopes = await resolve_identities([e for e in stored if flow.trigger.matches(e)])
    for envelope in envelopes:
        result.events += 1
        rendering = render_flow(flow, envelope, limits)
        if rendering.held_back is not None:
            result.held_back[rendering.held_back.split(":", 1)[0]] += 1
        elif rendering.error is not None or rendering.body is None:
            result.errors[rendering.error or "nothing rendered"] += 1
        elif rendering.awaiting_lookups:  # a backtest asks nothing: it shows the plan
            record_example(result, "(after look-ups)", orjson.loads(rendering.body))
        else:
            message = orjson.loads(rendering.body)
            name = message.get("event") if isinstance(message, dict) else None
            record_example(result, str(name or flow.target.action), message)
    return result


def record_example(result: Backtest, label: str, message: Any) -> None:
    """Count a message the flow would send under `label`, keeping the first few as examples."""
    result.would_send[label] += 1
    if len(result.examples) < EXAMPLES:
        result.examples.append(message)
