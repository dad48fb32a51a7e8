"""What an event stage is: work done once per event, before the flows, whose result is written in
the dispatch transaction (identity links, memberships, profiles). A stage names the sources it
reads; `apply` adds to the event's result and answers whether the flows may still run."""

from __future__ import annotations

from typing import Protocol

from fsbridge.envelope import Envelope
from fsbridge.store import DispatchResult


class EventStage(Protocol):
    name: str
    sources: frozenset[str]

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        """Add this stage's part to `result`; False stops the event here (no later stage or flow runs)."""
        ...
