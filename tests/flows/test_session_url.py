"""session_url_to_segment: CRM and support tracks get the user's latest Fullstory session, looked up
when the delivery is sent, through the fullstory guard and the look-up cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fsbridge.config import FsbridgeConfig
from tests.conftest import Bridge, start_bridge
from tests.fake_fullstory import FakeFullstory, session

NOW = 1_795_000_000.0  # the FrozenClock's start
DAY = 86400.0


def opportunity(n: int = 1, user_id: str | None = "u_1842", **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "event": "Opportunity Created",
        "messageId": f"crm-{n}",
        "properties": {"opportunity_id": f"006-{n}", "amount": 100, "stage": "Prospecting"},
        **extra,
    }
    if user_id is not None:
        message["userId"] = user_id
    return message


def linked(b: Bridge) -> list[dict[str, Any]]:
    return [m for m in b.upstream.messages() if m.get("event") == "Fullstory Session Linked"]


@pytest.fixture
async def fullstory() -> FakeFullstory:
    return FakeFullstory()


@pytest.fixture
async def bridge(tmp_path: Path, fullstory: FakeFullstory) -> AsyncIterator[Bridge]:
    b = await start_bridge(tmp_path, fullstory)
    yield b
    await b.client.aclose()
    await b.runtime.stop()


async def test_the_most_recent_session_is_linked(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """Of several sessions in any order and createdTime form, the newest is linked, with the trigger's properties."""
    fullstory.sessions_by_uid["u_1842"] = [
        session(1, str(int(NOW - 3 * DAY))),
        session(2, "2026-11-18T10:00:00Z"),  # NOW - 13h20m: the newest
        session(3, int(NOW - DAY)),
    ]
    await bridge.post_segment(opportunity())
    await bridge.drain()
    [track] = linked(bridge)
    assert "u_1842" == track["userId"]
    assert {
        "session_url": "https://app.fullstory.com/ui/o-1ABC/session/5557778531805533:2",
        "session_id": "5557778531805533:2",
        "session_started_at": "2026-11-18T10:00:00Z",
        "trigger_event": "Opportunity Created",
        "trigger_message_id": "crm-1",
        "opportunity_id": "006-1",
        "stage": "Prospecting",
        "source": "fullstory",
    } == track["properties"]
    [request] = fullstory.lookups("/sessions/v2")
    assert {"uid": "u_1842", "limit": "20"} == dict(request.url.params)
    assert f"Basic {'na1.fullstory-api-key'}" == request.headers["Authorization"]


