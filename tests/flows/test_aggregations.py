"""The per-user aggregation flows (Part 2): experience at risk and recovered, frustration traits
with coalescing, the health score and its explanation, and NPS follow-up with hysteresis; each
transition sent once."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from fsbridge.cli import app
from fsbridge.config import FsbridgeConfig, parse_config
from fsbridge.errors import ConfigError
from fsbridge.testing import fullstory_signed_headers
from tests.conftest import OPS_TOKEN, WEBHOOK_SECRET, Bridge, make_settings, start_bridge

NOW = 1_795_000_000.0
HOUR, DAY = 3600.0, 86400.0


def config(**flows: Any) -> FsbridgeConfig:
    return FsbridgeConfig.model_validate({"flows": flows})


def click(n: int, *, session: str = "s1", user: str | None = "u_1", kind: str = "rage-click") -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": {"event_type": kind, "target_text": f"click {n}"},
        "session": {"session_id": f"5557778531805533:{session}"},
        "session_url": f"https://app.fullstory.com/ui/o/session/5557778531805533:{session}",
    }
    if user is not None:
        payload["user"] = {"user_id": user}
    return payload


def sent(b: Bridge, event: str | None = None, trait: str | None = None) -> list[dict[str, Any]]:
    messages = b.upstream.messages()
    if event is not None:
        return [m for m in messages if m.get("event") == event]
    return [m for m in messages if m["type"] == "identify" and trait in m.get("traits", {})]


async def clicks(b: Bridge, *payloads: dict[str, Any]) -> None:
    for payload in payloads:
        assert 202 == (await b.post_stream(payload)).status_code
    await b.drain()


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    b = await start_bridge(tmp_path, config=config(experience_at_risk={"recover_after": "1h"}), aggregations=True)
    yield b
    await b.client.aclose()
    await b.runtime.stop()


async def test_three_rage_clicks_in_a_session_put_the_user_at_risk_once(bridge: Bridge) -> None:
    """3 rage clicks in one session: one Experience At Risk track and one identify; a 4th sends nothing more."""
    await clicks(bridge, click(1), click(2))
    assert [] == sent(bridge, "Experience At Risk")
    await clicks(bridge, click(3))
    [track] = sent(bridge, "Experience At Risk")
    assert "u_1" == track["userId"]
    assert {"session_id": "5557778531805533:s1", "signal_count": 3, "threshold": 3, "source": "fullstory"}.items() <= (
        track["properties"].items()
    )
    assert track["properties"]["session_url"].endswith(":s1")
    assert "first_signal_at" in track["properties"]
    [identify] = sent(bridge, trait="experience_at_risk")
    assert (True, "2026-11-18T11:06:40.000Z") == (
        identify["traits"]["experience_at_risk"],
        identify["traits"]["experience_at_risk_since"],
    )
    await clicks(bridge, click(4))
    assert 1 == len(sent(bridge, "Experience At Risk"))


async def test_two_sessions_of_two_clicks_are_not_at_risk(bridge: Bridge) -> None:
    """The count is per session: two sessions of 2 rage clicks send nothing; dead clicks do not count."""
    await clicks(bridge, click(1), click(2), click(3, session="s2"), click(4, session="s2"))
    await clicks(bridge, click(5, kind="dead-click"))
    assert [] == sent(bridge, "Experience At Risk")


async def test_recovery_after_recover_after_is_sent_once(bridge: Bridge) -> None:
    """recover_after (1 h here) with no new at-risk session: the recovery job sends Experience Recovered and
    experience_at_risk: false once; a job run before that sends nothing."""
    await clicks(bridge, click(1), click(2), click(3))
    scheduler = bridge.runtime.scheduler
    bridge.clock.advance(HOUR / 2)
    await scheduler.run_now("experience_recovery")
    await bridge.drain()
    assert [] == sent(bridge, "Experience Recovered")
    bridge.clock.advance(HOUR)
    result = await scheduler.run_now("experience_recovery")
    await bridge.drain()
    assert ("ok", 1) == (result.outcome, (result.counts or {})["users"])
    [recovered] = sent(bridge, "Experience Recovered")
    assert "u_1" == recovered["userId"]
    assert [True, False] == [m["traits"]["experience_at_risk"] for m in sent(bridge, trait="experience_at_risk")]
    bridge.clock.advance(HOUR)
    await scheduler.run_now("experience_recovery")
    await bridge.drain()
    assert 1 == len(sent(bridge, "Experience Recovered"))


async def test_anonymous_users_are_tracked_by_the_frustration_flows_anonymous_id(tmp_path: Path) -> None:
    """Clicks without a user id are counted for the anonymousId the frustration track carries."""
    b = await start_bridge(tmp_path, aggregations=True)
    try:
        await clicks(b, *(click(n, user=None) for n in range(3)))
        frustration = {m["anonymousId"] for m in sent(b, "Rage Click Detected")}
        [at_risk] = sent(b, "Experience At Risk")
        assert ({at_risk["anonymousId"]}, None) == (frustration, at_risk["userId"])
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_traits_are_coalesced_within_min_interval(bridge: Bridge) -> None:
    """The first change is sent at once; later ones inside min_interval (15 m) become one identify at its end,
    with the values current then; nothing more is sent when nothing changes. /ops/api/stats counts the saving."""
    await clicks(bridge, click(1, session="a"))
    first = sent(bridge, trait="fullstory_rage_clicks_7d")
    assert [1] == [m["traits"]["fullstory_rage_clicks_7d"] for m in first]
    bridge.clock.advance(60)
    await clicks(bridge, click(2, session="b", kind="dead-click"))
    bridge.clock.advance(60)
    await clicks(bridge, click(3, session="c"))
    assert 1 == len(sent(bridge, trait="fullstory_rage_clicks_7d"))  # the rest waits for the interval's end
    bridge.clock.advance(15 * 60)
    await bridge.drain()
    later = [m for m in bridge.upstream.messages() if m["type"] == "identify" and
             "fullstory_last_frustration_at" in m.get("traits", {})]  # fmt: skip
    assert 2 == len(later)
    assert {"fullstory_rage_clicks_7d": 2, "fullstory_dead_clicks_7d": 1}.items() <= later[1]["traits"].items()
    assert "fullstory_error_clicks_7d" not in later[1]["traits"]  # unchanged since the last identify
    stats = (await bridge.client.get("/ops/api/stats", headers=bridge.ops_headers())).json()
    assert 1 == stats["coalesced"]["frustration_traits"]
    metrics = (await bridge.client.get("/metrics", headers=bridge.ops_headers())).text
    assert 'fsbridge_identifies_coalesced_total{flow="frustration_traits"} 1.0' in metrics


async def test_the_score_follows_the_contracts_formula_and_is_explained(bridge: Bridge, tmp_path: Path) -> None:
    """score = clamp(0, 100, round(100 - sum(weight * 0.5 ** (age / half_life)))): checked against the formula
    one half-life later; GET /ops/api/users/{id} and `fsbridge score explain` show every contribution."""
    await clicks(bridge, click(1), click(2, kind="dead-click"), click(3, kind="error-click"))
    bridge.clock.advance(7 * DAY)  # one half-life: every contribution has halved
    body = (await bridge.client.get("/ops/api/users/u_1", headers=bridge.ops_headers())).json()
    score = body["score"]
    assert round(100 - (5 + 2 + 3) * 0.5) == score["score"] == 95
    assert ["error_click", "dead_click", "rage_click"] == [c["signal"] for c in score["contributions"]]
    assert [1.5, 1.0, 2.5] == [c["value"] for c in score["contributions"]]
    assert "good" == score["band"]


async def test_score_explain_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fsbridge score explain USER_ID` prints each contribution and the result."""
    b = await start_bridge(tmp_path, aggregations=True)
    try:
        await clicks(b, click(1), click(2))
    finally:
        await b.client.aclose()
        await b.runtime.stop()
    for name, value in make_settings(tmp_path).model_dump().items():
        if value is not None and isinstance(value, str | int | float):
            monkeypatch.setenv(f"FSBRIDGE_{name.upper()}", str(value))
    monkeypatch.setenv("FSBRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'fsbridge.db'}")
    result = await asyncio.to_thread(CliRunner().invoke, app, ["score", "explain", "u_1"])
    assert 0 == result.exit_code, result.output
    lines = result.output.strip().splitlines()
    assert 2 == sum(line.startswith("rage_click") for line in lines)
    # The command reads the time from the system clock: the contributions have decayed since the clicks.
    found = re.match(r"score (\d+) \(good\) = clamp\(0, 100, round\(100 - ([\d.]+)\)\)", lines[-1])
    assert found is not None, lines[-1]
    assert int(found.group(1)) == round(100 - float(found.group(2)))
    assert 0 < float(found.group(2)) < 10  # two rage clicks of weight 5, decayed


