"""jobs.high_value_sessions: each new session of a user in the configured audiences (or with the
configured traits) becomes one Slack Block Kit message; the first check only records; no message
twice across restarts; a 429 or an empty rate limit ends the run early and the next run goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from fsbridge.config import FsbridgeConfig
from tests.conftest import Bridge, start_bridge
from tests.fake_fullstory import FakeFullstory, session

JOB = "high_value_sessions"
NOW = 1_795_000_000.0
SLACK = "https://hooks.slack.test/services/T000/B000/XXXX"


def config(**job: Any) -> FsbridgeConfig:
    options = {"enabled": True, "audiences": ["vip"], "traits": {"plan": ["enterprise"]}} | job
    return FsbridgeConfig.model_validate({"jobs": {JOB: options}})


def slack(b: Bridge) -> list[dict[str, Any]]:
    return [orjson.loads(r.content) for r in b.upstream.requests if r.url.host == "hooks.slack.test"]


async def started(tmp_path: Path, fullstory: FakeFullstory, **job: Any) -> Bridge:
    return await start_bridge(tmp_path, fullstory, config=config(**job), slack_webhook_url=SecretStr(SLACK))


async def run(b: Bridge) -> dict[str, Any]:
    result = await b.runtime.scheduler.run_now(JOB)
    assert "ok" == result.outcome
    await b.drain()
    return result.counts or {}


async def make_vip(b: Bridge, user: str, **traits: Any) -> None:
    await b.post_segment({"type": "track", "userId": user, "messageId": f"vip-{user}", "event": "Audience Entered",
                          "properties": {"audience_key": "vip"}})  # fmt: skip
    if traits:
        await b.post_segment({"type": "identify", "userId": user, "messageId": f"id-{user}", "traits": traits})
    await b.drain()


@pytest.fixture
async def fullstory() -> FakeFullstory:
    return FakeFullstory()


@pytest.fixture
async def bridge(tmp_path: Path, fullstory: FakeFullstory) -> AsyncIterator[Bridge]:
    b = await started(tmp_path, fullstory)
    yield b
    await b.client.aclose()
    await b.runtime.stop()


async def test_a_new_session_becomes_one_block_kit_message(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """The first check records the newest session only; a later new session sends one message with the
    person's name, email, company and plan, the start time and a button to the replay."""
    await make_vip(bridge, "u_1", name="Ada Lovelace", email="ada@example.com", company="Analytical Engines",
                   plan="enterprise")  # fmt: skip
    fullstory.sessions_by_uid["u_1"] = [session(1, NOW - 3600)]
    assert {"checked": 1, "sessions": 1, "messages": 0, "deferred": 0} == await run(bridge)
    assert [] == slack(bridge)
    fullstory.sessions_by_uid["u_1"] = [session(2, NOW - 60), session(1, NOW - 3600)]
    assert 1 == (await run(bridge))["messages"]
    [message] = slack(bridge)
    header, section, actions = message["blocks"]
    assert "New session: Ada Lovelace" == header["text"]["text"]
    texts = [f["text"] for f in section["fields"]]
    assert {"*Email*\nada@example.com", "*Company*\nAnalytical Engines", "*Plan*\nenterprise"} <= set(texts)
    assert "*Started*\n2026-11-18T11:05:40Z" in texts
    [button] = actions["elements"]
    assert "https://app.fullstory.com/ui/o-1ABC/session/5557778531805533:2" == button["url"]
    assert len(header["text"]["text"]) <= 150


async def test_no_message_twice_across_restarts(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """A session already reported is not reported again by a restarted service on the same store."""
    b = await started(tmp_path, fullstory)
    await make_vip(b, "u_1")
    fullstory.sessions_by_uid["u_1"] = [session(1, NOW - 3600)]
    await run(b)
    fullstory.sessions_by_uid["u_1"] = [session(2, NOW - 60), session(1, NOW - 3600)]
    await run(b)
    await b.client.aclose()
    await b.runtime.stop()
    again = await started(tmp_path, fullstory)
    try:
        again.clock.advance(600)
        assert 0 == (await run(again))["messages"]
        assert 1 == len(slack(again))  # the one message, sent before the restart
    finally:
        await again.client.aclose()
        await again.runtime.stop()


async def test_users_by_trait_and_the_least_recently_checked_first(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """Profiles with a listed trait value count as high-value; with max_users_per_run 2, runs go round the users."""
    b = await started(tmp_path, fullstory, max_users_per_run=2)
    try:
        for user in ("u_1", "u_2", "u_3"):
            await b.post_segment({"type": "identify", "userId": user, "messageId": f"i-{user}",
                                  "traits": {"plan": "enterprise"}})  # fmt: skip
        await b.post_segment({"type": "identify", "userId": "u_free", "messageId": "i-f", "traits": {"plan": "free"}})
        await b.drain()
        checked = []
        for _ in range(3):
            await run(b)
            checked.append(sorted({r.url.params["uid"] for r in fullstory.lookups("/sessions/v2")}))
            b.clock.advance(300)
        assert [["u_1", "u_2"], ["u_1", "u_2", "u_3"], ["u_1", "u_2", "u_3"]] == checked
        assert "u_free" not in {r.url.params["uid"] for r in fullstory.lookups("/sessions/v2")}
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_429_ends_the_run_early_and_the_next_run_goes_on(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """Fullstory answering 429 ends the run (the rest deferred); the next run checks the users it did not reach."""
    for user in ("u_1", "u_2", "u_3"):
        await make_vip(bridge, user)
    fullstory.failures["/sessions/v2"] = [(429, {"Retry-After": "1"})]
    counts = await run(bridge)
    assert (0, 3) == (counts["checked"], counts["deferred"])
    bridge.clock.advance(300)
    counts = await run(bridge)
    assert (3, 0) == (counts["checked"], counts["deferred"])


async def test_an_empty_rate_limit_defers_the_rest(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """With no token left in fullstory's rate limit, the run stops and counts the users it deferred."""
    for user in ("u_1", "u_2"):
        await make_vip(bridge, user)
    bucket = bridge.runtime.worker.guards["fullstory"].bucket
    bucket.take(bucket.available(bridge.clock.now()), bridge.clock.now())
    counts = await run(bridge)
    assert (0, 2) == (counts["checked"], counts["deferred"])
