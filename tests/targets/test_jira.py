"""The Jira destination (Part 2): an alert becomes one issue (ADF description, the fsbridge label,
the configured project and type, Basic auth with email and token); 429 honours Retry-After; a
retry after a lost answer finds the issue by its label instead of opening a second; dry-run
without credentials; 401 parks it."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from pydantic import SecretStr

from fsbridge.config import FsbridgeConfig
from fsbridge.targets.jira import adf, alert_label
from fsbridge.testing import FakeUpstream
from tests.conftest import Bridge, start_bridge

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
ALERT: dict[str, Any] = orjson.loads(
    (EXAMPLES / "golden" / "segment_trend_alert_to_jira" / "drop.in.json").read_bytes()
)
JIRA = "https://acme.atlassian.net"


def config() -> FsbridgeConfig:
    flows = yaml.safe_load((EXAMPLES / "segment_trend_alert_to_jira.yaml").read_text())["flows"]
    return FsbridgeConfig.model_validate({"destinations": {"jira": {"project_key": "OPS"}}, "flows": flows})


async def jira_bridge(tmp_path: Path, upstream: FakeUpstream, **settings: Any) -> Bridge:
    values: dict[str, Any] = {
        "jira_url": JIRA,
        "jira_email": "ops@acme.io",
        "jira_api_token": SecretStr("jira-token-123"),
    }
    return await start_bridge(tmp_path, upstream, config=config(), **(values | settings))


def creates(upstream: FakeUpstream) -> list[httpx.Request]:
    return [r for r in upstream.requests if r.url.path == "/rest/api/3/issue"]


def created(key: str = "OPS-7") -> httpx.Response:
    return httpx.Response(201, json={"id": "10007", "key": key, "self": f"{JIRA}/rest/api/3/issue/10007"})


async def test_an_alert_opens_one_issue_with_adf_and_the_fsbridge_label(tmp_path: Path) -> None:
    """POST /rest/api/3/issue: project, type, summary, ADF description, labels; the key stays on the delivery."""
    upstream = FakeUpstream(script=[created()])
    b = await jira_bridge(tmp_path, upstream)
    try:
        await b.post_system(ALERT)
        await b.drain()
        [request] = creates(upstream)
        fields = orjson.loads(request.content)["fields"]
        assert ({"key": "OPS"}, {"name": "Task"}) == (fields["project"], fields["issuetype"])
        assert fields["summary"].startswith("Fullstory: Cancelled checkout flow fell to 42")
        assert "doc" == fields["description"]["type"]
        assert 3 == len(fields["description"]["content"])  # one ADF paragraph per paragraph
        [delivery] = await b.runtime.store.list_deliveries("delivered", "segment_trend_alert_to_jira", 10)
        assert ["fsbridge", alert_label(delivery.message_id), "fullstory-alert"] == fields["labels"]
        assert f"Basic {base64.b64encode(b'ops@acme.io:jira-token-123').decode()}" == request.headers["Authorization"]
        stored = await b.runtime.store.get_delivery(delivery.id)
        assert stored is not None
        assert '"key":"OPS-7"' in (stored.last_response or "")
        await b.post_system(ALERT)  # the same alert again: one delivery, no second issue
        await b.drain()
        assert 1 == len(creates(upstream))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_rise_opens_nothing(tmp_path: Path) -> None:
    """The example flow alerts on drops only (direction BELOW)."""
    upstream = FakeUpstream()
    b = await jira_bridge(tmp_path, upstream)
    try:
        rise = copy.deepcopy(ALERT)
        rise["data"]["alertConfig"]["direction"] = "ABOVE"
        await b.post_system(rise)
        await b.drain()
        assert [] == creates(upstream)
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_429_honours_retry_after(tmp_path: Path) -> None:
    """A 429 with Retry-After: 30 is retried no sooner than 30 s later, then delivered."""
    upstream = FakeUpstream(script=[(429, {"Retry-After": "30"}), httpx.Response(200, json={"issues": []}), created()])
    b = await jira_bridge(tmp_path, upstream)
    try:
        await b.post_system(ALERT)
        await b.drain()
        [waiting] = await b.runtime.store.list_deliveries("pending", "segment_trend_alert_to_jira", 10)
        assert waiting.next_attempt_at >= b.clock.now() + 29
        b.clock.advance(31)
        await b.drain()
        assert 2 == len(creates(upstream))
        assert 1 == len(await b.runtime.store.list_deliveries("delivered", "segment_trend_alert_to_jira", 10))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_retry_after_a_lost_answer_finds_the_issue_by_its_label(tmp_path: Path) -> None:
    """The first create times out (Jira may have made the issue): the retry asks search/jql for the alert's
    label, finds the issue, and opens no second one."""
    upstream = FakeUpstream(
        script=[httpx.ReadTimeout("no answer"), httpx.Response(200, json={"issues": [{"id": "1", "key": "OPS-9"}]})]
    )
    b = await jira_bridge(tmp_path, upstream)
    try:
        await b.post_system(ALERT)
        await b.drain()
        b.clock.advance(5)
        await b.drain()
        assert 1 == len(creates(upstream))
        [search] = [r for r in upstream.requests if r.url.path == "/rest/api/3/search/jql"]
        assert search.url.params["jql"].startswith('labels = "fsb-')
        [delivery] = await b.runtime.store.list_deliveries("delivered", "segment_trend_alert_to_jira", 10)
        stored = await b.runtime.store.get_delivery(delivery.id)
        assert stored is not None
        assert "OPS-9" in (stored.last_response or "")
    finally:
        await b.client.aclose()
        await b.runtime.stop()


@pytest.mark.parametrize("missing", ["jira_url", "jira_email", "jira_api_token"])
async def test_without_credentials_it_is_dry_run(tmp_path: Path, missing: str) -> None:
    """Any of the three Jira settings missing: the issue is recorded as dry_run and nothing is sent."""
    upstream = FakeUpstream()
    b = await jira_bridge(tmp_path, upstream, **{missing: None})
    try:
        await b.post_system(ALERT)
        await b.drain()
        assert 1 == len(await b.runtime.store.list_deliveries("dry_run", "segment_trend_alert_to_jira", 10))
        assert [] == creates(upstream)
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_401_parks_jira(tmp_path: Path) -> None:
    """Wrong credentials park the destination (nothing lost) until it is resumed."""
    upstream = FakeUpstream(script=[401])
    b = await jira_bridge(tmp_path, upstream)
    try:
        await b.post_system(ALERT)
        await b.drain()
        assert "jira" in b.runtime.worker.parked
        assert 1 == len(await b.runtime.store.list_deliveries("parked", "segment_trend_alert_to_jira", 10))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


def test_adf_keeps_paragraphs() -> None:
    """Blank lines separate ADF paragraphs; empty text is one blank paragraph (Jira refuses an empty doc)."""
    assert ["a", "b"] == [p["content"][0]["text"] for p in adf("a\n\nb")["content"]]
    assert 1 == len(adf("")["content"])
