"""Poison events: odd values and failing stages never stall the events stored beside them. Each good
event is delivered, each poison event ends as a dead letter or in quarantine with its reason, and
nothing stays undispatched."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsbridge.engine.dispatch import Router
from fsbridge.engine.mapping import Filter
from fsbridge.envelope import Envelope
from fsbridge.sources import fullstory, segment
from fsbridge.store import DispatchResult, NewInboxEvent
from tests.conftest import RAGE_CLICK, Bridge, start_bridge

POISON_EVENT_TIMES: list[Any] = [
    1795000000000000,  # microseconds
    1e20,
    "²",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-05:00",
]


def click(n: int, **event: Any) -> dict[str, Any]:
    payload = copy.deepcopy(RAGE_CLICK)
    payload["event"].update({"target_text": f"button {n}", **event})
    return payload


def nested(depth: int) -> bytes:
    return b'{"x":' * depth + b"1" + b"}" * depth


def stream_body(payload: dict[str, Any], *, deep_field: tuple[str, str] | None = None, depth: int = 0) -> bytes:
    """The payload as bytes; `deep_field` (object, key) replaced by JSON nested `depth` deep (past
    what orjson writes, so it is spliced in as text)."""
    if deep_field is None:
        return orjson.dumps(payload)
    outer, key = deep_field
    payload[outer][key] = "DEEP"
    return orjson.dumps(payload).replace(b'"DEEP"', nested(depth))


async def store_all(bridge: Bridge, bodies: list[tuple[str, bytes]]) -> list[str]:
    """Store raw bodies as intake would (source, body), all in the inbox before any dispatch."""
    store, now = bridge.runtime.store, bridge.clock.now()

    async def one(source: str, body: bytes) -> str:
        payload = orjson.loads(body)
        if source == segment.SOURCE:
            kind, key = segment.message_kind(payload)
            stream = ""
        else:
            kind, stream = fullstory.stream_kind(payload), "frustration"
            key = fullstory.body_dedup_key(f"{source}/{stream}", body)
        accepted = await store.accept(NewInboxEvent(source, stream, key, kind, body, now))
        return accepted.id

    return list(await asyncio.gather(*(one(source, body) for source, body in bodies)))


async def drain_with_retries(bridge: Bridge, rounds: int = 5) -> None:
    """Drain, letting the clock pass the dispatch retry wait between rounds (bounded)."""
    for _ in range(rounds):
        await bridge.drain()
        bridge.clock.advance(bridge.runtime.config.worker.dispatch_retry_seconds + 1)
        if (await bridge.runtime.store.undispatched()).events == 0:
            return


async def test_poison_values_stored_beside_good_events_never_stall_them(bridge: Bridge) -> None:
    """2,000 good clicks and one of each poison value, stored together: all good ones are delivered,
    every poison event ends dead-lettered or quarantined with a reason, undispatched returns to 0."""
    bridge.clock.advance(3600)  # received an hour after the moment the microseconds name
    good = [("fullstory_stream", stream_body(click(n))) for n in range(2000)]
    poison = [
        ("fullstory_stream", stream_body(click(10_000 + i, event_time=v))) for i, v in enumerate(POISON_EVENT_TIMES)
    ]
    poison.append(("fullstory_stream", stream_body(click(20_000), deep_field=("event", "target_text"), depth=300)))
    poison.append(("fullstory_stream", stream_body(click(20_001), deep_field=("session", "session_id"), depth=990)))
    identify = {
        "type": "identify",
        "userId": "u_dotnet",
        "messageId": "m-dotnet",
        "traits": {"seen": "0001-01-01T00:00:00+01:00"},
    }
    poison.append(("segment", orjson.dumps(identify)))
    good_ids = await store_all(bridge, good)
    poison_ids = await store_all(bridge, poison)

    await drain_with_retries(bridge)

    store = bridge.runtime.store
    assert (await store.undispatched()).events == 0
    sent = [
        m
        for request in bridge.upstream.requests
        if request.url.path == "/v1/batch"
        for m in orjson.loads(request.content)["batch"]
    ]
    assert {f"button {n}" for n in range(2000)} <= {m["properties"].get("element_text") for m in sent}
    for event_id in good_ids:
        story = await store.event_story(event_id)
        assert story is not None
        assert [d.status for d in story.deliveries] == ["delivered"]
    quarantined = {q.id: q for q in await store.list_quarantine(100)}
    for event_id in poison_ids:
        story = await store.event_story(event_id)
        if story is None:
            assert quarantined[event_id].error, "a quarantined poison event says why"
            continue
        for delivery in story.deliveries:
            assert delivery.status in ("delivered", "dead"), delivery
            if delivery.status == "dead":
                assert delivery.last_error
    # Odd timestamps fall back to the time received, as the frustration flow says.
    times = {m["properties"]["element_text"]: m["timestamp"] for m in sent}
    assert "2026-11-18T11:06:40.000+00:00" == times["button 10000"]  # microseconds read as such
    received = "2026-11-18T12:06:40.000+00:00"
    assert [received] * 4 == [times[f"button {10_001 + i}"] for i in range(4)]


async def test_a_stage_that_raises_on_one_event_dead_letters_that_event_alone(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter that raises on one event of a batch of 2,000: that event's delivery is a dead letter
    naming the stage and the exception; the other 1,999 are delivered."""
    router = bridge.runtime.router
    flow = router.flows[0]

    def raises_on_777(envelope: Envelope) -> bool:
        if envelope.get("event.target_text") == "button 777":
            raise ZeroDivisionError("boom")
        return True

    raising = Filter("raises_on_777", raises_on_777, lambda _: "never")
    monkeypatch.setattr(router, "flows", (dataclasses.replace(flow, when=(raising, *flow.when)), *router.flows[1:]))
    ids = await store_all(bridge, [("fullstory_stream", stream_body(click(n))) for n in range(2000)])
    await bridge.drain()
    dead = await bridge.runtime.store.list_deliveries("dead", None, 10)
    assert [d.inbox_id for d in dead] == [ids[777]]
    assert dead[0].last_error == "the flow failed at its when stage: ZeroDivisionError: boom"
    assert len(await bridge.runtime.store.list_deliveries("delivered", None, 1000)) == 1000
    assert (await bridge.runtime.store.stats())["by_flow"][flow.name]["delivered"] == 1999


