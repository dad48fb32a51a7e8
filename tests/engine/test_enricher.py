"""The enrich stage: a user flow's look-ups made when its delivery is sent, through the fullstory
guard (breaker, rate limit, parking), cached in the store and forgotten with the user; and the flow
language's checks on enrich steps."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fsbridge.config import FsbridgeConfig, parse_config
from fsbridge.errors import ConfigError
from tests.conftest import Bridge, start_bridge
from tests.fake_fullstory import FakeFullstory, session

NOW = 1_795_000_000.0

USER_FLOW = """
flows:
  session_url_to_segment: {enabled: false}
  order_with_replay:
    trigger: {source: segment, kinds: [track]}
    when: [{path: event, equals: Order Completed}]
    enrich:
      session:
        lookup: fullstory.latest_session
        with: {uid: {path: userId, cast: string}}
        required: REQUIRED
    when_enriched:
      - {name: has_replay, path: $enriched.session.url, exists: true}
    target: segment.track
    mapping:
      event: Order With Replay
      userId: {path: userId}
      properties:
        order_id: {path: properties.order_id}
        replay: {path: $enriched.session.url}
        replay_started: {path: $enriched.session.started_at}
"""


def user_flow(required: bool = True, **destinations: Any) -> FsbridgeConfig:
    config = parse_config(USER_FLOW.replace("REQUIRED", str(required).lower()))
    if destinations:
        config = config.model_copy(update={"destinations": config.destinations.model_validate(destinations)})
    return config


def order(n: int, user: str = "u_1") -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "userId": user, "messageId": f"o-{n}",
            "properties": {"order_id": f"A-{n}"}}  # fmt: skip


def sent(b: Bridge) -> list[dict[str, Any]]:
    return [m for m in b.upstream.messages() if m.get("event") == "Order With Replay"]


@pytest.fixture
async def fullstory() -> FakeFullstory:
    fake = FakeFullstory()
    for n in range(10):
        fake.sessions_by_uid[f"u_{n}"] = [session(n, NOW - 60)]
    return fake


@pytest.fixture
async def bridge(tmp_path: Path, fullstory: FakeFullstory) -> AsyncIterator[Bridge]:
    b = await start_bridge(tmp_path, fullstory, config=user_flow())
    yield b
    await b.client.aclose()
    await b.runtime.stop()


async def test_a_user_flow_reads_what_its_lookup_found(bridge: Bridge) -> None:
    """`$enriched.session.*` in the mapping carries the session the look-up found."""
    await bridge.post_segment(order(1))
    await bridge.drain()
    [message] = sent(bridge)
    assert {"order_id": "A-1", "replay": "https://app.fullstory.com/ui/o-1ABC/session/5557778531805533:1",
            "replay_started": "2026-11-18T11:05:40Z"} == message["properties"]  # fmt: skip
    [delivery] = await bridge.runtime.store.list_deliveries("delivered", "order_with_replay", 10)
    assert b'"Order With Replay"' in delivery.body  # the stored body is the message now, not the plan
    assert delivery.awaiting is None


async def test_an_open_breaker_holds_lookups_without_counting_attempts(
    bridge: Bridge, fullstory: FakeFullstory
) -> None:
    """While fullstory's breaker is open, waiting deliveries are held back (no attempt counted) until it closes."""
    breaker = bridge.runtime.worker.guards["fullstory"].breaker
    for _ in range(breaker.min_requests):
        breaker.record(False, bridge.clock.now())
    assert "OPEN" == breaker.state.name
    await bridge.post_segment(order(1))
    await bridge.drain()
    [held] = await bridge.runtime.store.list_deliveries("pending", "order_with_replay", 10)
    assert (0, "fullstory's circuit breaker is open") == (held.attempts, held.last_error)
    assert [] == fullstory.lookups("/sessions/v2")
    bridge.clock.advance(breaker.open_seconds + 1)
    await bridge.drain()
    assert 1 == len(sent(bridge))


