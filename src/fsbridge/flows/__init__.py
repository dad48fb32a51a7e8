"""The business flows. `build_flows(config)` returns the enabled ones, in a fixed order."""

from __future__ import annotations

from fsbridge.config import FsbridgeConfig
from fsbridge.flows.base import Flow
from fsbridge.flows.frustration import frustration_to_segment_track


def build_flows(config: FsbridgeConfig) -> tuple[Flow, ...]:
    flows: list[Flow] = []
    if config.flows.frustration_to_segment_track.enabled:
        flows.append(frustration_to_segment_track(config.flows.frustration_to_segment_track))
    return tuple(flows)


__all__ = ["Flow", "build_flows"]