async def test_nps_follow_up_with_hysteresis(tmp_path: Path) -> None:
    """Below 60: suppressed (identify + track); below 40: one outreach request with its reasons; back at 70 or
    more (scores recover as signals age, by the recompute job): released; nothing flaps in between."""
    flows = {"health_score": {"weights": {"rage_click": 15, "at_risk_session": 0}, "half_life": "1d"},
             "frustration_traits": {"enabled": False}}  # fmt: skip
    b = await start_bridge(tmp_path, config=config(**flows), aggregations=True)
    try:
        await clicks(b, click(1, session="a"), click(2, session="b"), click(3, session="c"))  # 55
        assert [True] == [m["traits"]["nps_suppressed"] for m in sent(b, trait="nps_suppressed")]
        [suppressed] = sent(b, "NPS Survey Suppressed")
        assert {"score": 55, "band": "fair", "source": "fullstory"} == suppressed["properties"]
        assert [] == sent(b, "Experience Outreach Requested")
        await clicks(b, click(4, session="d"), click(5, session="e"))  # 25
        [outreach] = sent(b, "Experience Outreach Requested")
        assert (25, "poor", 3) == (outreach["properties"]["score"], outreach["properties"]["band"],
                                   len(outreach["properties"]["reasons"]))  # fmt: skip
        await clicks(b, click(6, session="f"))  # 10: still the same drop
        assert 1 == len(sent(b, "Experience Outreach Requested"))
        scheduler = b.runtime.scheduler
        b.clock.advance(DAY)  # 100 - 90 / 2 = 55: between the marks, nothing changes
        await scheduler.run_now("health_score_recompute")
        await b.drain()
        assert [True] == [m["traits"]["nps_suppressed"] for m in sent(b, trait="nps_suppressed")]
        b.clock.advance(DAY)  # 100 - 90 / 4 = 77.5 -> 78: released
        await scheduler.run_now("health_score_recompute")
        await b.drain()
        assert [True, False] == [m["traits"]["nps_suppressed"] for m in sent(b, trait="nps_suppressed")]
        scores = [m["traits"]["fullstory_health_score"] for m in sent(b, trait="fullstory_health_score")]
        assert scores[-1] == 78
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_redelivered_webhook_counts_once_and_a_deletion_forgets_the_state(
    bridge: Bridge, tmp_path: Path
) -> None:
    """A Stream redelivering the same click stores it once, so it is counted once; a Segment deletion removes
    the user's aggregation state and score."""
    await clicks(bridge, click(1), click(1), click(1), click(2))
    assert [] == sent(bridge, "Experience At Risk")  # 2 distinct clicks, not 4
    await bridge.post_segment({"type": "delete", "userId": "u_1", "messageId": "del-1"})
    await bridge.drain()
    with sqlite3.connect(tmp_path / "fsbridge.db") as conn:
        assert 0 == conn.execute("SELECT COUNT(*) FROM user_state").fetchone()[0]
    assert 404 == (await bridge.client.get("/ops/api/users/u_1", headers=bridge.ops_headers())).status_code


