"""flows.feature_adoption (Part 2): a feature's uses per cohort and window; a closed window below
drop_below times its baseline alerts Slack and Jira once, and a recovery is announced once; a
Fullstory segment alert BELOW its threshold alerts too. Windows of ten seconds here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from fsbridge.config import FsbridgeConfig
from fsbridge.testing import FakeUpstream
from tests.conftest import OPS_TOKEN, Bridge, start_bridge

WINDOW = 10.0
SLACK = "https://hooks.slack.test/services/T/B/X"


def config(**adoption: Any) -> FsbridgeConfig:
    options = {
        "enabled": True,
        "features": {"report_export": {"source": "segment", "event": "Report Exported"}},
        "cohorts": {"audiences": ["vip"]},
        "window": WINDOW,
        "baseline_windows": 3,
        "min_baseline": 2,
        "drop_below": 0.5,
        "notify": ["slack", "jira"],
    } | adoption
    return FsbridgeConfig.model_validate(
        {"flows": {"feature_adoption": options}, "destinations": {"jira": {"project_key": "OPS"}}}
    )


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    upstream = FakeUpstream()
    b = await start_bridge(
        tmp_path, upstream, config=config(cohorts={"audiences": ["vip"], "include_all": True}),
        slack_webhook_url=SecretStr(SLACK), jira_url="https://acme.atlassian.net",
        jira_email="ops@acme.io", jira_api_token=SecretStr("token-1234"),
    )  # fmt: skip
    yield b
    await b.client.aclose()
    await b.runtime.stop()


def slack(b: Bridge) -> list[str]:
    return [orjson.loads(r.content)["blocks"][0]["text"]["text"] for r in b.upstream.requests
            if r.url.host == "hooks.slack.test"]  # fmt: skip


def jira(b: Bridge) -> list[dict[str, Any]]:
    return [orjson.loads(r.content)["fields"] for r in b.upstream.requests if r.url.path == "/rest/api/3/issue"]


async def uses(b: Bridge, count: int, window: int) -> None:
    for n in range(count):
        message = {"type": "track", "event": "Report Exported", "userId": "u_1", "messageId": f"r-{window}-{n}"}
        assert 202 == (await b.post_segment(message)).status_code
    await b.drain()
    b.clock.advance(WINDOW)


async def run_job(b: Bridge) -> dict[str, Any]:
    result = await b.runtime.scheduler.run_now("feature_adoption")
    await b.drain()
    return result.counts or {}


async def test_a_drop_alerts_once_and_a_recovery_is_announced_once(bridge: Bridge) -> None:
    """Three windows of 4 uses, then 1 (below half the mean of 4): one Slack alert and one Jira issue per cohort
    (all, with include_all, and the vip audience); the job run again sends nothing; a window back at 4 sends one
    recovery."""
    await bridge.post_segment({"type": "track", "userId": "u_1", "messageId": "vip", "event": "Audience Entered",
                               "properties": {"audience_key": "vip"}})  # fmt: skip
    await bridge.drain()
    for window in range(3):
        await uses(bridge, 4, window)
    assert 0 == (await run_job(bridge))["alerts"]  # no window with a full baseline is closed yet
    await uses(bridge, 1, 3)
    assert 4 == (await run_job(bridge))["alerts"]
    assert ["Feature adoption dropped: report_export (all)",
            "Feature adoption dropped: report_export (audience:vip)"] == sorted(slack(bridge))  # fmt: skip
    issues = jira(bridge)
    assert 2 == len(issues)
    assert {"fsbridge", "feature-adoption"} <= set(issues[0]["labels"])
    assert "was used 1 times in cohort" in issues[0]["description"]["content"][0]["content"][0]["text"]
    assert 0 == (await run_job(bridge))["alerts"]
    await uses(bridge, 4, 4)
    assert 2 == (await run_job(bridge))["alerts"]
    assert 2 == sum(text.startswith("Feature adoption recovered") for text in slack(bridge))
    assert 2 == len(jira(bridge))  # recoveries go to Slack only
    await uses(bridge, 4, 5)
    assert 0 == (await run_job(bridge))["alerts"]


async def test_a_configured_cohort_alone_opens_one_issue_per_drop(tmp_path: Path) -> None:
    """With a cohort configured and no include_all, `all` is not counted: one drop, one Slack alert, one Jira issue."""
    b = await start_bridge(
        tmp_path, config=config(), slack_webhook_url=SecretStr(SLACK), jira_url="https://acme.atlassian.net",
        jira_email="ops@acme.io", jira_api_token=SecretStr("token-1234"),
    )  # fmt: skip
    try:
        await b.post_segment({"type": "track", "userId": "u_1", "messageId": "vip", "event": "Audience Entered",
                              "properties": {"audience_key": "vip"}})  # fmt: skip
        await b.drain()
        for window in range(3):
            await uses(b, 4, window)
        await uses(b, 1, 3)
        assert 2 == (await run_job(b))["alerts"]
        assert ["Feature adoption dropped: report_export (audience:vip)"] == slack(b)
        assert 1 == len(jira(b))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_small_baseline_never_alerts(tmp_path: Path) -> None:
    """Below min_baseline a drop is noise: nothing is sent."""
    b = await start_bridge(tmp_path, config=config(min_baseline=50), slack_webhook_url=SecretStr(SLACK))
    try:
        for window in range(3):
            await uses(b, 4, window)
        await uses(b, 0, 3)
        assert 0 == (await run_job(b))["alerts"]
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_fullstory_segment_alert_below_its_threshold_alerts_too(bridge: Bridge) -> None:
    """segment.trend.alert with direction BELOW goes to Slack and Jira; ABOVE goes nowhere."""
    alert: dict[str, Any] = {"eventName": "segment.trend.alert", "version": 1, "data": {
        "id": "a1", "timestamp": "2026-11-18T10:00:00Z", "value": 12, "notificationUrl": "https://app.fullstory.com/n/1",
        "alertConfig": {"description": "fewer exports", "threshold": 40, "direction": "BELOW", "duration": "DAILY",
                        "segmentName": "Exporters", "segmentUrl": "https://app.fullstory.com/s/1"}}}  # fmt: skip
    await bridge.post_system(alert)
    above = {**alert, "data": {**alert["data"], "id": "a2", "alertConfig": {**alert["data"]["alertConfig"],
                                                                           "direction": "ABOVE"}}}  # fmt: skip
    await bridge.post_system(above)
    await bridge.drain()
    [issue] = jira(bridge)
    assert issue["summary"].startswith("Fullstory: Exporters fell to 12")
    texts = [orjson.loads(r.content)["text"] for r in bridge.upstream.requests if r.url.host == "hooks.slack.test"]
    assert 1 == len(texts)


def test_a_feature_must_name_its_events() -> None:
    """A segment feature without `event` (or a Streams one without `stream`) is a config error."""
    with pytest.raises(ValueError, match="names its track"):
        config(features={"x": {"source": "segment"}})


async def test_the_dashboard_lists_open_drops(bridge: Bridge) -> None:
    """/ops shows each open drop with its feature and cohort."""
    for window in range(3):
        await uses(bridge, 4, window)
    await uses(bridge, 0, 3)
    await run_job(bridge)
    await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
    page = (await bridge.client.get("/ops")).text
    assert '<tr class="adoption-drop"><td>report_export</td><td>all</td>' in page
