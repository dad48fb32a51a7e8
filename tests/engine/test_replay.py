"""Replay through a changed mapping renders as dispatch renders: the message-size limit and the
comparison with the last successful sync apply there too."""

from __future__ import annotations

import dataclasses
from typing import Any

from fsbridge.engine.replay import ReplayItem, replay_flow
from fsbridge.envelope import Envelope
from fsbridge.flows import Flow
from tests.conftest import RAGE_CLICK, Bridge


def flow_of(bridge: Bridge, name: str) -> Flow:
    return next(f for f in bridge.runtime.flows if f.name == name)


async def replay(bridge: Bridge, flow: Flow, *, apply: bool = True) -> list[ReplayItem]:
    async def unchanged(envelopes: list[Envelope]) -> list[Envelope]:
        return envelopes

    return await replay_flow(
        bridge.runtime.store,
        flow,
        0.0,
        resolve_identities=unchanged,
        apply=apply,
        limits=bridge.runtime.router.destinations[flow.target.destination],
        now=bridge.clock.now(),
    )


async def test_a_replayed_message_over_the_size_limit_is_an_error_not_enqueued(bridge: Bridge) -> None:
    """A click whose message would exceed Segment's 32 KiB is an error in the replay, and nothing is enqueued."""
    flow = flow_of(bridge, "frustration_to_segment_track")
    huge: dict[str, Any] = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": "x" * 40_000}}
    # Stored while the flow is off, so the replay is the first rendering of it.
    bridge.runtime.router.flows = tuple(f for f in bridge.runtime.router.flows if f is not flow)
    await bridge.post_stream(huge)
    await bridge.drain()
    [item] = await replay(bridge, flow)
    assert "error" == item.outcome
    assert "over segment's limit of 32,768 bytes" in item.detail
    assert [] == await bridge.runtime.store.list_deliveries(None, flow.name, 10)


async def test_a_replay_identical_to_the_last_sync_is_not_sent_again(bridge: Bridge) -> None:
    """An identify whose first sync died, and whose content a later identify synced, is not replayed."""
    flow = flow_of(bridge, "segment_identify_to_fullstory_user")
    assert flow.skip_unchanged
    identify = {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}
    bridge.upstream.script_next([400])
    await bridge.post_segment({**identify, "messageId": "first"})
    await bridge.drain()
    await bridge.post_segment({**identify, "messageId": "second"})
    await bridge.drain()
    assert 2 == len(bridge.upstream.fullstory("POST"))
    items = await replay(bridge, dataclasses.replace(flow))
    assert ["unchanged", "unchanged"] == [item.outcome for item in items]
    assert "identical to the last successful sync" in items[0].detail
    assert 0 == len(await bridge.runtime.store.list_deliveries("pending", None, 10))