async def test_two_workers_on_postgresql_decide_each_transition_once(tmp_path: Path, postgres_url: str) -> None:
    """Two runtimes' workers over one PostgreSQL dispatch 12 rage clicks of one session one at a time,
    concurrently: Experience At Risk is queued once."""
    cfg = FsbridgeConfig.model_validate({"worker": {"dispatch_batch": 1}})
    a = await start_bridge(tmp_path / "a", config=cfg, database_url=postgres_url, aggregations=True)
    b = await start_bridge(tmp_path / "b", config=cfg, database_url=postgres_url, aggregations=True)
    try:
        for n in range(12):
            await a.post_stream(click(n))
        for _ in range(30):
            moved = await asyncio.gather(a.runtime.worker.dispatch_once(), b.runtime.worker.dispatch_once())
            if sum(moved) == 0:
                break
        queued = await a.runtime.store.list_deliveries(None, "experience_at_risk", 100)
        assert 2 == len(queued)  # the track and the identify
    finally:
        for bridge in (a, b):
            await bridge.client.aclose()
            await bridge.runtime.stop()


def test_a_weight_for_an_unknown_signal_is_a_config_error() -> None:
    """check-config names the unknown signal and its line."""
    with pytest.raises(ConfigError) as raised:
        parse_config("flows:\n  health_score:\n    weights: {rage_click: 5, mouse_thrash: 2}\n", "f.yaml")
    assert any("f.yaml:3" in p and "mouse_thrash" in p for p in raised.value.problems)


