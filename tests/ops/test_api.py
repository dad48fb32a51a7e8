"""Health, readiness and the ops API: authentication, listings, stats and resume."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import orjson
import pytest

from fsbridge.app import create_app
from tests.conftest import OPS_TOKEN, RAGE_CLICK, SEGMENT_TOKEN, STREAM_TOKEN, Bridge, start_bridge


async def test_healthz_needs_no_token(bridge: Bridge) -> None:
    """/healthz answers 200 to anyone."""
    assert {"status": "ok"} == (await bridge.client.get("/healthz")).json()


async def test_readyz_is_ready_with_workers_running(bridge: Bridge) -> None:
    """With the store reachable and the worker loops running, /readyz answers 200."""
    bridge.runtime.worker.start()
    try:
        for _ in range(100):
            if not bridge.runtime.worker.alive(30):
                break
            await asyncio.sleep(0)
        response = await bridge.client.get("/readyz")
        assert 200 == response.status_code
        assert "ready" == response.json()["status"]
    finally:
        await bridge.runtime.worker.stop()


async def test_readyz_names_stopped_workers(bridge: Bridge) -> None:
    """Without running workers /readyz answers 503 and says which loop is missing."""
    response = await bridge.client.get("/readyz")
    assert 503 == response.status_code
    assert "worker loop dispatcher has stopped" in response.json()["error"]["message"]


async def test_ops_api_requires_the_token(bridge: Bridge) -> None:
    """Without or with a wrong bearer token the ops API answers 401 with the JSON error body."""
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await bridge.client.get("/ops/api/stats", headers=headers)
        assert 401 == response.status_code
        assert "unauthenticated" == response.json()["error"]["code"]


async def test_without_ops_token_only_loopback_is_allowed(tmp_path: Path) -> None:
    """With FSBRIDGE_OPS_TOKEN unset, loopback clients get in and others do not."""
    b = await start_bridge(tmp_path, ops_token=None)
    try:
        assert 200 == (await b.client.get("/ops/api/stats")).status_code
        app = create_app(b.runtime, manage_runtime=False)
        remote = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=remote, base_url="http://fsbridge") as outsider:
            assert 401 == (await outsider.get("/ops/api/stats")).status_code
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_deliveries_listing_newest_first_with_filters(bridge: Bridge) -> None:
    """/ops/api/deliveries lists the contract's fields, newest first, filtered by status and flow."""
    bridge.upstream.script_next([400])
    await bridge.post_stream(RAGE_CLICK)
    await bridge.drain()
    await bridge.post_stream({**RAGE_CLICK, "stream": {"name": "other"}})
    await bridge.drain()
    everything = (await bridge.client.get("/ops/api/deliveries", headers=bridge.ops_headers())).json()["items"]
    assert ["delivered", "dead"] == [item["status"] for item in everything]
    assert {
        "id",
        "flow",
        "destination",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "created_at",
        "next_attempt_at",
    } <= set(everything[0])
    dead = await bridge.client.get(
        "/ops/api/deliveries?status=dead&flow=frustration_to_segment_track&limit=5", headers=bridge.ops_headers()
    )
    assert [everything[1]["id"]] == [item["id"] for item in dead.json()["items"]]
    attempts = await bridge.client.get(
        f"/ops/api/deliveries/{everything[1]['id']}/attempts", headers=bridge.ops_headers()
    )
    assert [400] == [a["status_code"] for a in attempts.json()["items"]]


async def test_bad_query_is_a_json_error(bridge: Bridge) -> None:
    """An invalid filter answers 422 with the contract's error body."""
    response = await bridge.client.get("/ops/api/deliveries?status=lost", headers=bridge.ops_headers())
    assert 422 == response.status_code
    assert "invalid_request" == response.json()["error"]["code"]


