"""The fsbridge command: check-config, init-env, send-sample samples, and dlq list|replay."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fsbridge.cli import GENERATED_ENV, app
from fsbridge.config import FsbridgeConfig, load_config
from fsbridge.runtime import Runtime
from fsbridge.samples import SAMPLES
from fsbridge.testing import FakeUpstream
from tests.conftest import RAGE_CLICK, Bridge, make_settings, start_bridge

runner = CliRunner()
SHIPPED = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the shipped config and a database path, and no FSBRIDGE_* leaking in."""
    shutil.copytree(SHIPPED, tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    for name in GENERATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FSBRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    return tmp_path


def test_check_config_ok(workdir: Path) -> None:
    """check-config exits 0 on the shipped configuration."""
    result = runner.invoke(app, ["check-config"])
    assert 0 == result.exit_code, result.output
    assert "OK" in result.output


def test_check_config_lists_problems_with_lines(workdir: Path) -> None:
    """check-config exits 2 and prints each problem with file and line."""
    bad = workdir / "bad.yaml"
    bad.write_text("flows:\n  frustration_to_segment_track:\n    enabled: maybe\n    colour: red\n")
    result = runner.invoke(app, ["check-config", str(bad)])
    assert 2 == result.exit_code
    assert f"{bad}:3: flows.frustration_to_segment_track.enabled:" in result.output
    assert f"{bad}:4: flows.frustration_to_segment_track.colour: unknown setting 'colour'" in result.output


def test_check_config_refuses_dry_run_false_without_credentials(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FSBRIDGE_DRY_RUN=false without a Segment write key is a configuration error that names the variable."""
    monkeypatch.setenv("FSBRIDGE_DRY_RUN", "false")
    monkeypatch.delenv("FSBRIDGE_SEGMENT_WRITE_KEY", raising=False)
    result = runner.invoke(app, ["check-config"])
    assert 2 == result.exit_code
    assert "FSBRIDGE_SEGMENT_WRITE_KEY" in result.output


def test_init_env_writes_fresh_secrets_once(workdir: Path) -> None:
    """init-env writes every generated variable with a random value, mode 0600, and never overwrites."""
    assert 0 == runner.invoke(app, ["init-env"]).exit_code
    env = workdir / ".env"
    text = env.read_text()
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert {*GENERATED_ENV, "POSTGRES_PASSWORD"} == set(values)
    assert all(len(v) >= 32 for v in values.values())
    assert 0o600 == stat.S_IMODE(env.stat().st_mode)
    assert "keeping it" in runner.invoke(app, ["init-env"]).output
    assert text == env.read_text()


def test_init_env_fills_a_copied_env_example(workdir: Path) -> None:
    """On a copy of .env.example, init-env fills the empty generated secrets and POSTGRES_PASSWORD, keeps every
    value already set, and the result loads."""
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    env = workdir / ".env"
    env.write_text(example.replace("FSBRIDGE_OPS_TOKEN=", "FSBRIDGE_OPS_TOKEN=mine-0123456789"))
    result = runner.invoke(app, ["init-env"])
    assert 0 == result.exit_code, result.output
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line and line[0] != "#")
    assert "mine-0123456789" == values["FSBRIDGE_OPS_TOKEN"]
    assert all(len(values[n]) >= 32 for n in (*GENERATED_ENV, "POSTGRES_PASSWORD") if n != "FSBRIDGE_OPS_TOKEN")
    assert "https://api.segment.io" == values["FSBRIDGE_SEGMENT_API_URL"]
    assert 0 == runner.invoke(app, ["check-config"]).exit_code


def test_unknown_sample(workdir: Path) -> None:
    """send-sample with an unknown name exits 2 and lists the samples."""
    result = runner.invoke(app, ["send-sample", "nope"])
    assert 2 == result.exit_code
    assert "rage_click" in result.output


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_every_sample_is_accepted(bridge: Bridge, name: str) -> None:
    """Each sample is signed with the configured secrets and accepted with 202."""
    request = SAMPLES[name](bridge.runtime.settings, bridge.clock.now())
    response = await bridge.client.post(request.path, content=request.body, headers=request.headers)
    assert 202 == response.status_code, response.text


async def test_stream_sample_signs_when_no_token_is_configured(tmp_path: Path) -> None:
    """With only webhook secrets configured, the Streams sample carries a Fullstory-Signature instead."""
    b = await start_bridge(tmp_path, fullstory_stream_tokens=())
    try:
        request = SAMPLES["rage_click"](b.runtime.settings, b.clock.now())
        assert "Fullstory-Signature" in request.headers
        assert 202 == (await b.client.post(request.path, content=request.body, headers=request.headers)).status_code
    finally:
        await b.client.aclose()
        await b.runtime.stop()


def test_dlq_list_and_replay(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dlq list shows a dead letter; dlq replay ID puts it back in the queue; --all replays the rest."""
    settings = make_settings(workdir, database_url=f"sqlite:///{workdir / 'cli.db'}")

    async def make_dead_letters() -> list[str]:
        b = await start_bridge(workdir, FakeUpstream(default=400), database_url=settings.database_url)
        try:
            for n in range(2):
                await b.post_stream({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": str(n)}})
                await b.drain()
            return [d.id for d in await b.runtime.store.list_deliveries("dead", None, 10)]
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    dead = asyncio.run(make_dead_letters())
    listed = runner.invoke(app, ["dlq", "list"])
    assert 0 == listed.exit_code, listed.output
    assert all(d in listed.output for d in dead)

    replayed = runner.invoke(app, ["dlq", "replay", dead[0]])
    assert f"{dead[0]}: replaying" in replayed.output
    rest = runner.invoke(app, ["dlq", "replay", "--all", "--flow", "frustration_to_segment_track"])
    assert "Replayed 1 dead letters." in rest.output
    assert "No dead letters." in runner.invoke(app, ["dlq", "list"]).output

    async def statuses() -> list[str]:
        runtime = Runtime(settings, FsbridgeConfig())
        await runtime.store.open()
        try:
            return [d.status for d in await runtime.store.list_deliveries(None, None, 10)]
        finally:
            await runtime.stop()

    assert ["pending", "pending"] == asyncio.run(statuses())


def test_dlq_replay_needs_ids_or_all(workdir: Path) -> None:
    """dlq replay without ids or --all exits 2 with a hint."""
    result = runner.invoke(app, ["dlq", "replay"])
    assert 2 == result.exit_code
    assert "--all" in result.output


def table_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = ("inbox", "deliveries", "attempts", "flow_outcomes", "counters", "identity_links", "jobs")
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608


def test_backtest_runs_a_disabled_flow_over_history_and_changes_nothing(workdir: Path) -> None:
    """backtest prints what a not-yet-enabled flow would have sent, by event name, with examples,
    and writes nothing to the store."""
    config_path = workdir / "config" / "fsbridge.yaml"
    disabled = config_path.read_text().replace(
        "  frustration_to_segment_track:\n    enabled: true", "  frustration_to_segment_track:\n    enabled: false"
    )
    config_path.write_text(disabled)

    async def receive() -> None:
        config = load_config(config_path)
        b = await start_bridge(workdir, config=config, database_url=f"sqlite:///{workdir / 'cli.db'}")
        try:
            for n, kind in enumerate(["rage-click", "rage-click", "dead-click", "page-view"]):
                await b.post_stream({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "event_type": kind, "n": n}})
            await b.drain()
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    asyncio.run(receive())
    before = table_counts(workdir / "cli.db")
    result = runner.invoke(app, ["backtest", "frustration_to_segment_track", "--since", "2000-01-01"])
    assert 0 == result.exit_code, result.output
    assert "over 4 stored events since 2000-01-01: would send 3, hold back 1, fail 0." in result.output
    assert "would send Rage Click Detected: 2" in result.output
    assert "would send Dead Click Detected: 1" in result.output
    assert "held back by is_frustration_signal: 1" in result.output
    assert '"event": "Rage Click Detected"' in result.output
    assert before == table_counts(workdir / "cli.db")
    assert 0 == before["deliveries"]


def test_jobs_list_and_run(workdir: Path) -> None:
    """jobs list shows every job; jobs run NAME runs one now and prints its outcome and counts."""
    listed = runner.invoke(app, ["jobs", "list"])
    assert 0 == listed.exit_code, listed.output
    assert "health_monitor  enabled" in listed.output
    assert "retention  enabled  every=3600s" in listed.output
    ran = runner.invoke(app, ["jobs", "run", "retention"])
    assert 0 == ran.exit_code, ran.output
    assert "retention: ok delivered=0 dead=0 filtered=0 inbox=0 aggregate_state=0" in ran.output
    assert "outcome=ok" in runner.invoke(app, ["jobs", "list"]).output
    unknown = runner.invoke(app, ["jobs", "run", "nope"])
    assert 2 == unknown.exit_code


def test_backtest_runs_a_disabled_aggregation_flow_on_a_copy_of_state(workdir: Path) -> None:
    """backtest experience_at_risk, disabled in the configuration, prints the at-risk track and identify that
    three rage clicks in one session would send, and changes nothing in the store."""
    config_path = workdir / "config" / "fsbridge.yaml"
    text = config_path.read_text()
    config_path.write_text(
        text.replace("    enabled: true\n    signals: [rage_click]", "    enabled: false\n    signals: [rage_click]")
    )
    assert not load_config(config_path).flows.experience_at_risk.enabled

    async def receive() -> None:
        b = await start_bridge(workdir, config=load_config(config_path), database_url=f"sqlite:///{workdir / 'cli.db'}")
        try:
            for n in range(3):
                await b.post_stream({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "n": n}})
            await b.drain()
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    asyncio.run(receive())
    before = table_counts(workdir / "cli.db")
    result = runner.invoke(app, ["backtest", "experience_at_risk", "--since", "2000-01-01"])
    assert 0 == result.exit_code, result.output
    assert "experience_at_risk over 3 stored events since 2000-01-01: would send 2" in result.output
    assert "would send Experience At Risk: 1" in result.output
    assert "would send identify experience_at_risk, experience_at_risk_since: 1" in result.output
    assert before == table_counts(workdir / "cli.db")


def test_backtest_of_feature_adoption_counts_history_for_everyone(workdir: Path) -> None:
    """backtest feature_adoption (disabled) decides each closed window over stored uses: a drop alerts."""
    config_path = workdir / "config" / "fsbridge.yaml"
    document = yaml.safe_load(config_path.read_text())
    document["flows"]["feature_adoption"] |= {
        "enabled": False, "window": "10s", "baseline_windows": 3, "min_baseline": 2, "drop_below": 0.5,
        "features": {"report_export": {"source": "segment", "event": "Report Exported"}},
    }  # fmt: skip
    config_path.write_text(yaml.safe_dump(document))

    async def receive() -> None:
        b = await start_bridge(workdir, config=load_config(config_path), database_url=f"sqlite:///{workdir / 'cli.db'}")
        try:
            for window, uses in enumerate([4, 4, 4, 1]):
                for n in range(uses):
                    message = {
                        "type": "track",
                        "event": "Report Exported",
                        "userId": "u1",
                        "messageId": f"{window}-{n}",
                    }
                    assert 202 == (await b.post_segment(message)).status_code
                b.clock.advance(10)
            await b.drain()
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    asyncio.run(receive())
    result = runner.invoke(app, ["backtest", "feature_adoption", "--since", "2000-01-01"])
    assert 0 == result.exit_code, result.output
    assert "feature_adoption over 13 stored events" in result.output
    assert "would send slack.message: 1" in result.output


def test_dlq_replay_all_takes_the_same_filters_as_the_api(workdir: Path) -> None:
    """dlq replay --all accepts --destination, --since, --until and --status-code; a malformed time is one line."""
    result = runner.invoke(app, ["dlq", "replay", "--all", "--destination", "segment", "--since", "2026-01-01",
                                 "--until", "1900000000", "--status-code", "400"])  # fmt: skip
    assert 0 == result.exit_code, result.output
    assert "Replayed 0 dead letters." in result.output
    wrong = runner.invoke(app, ["dlq", "replay", "--all", "--since", "yesterday"])
    assert 2 == wrong.exit_code
    assert "--since: 'yesterday' is not ISO 8601 or Unix seconds." in wrong.output