async def test_the_dashboard_shows_at_risk_users_and_score_bands(bridge: Bridge) -> None:
    """/ops lists users at risk now, linking to each user's HTML page (which the signed-in session reads: score,
    contributions, events), and how many users are in each band."""
    await clicks(bridge, click(1), click(2), click(3))
    await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
    page = (await bridge.client.get("/ops")).text
    assert '<tr class="at-risk-user"><td><a href="/ops/users/u_1">u:u_1</a>' in page
    assert "good 1" in page  # 100 - 3 rage clicks * 5 - the at-risk session's 10 = 75
    user = await bridge.client.get("/ops/users/u_1")
    assert 200 == user.status_code
    assert "Health score: 75 (good)" in user.text
    assert "At risk: <b>yes</b>" in user.text
    assert 3 == user.text.count("<td>fullstory_stream</td><td>rage_click</td>")
    assert 404 == (await bridge.client.get("/ops/users/nobody")).status_code


async def test_a_dispatch_killed_after_the_decision_sends_the_transition_once(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state, its decision and the messages are one transaction: killed after the decision (as a kill
    between statements would), nothing is kept; the clicks routed again later put the user at risk once."""
    from fsbridge.store import user_state

    save = user_state.save
    failing = {"on": True}

    def save_then_fail(conn: Any, rows: Any, stored: Any) -> None:
        save(conn, rows, stored)
        if failing["on"]:
            raise RuntimeError("killed between statements")

    monkeypatch.setattr(user_state, "save", save_then_fail)
    for n in range(3):
        await bridge.post_stream(click(n))
    await bridge.drain()
    assert [] == sent(bridge, "Experience At Risk")
    failing["on"] = False
    bridge.clock.advance(bridge.runtime.config.worker.dispatch_retry_seconds + 1)
    await bridge.drain()
    assert 1 == len(sent(bridge, "Experience At Risk"))
    await clicks(bridge, click(9))
    assert 1 == len(sent(bridge, "Experience At Risk"))


async def test_one_signed_click_replayed_to_other_stream_names_counts_once(bridge: Bridge) -> None:
    """A signed click posted to 5 stream names is one event: stored once, counted once (3 needed for at-risk)."""
    body = orjson.dumps(click(1))
    headers = fullstory_signed_headers(body, WEBHOOK_SECRET, int(bridge.clock.now()))
    answers = [
        (await bridge.client.post(f"/webhooks/fullstory/streams/s{n}", content=body, headers=headers)).json()
        for n in range(5)
    ]
    assert [False, True, True, True, True] == [a.get("duplicate", False) for a in answers]
    await bridge.drain()
    assert [] == sent(bridge, "Experience At Risk")


async def test_a_streams_user_id_with_spaces_is_the_segment_user(bridge: Bridge, tmp_path: Path) -> None:
    """Streams keeps surrounding spaces, Segment trims them: both name one user, in state and in messages."""
    await clicks(bridge, click(1, user=" u_1 "), click(2, user="u_1"), click(3, user="u_1\t"))
    [track] = sent(bridge, "Experience At Risk")
    assert "u_1" == track["userId"]
    assert {"u_1"} == {m["userId"] for m in sent(bridge, "Rage Click Detected")}
    with sqlite3.connect(tmp_path / "fsbridge.db") as conn:
        assert [("u:u_1",)] == conn.execute("SELECT user_key FROM user_state").fetchall()


async def test_hostile_session_ids_keep_the_state_small(bridge: Bridge, tmp_path: Path) -> None:
    """Clicks with 1 MiB session ids and URLs: the user's state stays a few KiB, and the session still counts."""
    huge = "s" * (1024 * 1024)
    await clicks(bridge, *(click(n, session=f"{n % 3}{huge}") for n in range(9)))
    with sqlite3.connect(tmp_path / "fsbridge.db") as conn:
        [(size,)] = conn.execute("SELECT LENGTH(state) FROM user_state").fetchall()
    assert size < 4096
    tracks = sent(bridge, "Experience At Risk")
    assert 3 == len(tracks)
    assert all(t["properties"]["session_id"].startswith("sha256:") for t in tracks)
    assert all(t["properties"].get("session_url") is None for t in tracks)
