"""Health, readiness and the ops API: authentication, listings, stats and resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from fsbridge.app import create_app
from tests.conftest import RAGE_CLICK, Bridge, start_bridge


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
    assert {"totals", "by_source", "by_flow", "by_destination", "identity"} == set(stats)
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