async def test_replaying_unknown_or_pending_delivery(bridge: Bridge) -> None:
    """Replaying an unknown id is 404; replaying one that is already pending is 409."""
    missing = await bridge.client.post("/ops/api/deliveries/dlv_nope/replay", headers=bridge.ops_headers())
    assert 404 == missing.status_code
    await bridge.post_stream(RAGE_CLICK)
    await bridge.runtime.worker.dispatch_once()
    [pending] = await bridge.runtime.store.list_deliveries("pending", None, 1)
    again = await bridge.client.post(f"/ops/api/deliveries/{pending.id}/replay", headers=bridge.ops_headers())
    assert 409 == again.status_code


async def test_stats_shape(bridge: Bridge) -> None:
    """/ops/api/stats has totals and per source, flow and destination counts."""
    await bridge.post_stream(RAGE_CLICK)
    await bridge.drain()
    stats = (await bridge.client.get("/ops/api/stats", headers=bridge.ops_headers())).json()
    assert {"totals", "by_source", "by_flow", "by_destination", "identity", "undispatched", "coalesced"} == set(stats)
    assert 1 == stats["totals"]["received"]
    assert 1 == stats["by_flow"]["frustration_to_segment_track"]["delivered"]
    assert 1 == stats["by_destination"]["segment"]["delivered"]


async def test_resume_unknown_destination_is_404(bridge: Bridge) -> None:
    """Only segment, fullstory and slack can be resumed."""
    response = await bridge.client.post("/ops/api/destinations/mailchimp/resume", headers=bridge.ops_headers())
    assert 404 == response.status_code


async def test_openapi_describes_every_endpoint_without_a_token(bridge: Bridge) -> None:
    """/openapi.json is public and lists the webhook, health and ops endpoints."""
    paths = (await bridge.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/webhooks/fullstory",
        "/webhooks/fullstory/streams/{stream}",
        "/healthz",
        "/readyz",
        "/ops/api/deliveries",
        "/ops/api/deliveries/{delivery_id}/replay",
        "/ops/api/deliveries/replay",
        "/ops/api/quarantine",
        "/ops/api/stats",
        "/ops/api/destinations/{name}/resume",
    ):
        assert path in paths


async def test_unknown_path_is_a_json_404(bridge: Bridge) -> None:
    """Unknown paths answer with the JSON error body too."""
    response = await bridge.client.get("/webhooks/nothing")
    assert 404 == response.status_code
    assert "not_found" == response.json()["error"]["code"]


async def test_quarantine_replay_accepts_what_is_now_recognised(bridge: Bridge) -> None:
    """A quarantined event whose shape is recognised now is moved to the inbox and routed."""
    response = await bridge.post_stream({"user": {"user_id": "u1"}})
    quarantine_id = response.json()["error"]["quarantine_id"]
    store = bridge.runtime.store
    # Simulate a fix upstream of the shape check: the stored body now carries an event type.
    path = bridge.runtime.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE quarantine SET body = ? WHERE id = ?",
            (orjson.dumps({**RAGE_CLICK, "note": "fixed"}), quarantine_id),
        )
    replayed = await bridge.client.post(f"/ops/api/quarantine/{quarantine_id}/replay", headers=bridge.ops_headers())
    assert 202 == replayed.status_code
    event_id = replayed.json()["event_id"]
    await bridge.drain()
    assert [] == await store.list_quarantine(10)
    story = (await bridge.client.get(f"/ops/api/events/{event_id}", headers=bridge.ops_headers())).json()
    assert "delivered" == story["deliveries"][0]["status"]


async def test_quarantine_replay_of_what_is_still_wrong(bridge: Bridge) -> None:
    """Replaying an event that is still not recognised answers 422 and keeps it in quarantine."""
    quarantine_id = (await bridge.post_stream({"nothing": 1})).json()["error"]["quarantine_id"]
    response = await bridge.client.post(f"/ops/api/quarantine/{quarantine_id}/replay", headers=bridge.ops_headers())
    assert 422 == response.status_code
    assert "Still not recognised" in response.json()["error"]["message"]
    assert 1 == len(await bridge.runtime.store.list_quarantine(10))
    missing = await bridge.client.post("/ops/api/quarantine/qtn_nope/replay", headers=bridge.ops_headers())
    assert 404 == missing.status_code