async def test_lookups_spend_fullstorys_rate_limit(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """With fullstory limited to 1 request a second (burst 1), five users' look-ups take five seconds of the clock."""
    config = user_flow(fullstory={"rate_limit_per_second": 1, "burst": 1})
    b = await start_bridge(tmp_path, fullstory, config=config)
    try:
        for n in range(5):
            await b.post_segment(order(n, user=f"u_{n}"))
        seen = []
        for _ in range(6):
            await b.drain()
            seen.append(len(fullstory.lookups("/sessions/v2")))
            b.clock.advance(1)
        assert [1, 2, 3, 4, 5, 5] == seen
        assert 5 == len(sent(b))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_refused_lookup_parks_fullstory(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A look-up answered 401 parks the fullstory destination (the key is wrong); after resume it goes on."""
    fullstory.failures["/sessions/v2"] = [401]
    await bridge.post_segment(order(1))
    await bridge.drain()
    assert "fullstory" in bridge.runtime.worker.parked
    assert "fullstory" in await bridge.runtime.store.parked_destinations()
    await bridge.runtime.resume_destination("fullstory")
    bridge.clock.advance(120)
    await bridge.drain()
    assert 1 == len(sent(bridge))


async def test_an_optional_lookup_that_fails_is_left_out(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """required: false and a 503: the message is rendered without the answer (here: its when_enriched holds it back)."""
    fullstory.failures["/sessions/v2"] = [503]
    b = await start_bridge(tmp_path, fullstory, config=user_flow(required=False))
    try:
        await b.post_segment(order(1))
        await b.drain()
        [delivery] = await b.runtime.store.list_deliveries("filtered", "order_with_replay", 10)
        assert delivery.last_error is not None
        assert delivery.last_error.startswith("has_replay:")
        assert 0 == delivery.attempts
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_deletion_forgets_the_users_cached_lookups(bridge: Bridge, tmp_path: Path) -> None:
    """The look-up cache names users by a hash of their uid; a Segment deletion removes their entries."""
    await bridge.post_segment(order(1, user="u_1"))
    await bridge.post_segment(order(2, user="u_2"))
    await bridge.drain()

    def cached() -> int:
        with sqlite3.connect(tmp_path / "fsbridge.db") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM lookup_cache").fetchone()[0])

    assert 2 == cached()
    await bridge.post_segment({"type": "delete", "userId": "u_1", "messageId": "del-1"})
    await bridge.drain()
    assert 1 == cached()


async def test_replaying_a_dead_enriched_delivery_asks_again(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A delivery that died waiting for its look-up keeps its plan; replaying it makes the look-up again."""
    fullstory.down = httpx.ConnectError("down")
    await bridge.post_segment(order(1))
    await bridge.drain()
    for _ in range(40):
        bridge.clock.advance(3 * 3600)
        await bridge.drain()
    [dead] = await bridge.runtime.store.list_deliveries("dead", "order_with_replay", 10)
    assert dead.awaiting == "enrich"
    fullstory.down = None
    bridge.runtime.worker.guards["fullstory"].breaker.record(True, bridge.clock.now())
    bridge.clock.advance(3600)
    response = await bridge.client.post(f"/ops/api/deliveries/{dead.id}/replay", headers=bridge.ops_headers())
    assert 202 == response.status_code
    await bridge.drain()
    assert 1 == len(sent(bridge))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("lookup: fullstory.latest_session", "unknown look-up 'fullstory.nope'"),
        ("with: {uid: {path: userId, cast: string}}", "unknown argument 'colour'"),
        ("replay: {path: $enriched.session.url}", "'$enriched.sesion.url' reads enrich step 'sesion'"),
    ],
)
def test_enrich_mistakes_are_located(change: str, message: str) -> None:
    """An unknown look-up, an argument it does not take, or a read of a step the flow lacks: check-config says where."""
    wrong = {
        "lookup: fullstory.latest_session": "lookup: fullstory.nope",
        "with: {uid: {path: userId, cast: string}}": "with: {colour: {path: userId}}",
        "replay: {path: $enriched.session.url}": "replay: {path: $enriched.sesion.url}",
    }[change]
    text = USER_FLOW.replace("REQUIRED", "true").replace(change, wrong)
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "f.yaml")
    assert any(message in problem and problem.startswith("f.yaml:") for problem in raised.value.problems)


def aggregated_flow(key: str = "{path: userId}") -> str:
    return USER_FLOW.replace("REQUIRED", "true").replace(
        "    target: segment.track", f"    aggregate: {{key: {key}, threshold: 3}}\n    target: segment.track"
    )


async def test_a_flow_that_aggregates_looks_up_only_for_the_event_that_crosses(
    tmp_path: Path, fullstory: FakeFullstory
) -> None:
    """enrich + aggregate: the count is decided at dispatch; only the third order waits for a look-up,
    sent once with what it found; a fourth order and a redelivered third send nothing more."""
    b = await start_bridge(tmp_path, fullstory, config=parse_config(aggregated_flow()))
    try:
        for n in range(1, 4):
            await b.post_segment(order(n))
        await b.post_segment(order(3))  # redelivered: a duplicate, counted nowhere
        await b.drain()
        [message] = sent(b)
        assert "https://app.fullstory.com/ui/o-1ABC/session/5557778531805533:1" == message["properties"]["replay"]
        assert 1 == len(fullstory.lookups("/sessions/v2"))
        await b.post_segment(order(4))
        await b.drain()
        assert 1 == len(sent(b))
        assert 1 == len(fullstory.lookups("/sessions/v2"))
        [delivery] = await b.runtime.store.list_deliveries("delivered", "order_with_replay", 10)
        assert delivery.message_id == message["messageId"]  # the aggregate's id: (flow, key, window)
        reasons = [
            skip.reason
            for d in await b.runtime.store.list_inbox(0, 10)
            if (story := await b.runtime.store.event_story(d.id)) is not None
            for skip in story.filtered
        ]
        assert sorted(reasons) == sorted(
            ["aggregate: 1 of 3, below the threshold", "aggregate: 2 of 3, below the threshold",
             "aggregate: 4 of 3, already reached the threshold"]
        )  # fmt: skip
    finally:
        await b.client.aclose()
        await b.runtime.stop()


def test_an_aggregate_key_cannot_read_what_lookups_find() -> None:
    """An aggregate key that reads $enriched is refused with its place: it is decided before any look-up."""
    with pytest.raises(ConfigError) as raised:
        parse_config(aggregated_flow("{path: $enriched.session.url}"), "f.yaml")
    assert any("its key cannot read $enriched" in p and p.startswith("f.yaml:") for p in raised.value.problems)


async def test_a_refused_lookup_ends_the_delivery_filtered_with_why(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A look-up Fullstory refuses for good (400) is not retried: the delivery ends filtered, saying so."""
    fullstory.failures["/sessions/v2"] = [400]
    await bridge.post_segment(order(1))
    await bridge.drain()
    [delivery] = await bridge.runtime.store.list_deliveries("filtered", "order_with_replay", 10)
    assert ("Fullstory refused the request (400)", 0) == (delivery.last_error, delivery.attempts)
    assert 1 == len(fullstory.lookups("/sessions/v2"))
