"""The business flows. `build_flows(config)` returns the enabled ones, in a fixed order."""

from __future__ import annotations

from fsbridge.config import FsbridgeConfig
from fsbridge.flows.base import Flow
from fsbridge.flows.deletion import segment_delete_to_fullstory_user
from fsbridge.flows.frustration import frustration_to_segment_track
from fsbridge.flows.identify import segment_identify_to_fullstory_user


def build_flows(config: FsbridgeConfig) -> tuple[Flow, ...]:
    flows = config.flows
    enabled: list[Flow] = []
    if flows.frustration_to_segment_track.enabled:
        enabled.append(frustration_to_segment_track(flows.frustration_to_segment_track, config.identity))
    if flows.segment_identify_to_fullstory_user.enabled:
        enabled.append(segment_identify_to_fullstory_user(flows.segment_identify_to_fullstory_user, config.identity))
    if flows.segment_delete_to_fullstory_user.enabled:
        enabled.append(segment_delete_to_fullstory_user(config.identity))
    return tuple(enabled)


__all__ = ["Flow", "build_flows"]