async def test_event_story(bridge: Bridge) -> None:
    """/ops/api/events/{id} tells an event's whole story: raw body, filtered flows, deliveries, attempts."""
    bridge.upstream.script_next([500])
    event_id = (await bridge.post_stream(RAGE_CLICK)).json()["id"]
    await bridge.drain()
    bridge.clock.advance(1)
    await bridge.drain()
    story = (await bridge.client.get(f"/ops/api/events/{event_id}", headers=bridge.ops_headers())).json()
    assert "rage-click" == story["event"]["body"]["event"]["event_type"]
    [delivery] = story["deliveries"]
    assert [500, 200] == [a["status_code"] for a in delivery["attempts"]]
    assert "Rage Click Detected" == delivery["body"]["event"]
    assert 404 == (await bridge.client.get("/ops/api/events/evt_nope", headers=bridge.ops_headers())).status_code


async def test_event_story_hides_a_segment_write_key(bridge: Bridge) -> None:
    """A writeKey carried inside a Segment message is not shown to operators."""
    event_id = (
        await bridge.post_segment(
            {"type": "track", "event": "X", "userId": "u", "messageId": "m", "writeKey": "SEGMENT-SOURCE-KEY"},
            token=SEGMENT_TOKEN,
        )
    ).json()["id"]
    story = (await bridge.client.get(f"/ops/api/events/{event_id}", headers=bridge.ops_headers())).text
    assert "SEGMENT-SOURCE-KEY" not in story


