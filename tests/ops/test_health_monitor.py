"""Health monitor: each alert condition, its recovery, no duplicate alerts, Block Kit through Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from fsbridge.config import FsbridgeConfig
from fsbridge.testing import FakeUpstream
from tests.conftest import RAGE_CLICK, Bridge, start_bridge

SLACK_URL = "https://hooks.slack.test/services/T/B/X"
HEALTH = {
    "success_min_attempts": 2,
    "success_window_minutes": 10,
    "volume_min_events": 5,
    "volume_window_minutes": 60,
    "dead_letter_window_minutes": 10,
    "breaker_open_minutes": 0,
}


@pytest.fixture
async def monitored(tmp_path: Path) -> AsyncIterator[Bridge]:
    config = FsbridgeConfig.model_validate(
        {"health": HEALTH, "destinations": {"segment": {"breaker": {"min_requests": 50}}}}
    )
    b = await start_bridge(tmp_path, FakeUpstream(), config=config, slack_webhook_url=SecretStr(SLACK_URL))
    yield b
    await b.client.aclose()
    await b.runtime.stop()


def click(n: int) -> dict[str, Any]:
    return {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"b{n}"}}


async def check(b: Bridge) -> list[str]:
    return await b.runtime.monitor.check_once()


async def slack_messages(b: Bridge) -> list[dict[str, Any]]:
    await b.drain()
    return [orjson.loads(r.content) for r in b.upstream.requests if r.url.host == "hooks.slack.test"]


async def test_low_success_rate_alerts_once_then_recovers(monitored: Bridge) -> None:
    """Failing attempts below the success threshold alert once; after the window passes it recovers."""
    monitored.upstream.script_next([500, 500])
    await monitored.post_stream(click(1))
    await monitored.drain()
    monitored.clock.advance(1)
    await monitored.drain()
    assert ["segment: delivery success rate 0%"] == await check(monitored)
    assert [] == await check(monitored)
    monitored.clock.advance(11 * 60)
    await monitored.drain()
    assert ["Recovered: segment: delivery success rate 100%"] == await check(monitored)
    messages = await slack_messages(monitored)
    assert 2 == len(messages)
    assert "header" == messages[0]["blocks"][0]["type"]
    assert messages[0]["text"].startswith(":rotating_light: fsbridge: segment: delivery success rate 0%")
    assert messages[1]["text"].startswith(":white_check_mark: fsbridge: Recovered")


async def test_inbound_volume_drop_against_the_day_before(monitored: Bridge) -> None:
    """Ten events in an hour yesterday and one today is a -90 % change: an alert for that source."""
    for n in range(10):
        await monitored.post_stream(click(n))
    monitored.clock.advance(86400)
    await monitored.post_stream(click(100))
    sent = await check(monitored)
    assert "fullstory_stream: inbound volume -90%" in sent
    assert "fullstory_stream: inbound volume -90%" not in await check(monitored)


async def test_volume_spike_counts_too(monitored: Bridge) -> None:
    """A rise beyond the threshold alerts as well (a loop or a replay storm upstream)."""
    for n in range(5):
        await monitored.post_stream(click(n))
    monitored.clock.advance(86400)
    for n in range(20):
        await monitored.post_stream(click(100 + n))
    assert "fullstory_stream: inbound volume +300%" in await check(monitored)


async def test_new_dead_letters_alert_and_clear(monitored: Bridge) -> None:
    """A dead letter alerts for its destination; when no new ones appear in the window it clears."""
    monitored.upstream.script_next([400])
    await monitored.post_stream(click(1))
    await monitored.drain()
    assert "segment: 1 new dead letters" in await check(monitored)
    assert [] == [s for s in await check(monitored) if "dead letters" in s]
    monitored.clock.advance(11 * 60)
    assert "Recovered: segment: 0 new dead letters" in await check(monitored)


async def test_parked_destination_alerts_and_recovers_on_resume(monitored: Bridge) -> None:
    """A destination parked by a 401 alerts; resuming it clears the alert."""
    monitored.upstream.script_next([401])
    await monitored.post_stream(click(1))
    await monitored.drain()
    assert "segment: parked" in await check(monitored)
    await monitored.runtime.resume_destination("segment")
    assert "Recovered: segment: parked" in await check(monitored)


async def test_open_breaker_alerts_and_recovers(monitored: Bridge) -> None:
    """A breaker that stays open alerts; once it closes the alert clears."""
    breaker = monitored.runtime.worker.guards["fullstory"].breaker
    breaker.state, breaker.opened_at = type(breaker.state).OPEN, monitored.clock.now()
    assert "fullstory: circuit breaker open" in await check(monitored)
    breaker.record(True, monitored.clock.now())  # an open breaker ignores outcomes until it half-opens
    breaker.allows(monitored.clock.now() + breaker.open_seconds)
    breaker.record(True, monitored.clock.now() + breaker.open_seconds)
    assert "Recovered: fullstory: circuit breaker open" in await check(monitored)


async def test_alert_state_survives_a_restart(tmp_path: Path) -> None:
    """A condition already alerted is not alerted again by a restarted process."""
    config = FsbridgeConfig.model_validate({"health": HEALTH})
    first = await start_bridge(tmp_path, FakeUpstream(script=[400]), config=config)
    await first.post_stream(click(1))
    await first.drain()
    assert "segment: 1 new dead letters" in await check(first)
    await first.client.aclose()
    await first.runtime.stop()
    second = await start_bridge(tmp_path, config=config)
    try:
        second.clock.current = first.clock.now()
        assert [] == [s for s in await check(second) if "dead letters" in s]
    finally:
        await second.client.aclose()
        await second.runtime.stop()


async def test_without_slack_alerts_are_recorded_as_dry_run(tmp_path: Path) -> None:
    """With no Slack webhook configured, alerts are still recorded (dry_run) for operators to see."""
    config = FsbridgeConfig.model_validate({"health": HEALTH})
    b = await start_bridge(tmp_path, FakeUpstream(script=[400]), config=config)
    try:
        await b.post_stream(click(1))
        await b.drain()
        await check(b)
        [alert] = await b.runtime.store.list_deliveries(None, "health_monitor", 5)
        assert ("dry_run", "slack") == (alert.status, alert.destination)
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_alert_details_are_escaped_for_slack(monitored: Bridge) -> None:
    """A parked reason quoting a destination's answer cannot mention @channel or hide a link in the alert."""
    monitored.runtime.monitor.parked = lambda: {"segment": "Segment answered 401: <!channel> <https://evil.example|x>"}
    assert "segment: parked" in await check(monitored)
    [alert] = await slack_messages(monitored)
    assert "<!channel>" not in orjson.dumps(alert).decode()
    assert "Segment answered 401: &lt;!channel&gt; &lt;https://evil.example|x&gt;" == alert["blocks"][1]["text"]["text"]
