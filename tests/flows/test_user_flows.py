"""User-defined flows end to end: Fullstory events and Slack messages, sampling, rate caps,
`fsbridge test-mapping` and `fsbridge replay`."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from fsbridge.cli import GENERATED_ENV, app
from fsbridge.config import FsbridgeConfig, parse_config
from tests.conftest import RAGE_CLICK, Bridge, start_bridge

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
SLACK_URL = "https://hooks.slack.test/services/T000/B000/XXXX"
runner = CliRunner()


def example_config(*names: str, extra: dict[str, Any] | None = None) -> FsbridgeConfig:
    flows: dict[str, Any] = {}
    for name in names:
        flows |= yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())["flows"]
    flows |= extra or {}
    return parse_config(yaml.safe_dump({"flows": flows}))


def golden(flow: str, case: str) -> Any:
    return orjson.loads((EXAMPLES / "golden" / flow / f"{case}.in.json").read_bytes())


async def test_order_completed_becomes_a_fullstory_event(tmp_path: Path) -> None:
    """Segment Order Completed → POST /v2/events with an Idempotency-Key, valid against Fullstory's spec."""
    b = await start_bridge(tmp_path, config=example_config("order_completed_to_fullstory_event"))
    try:
        await b.post_segment(golden("order_completed_to_fullstory_event", "order"))
        await b.post_segment(golden("order_completed_to_fullstory_event", "other_event"))
        await b.drain()
        [request] = [r for r in b.upstream.requests if r.url.path == "/v2/events"]
        assert request.headers["Idempotency-Key"].startswith("fsb-")
        assert "Order Completed" == orjson.loads(request.content)["name"]
        stats = (await b.runtime.store.stats())["by_flow"]["order_completed_to_fullstory_event"]
        assert (1, 1) == (stats["delivered"], stats["filtered"])
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_metric_alert_goes_to_slack(tmp_path: Path) -> None:
    """A Fullstory metric alert becomes one Slack message posted to the incoming webhook."""
    b = await start_bridge(
        tmp_path, config=example_config("metric_alert_to_slack"), slack_webhook_url=SecretStr(SLACK_URL)
    )
    try:
        assert 202 == (await b.post_system(golden("metric_alert_to_slack", "alert"))).status_code
        await b.drain()
        [request] = [r for r in b.upstream.requests if r.url.host == "hooks.slack.test"]
        assert orjson.loads(request.content)["text"].startswith(":rotating_light: Fullstory metric alert")
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_slack_without_url_is_dry_run(tmp_path: Path) -> None:
    """Without FSBRIDGE_SLACK_WEBHOOK_URL, Slack messages are recorded as dry_run."""
    b = await start_bridge(tmp_path, config=example_config("metric_alert_to_slack"))
    try:
        await b.post_system(golden("metric_alert_to_slack", "alert"))
        await b.drain()
        [delivery] = await b.runtime.store.list_deliveries(None, "metric_alert_to_slack", 5)
        assert "dry_run" == delivery.status
    finally:
        await b.client.aclose()
        await b.runtime.stop()


def tracked_clicks(sample: float | None = None, cap: int | None = None) -> FsbridgeConfig:
    flow: dict[str, Any] = {
        "trigger": {"source": "fullstory_stream", "kinds": ["rage-click"]},
        "target": "segment.track",
        "mapping": {"event": "Sampled Rage", "userId": {"path": "user.user_id"}},
    }
    if sample is not None:
        flow["sample"] = sample
    if cap is not None:
        flow["max_per_minute"] = cap
    return parse_config(
        yaml.safe_dump({"flows": {"frustration_to_segment_track": {"enabled": False}, "sampled": flow}})
    )


async def clicks(b: Bridge, count: int) -> None:
    for n in range(count):
        await b.post_stream({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"b{n}"}})
    await b.drain()


async def test_sampling_keeps_about_the_share_and_counts_the_rest(tmp_path: Path) -> None:
    """sample: 0.25 sends about a quarter; the others are counted as filtered with the reason."""
    b = await start_bridge(tmp_path, config=tracked_clicks(sample=0.25))
    try:
        await clicks(b, 200)
        stats = (await b.runtime.store.stats())["by_flow"]["sampled"]
        assert 200 == stats["delivered"] + stats["filtered"]
        assert 30 <= stats["delivered"] <= 70
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_rate_cap_holds_back_what_exceeds_it(tmp_path: Path) -> None:
    """max_per_minute: 5 lets 5 events of one minute through and holds back the rest, counted."""
    b = await start_bridge(tmp_path, config=tracked_clicks(cap=5))
    try:
        await clicks(b, 12)
        stats = (await b.runtime.store.stats())["by_flow"]["sampled"]
        assert (5, 7) == (stats["delivered"], stats["filtered"])
    finally:
        await b.client.aclose()
        await b.runtime.stop()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    for name in GENERATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FSBRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'replay.db'}")
    monkeypatch.setenv("FSBRIDGE_SEGMENT_WRITE_KEY", "wk")
    return tmp_path


