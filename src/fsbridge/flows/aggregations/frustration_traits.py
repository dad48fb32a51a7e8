"""`flows.frustration_traits` (Part 2): identify traits `fullstory_rage_clicks_<window>`,
`fullstory_dead_clicks_<window>`, `fullstory_error_clicks_<window>` (the count of each signal in the
current window, aligned to multiples of it since the epoch) and `fullstory_last_frustration_at`,
sent only when a value changed and at most once per user per `min_interval` (coalesced)."""

from __future__ import annotations

from typing import Any, ClassVar

from fsbridge.config import FRUSTRATION_SIGNALS, FrustrationTraitsConfig
from fsbridge.flows.aggregations.coalescing import sync
from fsbridge.flows.aggregations.outbox import Outbox, iso
from fsbridge.flows.aggregations.state import UserState
from fsbridge.store import Signal

NAME = "frustration_traits"
TRAIT_OF = {"rage_click": "rage_clicks", "dead_click": "dead_clicks", "error_click": "error_clicks"}


def suffix(seconds: float) -> str:
    """How a window reads in a trait name: 7d, 12h, 30m, 45s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


class FrustrationTraits:
    name: ClassVar[str] = NAME

    def __init__(self, config: FrustrationTraitsConfig) -> None:
        self.config = config
        self.suffix = suffix(config.window)
        self.trait_of = tuple((kind, f"fullstory_{TRAIT_OF[kind]}_{self.suffix}") for kind in FRUSTRATION_SIGNALS)

    def on_signal(self, state: UserState, signal: Signal, out: Outbox) -> None:
        if signal.kind not in FRUSTRATION_SIGNALS:
            return
        start = (signal.at // self.config.window) * self.config.window
        if state.window_start != start:
            state.window_start, state.counts = start, {}
        state.counts[signal.kind] = state.counts.get(signal.kind, 0) + 1
        if state.last_frustration_at is None or signal.at > state.last_frustration_at:
            state.last_frustration_at = signal.at

    def values(self, state: UserState, now: float) -> dict[str, Any]:
        current = state.window_start is not None and state.window_start <= now < state.window_start + self.config.window
        counts = state.counts if current else {}
        values: dict[str, Any] = {trait: counts.get(kind, 0) for kind, trait in self.trait_of}
        if state.last_frustration_at is not None:
            values["fullstory_last_frustration_at"] = iso(state.last_frustration_at)
        return values

    def flush(self, state: UserState, now: float, out: Outbox, *, changed: bool) -> None:
        if changed:
            sync(NAME, state, self.values(state, now), self.config.min_interval, now, out)