async def test_without_a_user_id_the_email_is_asked(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A trigger with only an email (context.traits.email) is looked up by it, and linked for its anonymousId."""
    fullstory.sessions_by_email["ada@example.com"] = [session(9, NOW - 60)]
    await bridge.post_segment(
        opportunity(user_id=None, anonymousId="anon-1", context={"traits": {"email": " Ada@Example.com"}})
    )
    await bridge.drain()
    [track] = linked(bridge)
    assert (None, "anon-1") == (track["userId"], track["anonymousId"])
    assert {"email": "ada@example.com", "limit": "20"} == dict(fullstory.lookups("/sessions/v2")[0].url.params)


@pytest.mark.parametrize("sessions", [[], [session(1, NOW - 31 * DAY)]], ids=["none", "only_older_than_30d"])
async def test_no_recent_session_is_a_filtered_outcome(
    bridge: Bridge, fullstory: FakeFullstory, sessions: list[dict[str, Any]]
) -> None:
    """No session, or only ones older than max_session_age: nothing is sent; the delivery ends filtered, with why."""
    fullstory.sessions_by_uid["u_1842"] = sessions
    event_id = (await bridge.post_segment(opportunity())).json()["id"]
    await bridge.drain()
    assert [] == linked(bridge)
    story = (await bridge.client.get(f"/ops/api/events/{event_id}", headers=bridge.ops_headers())).json()
    [delivery] = [d for d in story["deliveries"] if d["flow"] == "session_url_to_segment"]
    assert ("filtered", "no recent Fullstory session") == (delivery["status"], delivery["last_error"])
    stats = (await bridge.client.get("/ops/api/stats", headers=bridge.ops_headers())).json()
    assert 1 == stats["by_flow"]["session_url_to_segment"]["filtered"]
    assert "filtered" not in stats["by_destination"].get("segment", {})  # the flow's outcome, not Segment's


async def test_503_then_200_is_delivered_once(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A look-up answered 503 delays the delivery (a failed attempt); the retry links it, and Segment gets it once."""
    fullstory.sessions_by_uid["u_1842"] = [session(1, NOW - 60)]
    fullstory.failures["/sessions/v2"] = [503]
    await bridge.post_segment(opportunity())
    await bridge.drain()
    assert [] == linked(bridge)
    [waiting] = await bridge.runtime.store.list_deliveries("pending", "session_url_to_segment", 10)
    assert (1, "look-up fullstory.latest_session: Fullstory answered 503") == (waiting.attempts, waiting.last_error)
    bridge.clock.advance(60)
    await bridge.drain()
    assert 1 == len(linked(bridge))
    assert 2 == len(fullstory.lookups("/sessions/v2"))
    bridge.clock.advance(3600)
    await bridge.drain()
    assert 1 == len(linked(bridge))


async def test_429_retry_after_is_honoured(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A 429 with Retry-After: 120 schedules the delivery no sooner than 120 s later, and halves fullstory's rate."""
    fullstory.sessions_by_uid["u_1842"] = [session(1, NOW - 60)]
    fullstory.failures["/sessions/v2"] = [(429, {"Retry-After": "120"})]
    rate_before = bridge.runtime.worker.guards["fullstory"].bucket.rate
    await bridge.post_segment(opportunity())
    await bridge.drain()
    [waiting] = await bridge.runtime.store.list_deliveries("pending", "session_url_to_segment", 10)
    assert waiting.next_attempt_at >= bridge.clock.now() + 119
    assert bridge.runtime.worker.guards["fullstory"].bucket.rate < rate_before
    bridge.clock.advance(100)
    await bridge.drain()
    assert [] == linked(bridge)
    bridge.clock.advance(30)
    await bridge.drain()
    assert 1 == len(linked(bridge))


async def test_an_outage_of_minutes_loses_nothing(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """Fullstory down for ten minutes of the frozen clock (network errors, then 503s): the breaker opens and
    holds the look-ups back; once Fullstory answers, every trigger is linked, once each, and none is dead."""
    for n in range(20):
        fullstory.sessions_by_uid[f"u_{n}"] = [session(n, NOW - 60)]
    for n in range(20):
        await bridge.post_segment(opportunity(n, user_id=f"u_{n}"))
    for outage in (httpx.ConnectError("down"), 503):
        fullstory.down = outage
        for _ in range(20):  # 5 minutes each
            await bridge.drain()
            bridge.clock.advance(15)
    assert [] == linked(bridge)
    assert bridge.runtime.worker.guards["fullstory"].breaker.state.name == "OPEN"
    fullstory.down = None
    for _ in range(60):  # bounded: the backoff after ten minutes of failures is at most a few minutes
        await bridge.drain()
        bridge.clock.advance(30)
    assert sorted(f"u_{n}" for n in range(20)) == sorted(t["userId"] for t in linked(bridge))
    assert [] == await bridge.runtime.store.list_deliveries("dead", None, 10)


async def test_ten_triggers_of_one_user_make_one_lookup(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """The look-up cache (cache_for 5m) answers a user's later triggers, across rounds; after it expires, ask again."""
    fullstory.sessions_by_uid["u_1842"] = [session(1, NOW - 60)]
    for n in range(10):
        await bridge.post_segment(opportunity(n))
        await bridge.drain()
        bridge.clock.advance(10)
    assert 10 == len(linked(bridge))
    assert 1 == len(fullstory.lookups("/sessions/v2"))
    bridge.clock.advance(300)
    await bridge.post_segment(opportunity(99))
    await bridge.drain()
    assert 2 == len(fullstory.lookups("/sessions/v2"))


async def test_other_events_and_users_without_identity_are_left_alone(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A track outside trigger_events, or one with neither userId nor email, asks nothing and sends nothing."""
    await bridge.post_segment({**opportunity(1), "event": "Order Completed"})
    await bridge.post_segment(opportunity(2, user_id=None, anonymousId="a-2"))
    await bridge.drain()
    assert ([], []) == (linked(bridge), fullstory.lookups("/sessions/v2"))


async def test_in_dry_run_nothing_is_asked_and_the_plan_is_recorded(tmp_path: Path) -> None:
    """Without a Fullstory API key the look-up is not made: the delivery is dry_run and holds what it would ask."""
    fullstory = FakeFullstory()
    b = await start_bridge(tmp_path, fullstory, fullstory_api_key=None)
    try:
        await b.post_segment(opportunity())
        await b.drain()
        [delivery] = await b.runtime.store.list_deliveries("dry_run", "session_url_to_segment", 10)
        plan = orjson.loads(delivery.body)
        assert {"uid": "u_1842"} == plan["enrich"]["session"]["with"]
        assert "fullstory.latest_session" == plan["enrich"]["session"]["lookup"]
        assert [] == fullstory.lookups("/sessions/v2")
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_the_flow_can_be_switched_off(tmp_path: Path) -> None:
    """flows.session_url_to_segment.enabled: false sends nothing for the trigger events."""
    config = FsbridgeConfig.model_validate({"flows": {"session_url_to_segment": {"enabled": False}}})
    fullstory = FakeFullstory()
    b = await start_bridge(tmp_path, fullstory, config=config)
    try:
        await b.post_segment(opportunity())
        await b.drain()
        assert ([], []) == (linked(b), fullstory.lookups("/sessions/v2"))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_filtered_deliveries_are_listed_by_the_ops_api(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """GET /ops/api/deliveries?status=filtered lists what a look-up ended, with the reason."""
    await bridge.post_segment(opportunity())
    await bridge.drain()
    response = await bridge.client.get("/ops/api/deliveries?status=filtered", headers=bridge.ops_headers())
    [item] = response.json()["items"]
    assert ("session_url_to_segment", "no recent Fullstory session") == (item["flow"], item["last_error"])