class TestTestMapping:
    def test_prints_what_would_be_sent(self, workdir: Path) -> None:
        """test-mapping prints the target and the exact body for an input."""
        case = EXAMPLES / "golden" / "frustration_to_segment_track" / "rage_click.in.json"
        result = runner.invoke(app, ["test-mapping", "frustration_to_segment_track", str(case)])
        assert 0 == result.exit_code, result.output
        assert result.output.startswith("segment.track:\n")
        assert '"event": "Rage Click Detected"' in result.output

    def test_says_why_an_input_is_filtered(self, workdir: Path) -> None:
        """test-mapping names the filter that holds the input back."""
        case = EXAMPLES / "golden" / "frustration_to_segment_track" / "page_view.in.json"
        result = runner.invoke(app, ["test-mapping", "frustration_to_segment_track", str(case)])
        assert result.output.startswith("filtered: is_frustration_signal: $kind is 'page_view'")

    def test_says_when_the_trigger_does_not_match(self, workdir: Path) -> None:
        """An input of another kind is reported as not triggering the flow."""
        case = EXAMPLES / "golden" / "segment_delete_to_fullstory_user" / "delete.in.json"
        result = runner.invoke(app, ["test-mapping", "segment_identify_to_fullstory_user", str(case)])
        assert "not triggered" in result.output

    def test_mapping_error_exits_1(self, workdir: Path) -> None:
        """An input the mapping cannot turn into a valid request exits 1 with the reason."""
        case = workdir / "in.json"
        case.write_text('{"event": {"event_type": "rage-click"}}')
        result = runner.invoke(app, ["test-mapping", "frustration_to_segment_track", str(case)])
        assert 1 == result.exit_code
        assert "userId or anonymousId" in result.output

    def test_unknown_flow(self, workdir: Path) -> None:
        """An unknown flow name exits 2 and lists the flows."""
        result = runner.invoke(app, ["test-mapping", "nope", str(workdir / "x.json")])
        assert 2 == result.exit_code
        assert "frustration_to_segment_track" in result.output


def test_replay_through_a_changed_mapping(workdir: Path) -> None:
    """replay --dry-run shows the diff and enqueues nothing; without it, new deliveries get new ids, once."""

    async def receive_two_clicks() -> None:
        b = await start_bridge(workdir, database_url=f"sqlite:///{workdir / 'replay.db'}")
        try:
            for n in range(2):
                await b.post_stream({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"b{n}"}})
            await b.drain()
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    asyncio.run(receive_two_clicks())
    config = workdir / "config" / "fsbridge.yaml"
    config.write_text(config.read_text().replace("rage_click: Rage Click Detected", "rage_click: Rage Click"))

    preview = runner.invoke(
        app, ["replay", "--flow", "frustration_to_segment_track", "--since", "2000-01-01", "--dry-run"]
    )
    assert 0 == preview.exit_code, preview.output
    assert 2 == preview.output.count(": changed")
    assert '-  "event": "Rage Click Detected",' in preview.output
    assert '+  "event": "Rage Click",' in preview.output
    assert "nothing enqueued (--dry-run)" in preview.output

    applied = runner.invoke(app, ["replay", "--flow", "frustration_to_segment_track", "--since", "2000-01-01"])
    assert "2 enqueued" in applied.output
    again = runner.invoke(app, ["replay", "--flow", "frustration_to_segment_track", "--since", "2000-01-01"])
    assert "2 unchanged" in again.output

    async def pending_events() -> list[tuple[str, str]]:
        b = await start_bridge(workdir, database_url=f"sqlite:///{workdir / 'replay.db'}")
        try:
            rows = await b.runtime.store.list_deliveries("pending", None, 10)
            return [(orjson.loads(d.body)["event"], d.message_id) for d in rows]
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    pending = asyncio.run(pending_events())
    assert ["Rage Click", "Rage Click"] == [event for event, _ in pending]
    assert 2 == len({message_id for _, message_id in pending})


def test_replay_rejects_a_bad_since(workdir: Path) -> None:
    """--since must be an ISO time or an age such as 6h."""
    result = runner.invoke(app, ["replay", "--flow", "frustration_to_segment_track", "--since", "yesterday"])
    assert 2 == result.exit_code
    assert "30m, 6h, 7d" in result.output