async def test_an_event_that_cannot_be_routed_moves_to_quarantine_after_bounded_tries(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routing that raises outside any flow fails that event alone; after max_dispatch_attempts it is
    quarantined under its id with the reason, and can be replayed once routing works."""
    route = Router.route

    def failing(self: Router, envelope: Envelope, raw: bytes) -> DispatchResult:
        if envelope.get("event.target_text") == "button 3":
            raise RecursionError("maximum recursion depth exceeded")
        return route(self, envelope, raw)

    monkeypatch.setattr(Router, "route", failing)
    ids = await store_all(bridge, [("fullstory_stream", stream_body(click(n))) for n in range(5)])
    await bridge.drain()
    store = bridge.runtime.store
    assert (await store.undispatched()).events == 1
    assert len(await store.list_deliveries("delivered", None, 10)) == 4
    await drain_with_retries(bridge)
    assert (await store.undispatched()).events == 0
    [item] = await store.list_quarantine(10)
    assert item.id == ids[3]
    assert item.error == "routing failed 3 times: routing raised RecursionError: maximum recursion depth exceeded"
    stats = await store.stats()
    assert stats["by_source"]["fullstory_stream"]["received"] == 5
    assert stats["by_source"]["fullstory_stream"]["quarantined"] == 1

    monkeypatch.setattr(Router, "route", route)
    response = await bridge.client.post(f"/ops/api/quarantine/{item.id}/replay", headers=bridge.ops_headers())
    assert response.status_code == 202
    await bridge.drain()
    assert len(await store.list_deliveries("delivered", None, 10)) == 5


async def test_undispatched_events_and_their_age_are_visible(tmp_path: Path) -> None:
    """Stats, metrics, /readyz and the health monitor report events that wait too long to be routed."""
    bridge = await start_bridge(tmp_path)
    try:
        await store_all(bridge, [("fullstory_stream", stream_body(click(1)))])
        bridge.clock.advance(11 * 60)
        stats = (await bridge.client.get("/ops/api/stats", headers=bridge.ops_headers())).json()
        assert stats["undispatched"]["events"] == 1
        assert stats["undispatched"]["oldest_age_seconds"] == pytest.approx(660)
        metrics = (await bridge.client.get("/metrics", headers=bridge.ops_headers())).text
        assert "fsbridge_inbox_undispatched 1.0" in metrics
        assert "fsbridge_inbox_undispatched_oldest_age_seconds 660.0" in metrics
        bridge.runtime.worker.heartbeats = dict.fromkeys(
            ["dispatcher", *(f"deliver-{n}" for n in bridge.runtime.destinations)], bridge.clock.now()
        )
        ready = await bridge.client.get("/readyz")
        assert ready.status_code == 503
        assert any("not routed" in reason for reason in ready.json()["error"]["reasons"])
        assert "inbox: 1 events waiting to be routed" in await bridge.runtime.monitor.check_once()
        await bridge.drain()
        assert (await bridge.client.get("/readyz")).status_code == 200
        assert "Recovered: inbox: 0 events waiting to be routed" in await bridge.runtime.monitor.check_once()
    finally:
        await bridge.client.aclose()
        await bridge.runtime.stop()


async def test_a_message_fsbridge_sent_runs_no_flow(bridge: Bridge) -> None:
    """A Segment message with context.library.name fsbridge is stored and counted, and no flow runs
    on it: it is filtered as `sent by fsbridge`, claims no identity, and sends nothing."""
    message = {
        "type": "identify",
        "userId": "u_loop",
        "messageId": "fsb-loop",
        "traits": {"email": "loop@example.com"},
        "context": {"library": {"name": "fsbridge", "version": "0.1.0"}},
    }
    event_id = (await bridge.post_segment(message)).json()["id"]
    await bridge.drain()
    assert [] == bridge.upstream.fullstory("POST")
    story = await bridge.runtime.store.event_story(event_id)
    assert story is not None
    assert [("loop_guard", "sent by fsbridge")] == [(f.flow, f.reason) for f in story.filtered]
    assert [] == story.deliveries
    stats = await bridge.runtime.store.stats()
    assert 1 == stats["totals"]["filtered"]
    assert 0 == stats["identity"]["links"]


async def test_a_dead_letter_that_was_never_rendered_is_not_replayed_as_it_is(bridge: Bridge) -> None:
    """A flow that failed on an event leaves a dead letter holding the event, not a message: replaying
    it one by one answers 409 saying how to render it again, and a bulk replay leaves it."""
    router = bridge.runtime.router
    flow = next(f for f in router.flows if f.name == "frustration_to_segment_track")

    def raises(envelope: Envelope) -> bool:
        raise ValueError("odd")

    broken = dataclasses.replace(flow, when=(Filter("boom", raises, lambda _: ""),))
    router.flows = (broken, *(f for f in router.flows if f is not flow))
    await bridge.post_stream(click(1))
    await bridge.drain()
    [dead] = await bridge.runtime.store.list_deliveries("dead", flow.name, 10)
    response = await bridge.client.post(f"/ops/api/deliveries/{dead.id}/replay", headers=bridge.ops_headers())
    assert 409 == response.status_code
    assert "never_rendered" == response.json()["error"]["code"]
    assert "fsbridge replay --flow" in response.json()["error"]["message"]
    bulk = await bridge.client.post("/ops/api/deliveries/replay", json={"status": "dead"}, headers=bridge.ops_headers())
    assert {"replayed": 0} == bulk.json()
    assert [] == [r for r in bridge.upstream.requests if r.url.path == "/v1/batch"]