class TestDashboard:
    async def test_signs_in_with_the_form_and_sets_a_safe_cookie(self, bridge: Bridge) -> None:
        """The login form sets an HTTP-only, SameSite=Strict cookie that is not the token itself."""
        assert "Ops token" in (await bridge.client.get("/ops")).text
        response = await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        assert 303 == response.status_code
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert OPS_TOKEN not in cookie
        page = await bridge.client.get("/ops")
        assert "Destinations" in page.text

    async def test_wrong_token_is_refused(self, bridge: Bridge) -> None:
        """A wrong token shows the form again with an error and sets no cookie."""
        response = await bridge.client.post("/ops/login", data={"token": "nope"})
        assert 401 == response.status_code
        assert "set-cookie" not in response.headers

    async def test_a_token_in_the_url_signs_nobody_in(self, bridge: Bridge) -> None:
        """?token= is not a way in (it would reach logs and history): 401 with the form, no cookie."""
        response = await bridge.client.get(f"/ops?token={OPS_TOKEN}")
        assert 401 == response.status_code
        assert "set-cookie" not in response.headers

    async def test_the_ops_token_as_bearer_opens_the_dashboard(self, bridge: Bridge) -> None:
        """GET /ops with Authorization: Bearer <ops token> shows the page, and sets no cookie; a wrong one is 401."""
        response = await bridge.client.get("/ops", headers=bridge.ops_headers())
        assert 200 == response.status_code
        assert "Newest dead letters" in response.text
        assert "set-cookie" not in response.headers
        assert 401 == (await bridge.client.get("/ops", headers={"Authorization": "Bearer nope"})).status_code

    async def test_the_signed_in_session_reads_the_json_api(self, bridge: Bridge) -> None:
        """The dashboard's links to /ops/api (a user's record) work with the session cookie; changes still need
        the token."""
        await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        assert 200 == (await bridge.client.get("/ops/api/stats")).status_code
        assert 401 == (await bridge.client.post("/ops/api/deliveries/replay", json={"status": "dead"})).status_code

    async def test_forms_need_the_csrf_token(self, bridge: Bridge) -> None:
        """A replay posted without the page's CSRF token is refused."""
        await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        response = await bridge.client.post("/ops/deliveries/dlv_x/replay", data={"csrf": "forged"})
        assert 403 == response.status_code

    async def test_pause_button(self, bridge: Bridge) -> None:
        """The dashboard's pause and resume buttons pause and resume a destination."""
        await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        page = (await bridge.client.get("/ops")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        await bridge.client.post("/ops/destinations/slack/pause", data={"csrf": csrf})
        assert "slack" in bridge.runtime.worker.paused
        await bridge.client.post("/ops/destinations/slack/resume", data={"csrf": csrf})
        assert "slack" not in bridge.runtime.worker.paused


@pytest.mark.parametrize("depth", [300, 1000])
async def test_a_deeply_nested_event_has_a_story_page(bridge: Bridge, depth: int) -> None:
    """An event nested 300 or 1,000 deep (accepted: orjson reads 1,024 levels) shows its story as text."""
    body = orjson.dumps({**RAGE_CLICK, "extra": "DEEP", "writeKey": "HIDDEN"}).replace(
        b'"DEEP"', b'{"x":' * depth + b"1" + b"}" * depth
    )
    response = await bridge.client.post(
        "/webhooks/fullstory/streams/frustration",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {STREAM_TOKEN}"},
    )
    assert 202 == response.status_code
    event_id = response.json()["id"]
    await bridge.drain()
    story = await bridge.client.get(f"/ops/api/events/{event_id}", headers=bridge.ops_headers())
    assert 200 == story.status_code
    assert isinstance(story.json()["event"]["body"], str)
    assert "HIDDEN" not in story.text
    await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
    page = await bridge.client.get(f"/ops/events/{event_id}")
    assert 200 == page.status_code
    assert "HIDDEN" not in page.text


async def test_a_user_id_with_a_slash_can_be_read(bridge: Bridge) -> None:
    """/ops/api/users/{id} reads ids that contain `/` (the dashboard links them as path segments)."""
    await bridge.post_segment(
        {"type": "identify", "userId": "org/42/ada", "messageId": "m-slash", "traits": {"plan": "pro"}}
    )
    await bridge.drain()
    response = await bridge.client.get("/ops/api/users/org/42/ada", headers=bridge.ops_headers())
    assert 200 == response.status_code, response.text
    assert "org/42/ada" == response.json()["user_id"]


async def test_ops_actions_are_logged_with_the_client(bridge: Bridge, capsys: pytest.CaptureFixture[str]) -> None:
    """A replay or pause through the API logs one ops.action line with the client address, never the token."""
    response = await bridge.client.post("/ops/api/destinations/slack/pause", headers=bridge.ops_headers())
    assert 200 == response.status_code
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if "ops.action" in line]
    assert "client=127.0.0.1" in line or '"client": "127.0.0.1"' in line
    assert OPS_TOKEN not in out


async def test_a_bulk_replay_takes_destination_time_and_status_code(bridge: Bridge) -> None:
    """POST /ops/api/deliveries/replay narrows by destination, since/until (ISO 8601 or Unix seconds) and
    status_code; a malformed time is a 422 naming it."""
    bridge.upstream.script_next([400])
    await bridge.post_stream(RAGE_CLICK)
    await bridge.drain()
    replay = "/ops/api/deliveries/replay"
    headers = bridge.ops_headers()
    later = bridge.clock.now() + 60
    assert {"replayed": 0} == (await bridge.client.post(replay, json={"destination": "slack"}, headers=headers)).json()
    assert {"replayed": 0} == (await bridge.client.post(replay, json={"since": later}, headers=headers)).json()
    assert {"replayed": 0} == (await bridge.client.post(replay, json={"status_code": 500}, headers=headers)).json()
    narrowed = {"destination": "segment", "since": "2000-01-01T00:00:00Z", "until": later, "status_code": 400}
    assert {"replayed": 1} == (await bridge.client.post(replay, json=narrowed, headers=headers)).json()
    wrong = await bridge.client.post(replay, json={"since": "yesterday"}, headers=headers)
    assert 422 == wrong.status_code
    assert "since" in wrong.text
