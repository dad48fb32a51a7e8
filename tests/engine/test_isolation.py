"""Per-destination isolation: token bucket with 429 back-off, circuit breaker, pause, and a dead
Fullstory that does not hold up Segment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from fsbridge.app import create_app
from fsbridge.clock import SystemClock
from fsbridge.config import BreakerConfig, FsbridgeConfig
from fsbridge.engine.isolation import BreakerState, CircuitBreaker, TokenBucket
from fsbridge.runtime import Runtime
from fsbridge.sources.signatures import sign_segment
from fsbridge.testing import FakeUpstream
from tests.conftest import (
    RAGE_CLICK,
    SEGMENT_SECRET,
    STREAM_TOKEN,
    Bridge,
    make_settings,
    start_bridge,
    without_aggregations,
)

NOW = 1_795_000_000.0


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """Read through a call, so the type checker does not narrow the state across transitions."""
    return breaker.state


class TestTokenBucket:
    def test_burst_then_rate(self) -> None:
        """A full bucket allows a burst; then requests are admitted at the configured rate."""
        bucket = TokenBucket(rate=4, burst=5, now=NOW)
        assert 5 == bucket.available(NOW)
        bucket.take(5, NOW)
        assert 0 == bucket.available(NOW)
        assert 0.25 == bucket.wait(NOW)
        assert 1 == bucket.available(NOW + 0.25)
        assert 5 == bucket.available(NOW + 10)

    def test_429_halves_the_rate_then_it_recovers(self) -> None:
        """A 429 halves the rate; it recovers by 10 % of the configured rate per recovery period."""
        bucket = TokenBucket(rate=10, burst=5, now=NOW, recovery_seconds=10)
        bucket.throttled(NOW)
        assert 5 == bucket.rate
        bucket.throttled(NOW)
        assert 2.5 == bucket.rate
        bucket.available(NOW + 10)
        assert pytest.approx(3.5) == bucket.rate
        bucket.available(NOW + 100)
        assert 10 == bucket.rate

    def test_rate_never_falls_below_the_floor(self) -> None:
        """Repeated 429s stop at the floor rate."""
        bucket = TokenBucket(rate=1, burst=1, now=NOW, floor=0.1)
        for _ in range(20):
            bucket.throttled(NOW)
        assert 0.1 == bucket.rate


class TestCircuitBreaker:
    def test_opens_on_failure_ratio_with_minimum_count(self) -> None:
        """Failures open the breaker only once the minimum number of requests was seen."""
        breaker = CircuitBreaker(window_seconds=60, min_requests=4, failure_ratio=0.75, open_seconds=30)
        for success in (False, True, False):
            breaker.record(success, NOW)
        assert BreakerState.CLOSED == state_of(breaker)  # 2 of 3 failed, but fewer than 4 requests seen
        breaker.record(False, NOW)
        assert BreakerState.OPEN == state_of(breaker)  # 3 of 4 failed: the ratio 0.75 is reached
        assert not breaker.allows(NOW + 29)

    def test_half_open_probe_closes_on_success(self) -> None:
        """After open_seconds one probe is allowed; its success closes the breaker."""
        breaker = CircuitBreaker(min_requests=1, failure_ratio=1.0, open_seconds=30)
        breaker.record(False, NOW)
        assert breaker.allows(NOW + 30)
        assert BreakerState.HALF_OPEN == state_of(breaker)
        assert not breaker.allows(NOW + 30)  # only one probe at a time
        breaker.record(True, NOW + 31)
        assert BreakerState.CLOSED == state_of(breaker)
        assert breaker.allows(NOW + 31)

    def test_half_open_probe_failure_reopens(self) -> None:
        """A failed probe opens the breaker for another open period."""
        breaker = CircuitBreaker(min_requests=1, failure_ratio=1.0, open_seconds=30)
        breaker.record(False, NOW)
        breaker.allows(NOW + 30)
        breaker.record(False, NOW + 31)
        assert BreakerState.OPEN == state_of(breaker)
        assert 30 == breaker.reopens_in(NOW + 31)

    def test_old_outcomes_leave_the_window(self) -> None:
        """Failures older than the window no longer count."""
        breaker = CircuitBreaker(window_seconds=60, min_requests=3, failure_ratio=0.5)
        breaker.record(False, NOW)
        breaker.record(False, NOW)
        breaker.record(True, NOW + 120)
        breaker.record(True, NOW + 121)
        breaker.record(False, NOW + 122)
        assert BreakerState.CLOSED == state_of(breaker)


def breaker_config(**breaker: float) -> FsbridgeConfig:
    return FsbridgeConfig.model_validate({"destinations": {"segment": {"breaker": breaker}}})


class TestThroughTheWorker:
    async def test_open_breaker_holds_deliveries_then_probes(self, tmp_path: Path) -> None:
        """Repeated 503s open Segment's breaker: deliveries wait (still pending) until one probe succeeds."""
        config = breaker_config(min_requests=2, failure_ratio=1.0, open_seconds=60, window_seconds=300)
        b = await start_bridge(tmp_path, FakeUpstream(script=[503, 503]), config=config)
        try:
            await b.post_stream(RAGE_CLICK)
            await b.drain()
            b.clock.advance(1)
            await b.drain()
            assert BreakerState.OPEN == state_of(b.runtime.worker.guards["segment"].breaker)
            b.clock.advance(5)
            await b.drain()
            assert 2 == len(b.upstream.requests)
            [delivery] = await b.runtime.store.list_deliveries(None, None, 5)
            assert "pending" == delivery.status
            b.clock.advance(60)
            await b.drain()
            assert "delivered" == (await b.runtime.store.list_deliveries(None, None, 5))[0].status
            assert BreakerState.CLOSED == state_of(b.runtime.worker.guards["segment"].breaker)
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    async def test_429_lowers_the_destination_rate(self, bridge: Bridge) -> None:
        """A 429 halves that destination's rate limit, and only that destination's."""
        bridge.upstream.script_next([(429, {"Retry-After": "1"})])
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        guards = bridge.runtime.worker.guards
        assert 25 == guards["segment"].bucket.rate
        assert 20 == guards["fullstory"].bucket.rate

    async def test_rate_limit_spreads_requests(self, tmp_path: Path) -> None:
        """With 1 request a second and a burst of 1, Fullstory upserts go out one per second of clock time."""
        config = FsbridgeConfig.model_validate(
            {"destinations": {"fullstory": {"rate_limit_per_second": 1, "burst": 1}}}
        )
        b = await start_bridge(tmp_path, config=config)
        try:
            for n in range(3):
                await b.post_segment({"type": "identify", "userId": f"u{n}", "messageId": f"m{n}", "traits": {}})
            await b.drain()
            assert 1 == len(b.upstream.fullstory("POST"))
            b.clock.advance(1)
            await b.drain()
            assert 2 == len(b.upstream.fullstory("POST"))
            b.clock.advance(1)
            await b.drain()
            assert 3 == len(b.upstream.fullstory("POST"))
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    async def test_paused_destination_keeps_queueing_and_others_flow(self, bridge: Bridge) -> None:
        """Pausing Fullstory keeps its deliveries pending while Segment deliveries go out; resume sends them."""
        headers = bridge.ops_headers()
        assert 200 == (await bridge.client.post("/ops/api/destinations/fullstory/pause", headers=headers)).status_code
        await bridge.post_segment({"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"a": 1}})
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        assert 1 == len(bridge.upstream.messages())
        assert [] == bridge.upstream.fullstory()
        ready = await bridge.client.get("/readyz")
        assert ["fullstory"] == ready.json()["error"]["paused"]
        await bridge.client.post("/ops/api/destinations/fullstory/resume", headers=headers)
        await bridge.drain()
        assert 1 == len(bridge.upstream.fullstory("POST"))


async def test_dead_fullstory_does_not_slow_segment(tmp_path: Path) -> None:
    """With Fullstory hanging on every request, Segment deliveries still complete, with the loops running.

    Fullstory's fake holds each request until Segment has received every click: if Segment waited
    behind Fullstory, that would never happen and the test would time out (bounded at 10 s)."""
    segment_done = asyncio.Event()
    clicks = 20
    received: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/batch":
            received.extend(m["messageId"] for m in orjson.loads(request.content)["batch"])
            if len(received) >= clicks:
                segment_done.set()
            return httpx.Response(200, json={"success": True})
        await segment_done.wait()
        return httpx.Response(503, json={"code": "server_error"})

    config = without_aggregations(
        FsbridgeConfig.model_validate(
            {"worker": {"poll_interval_seconds": 0.05}, "destinations": {"fullstory": {"concurrency": 1}}}
        )
    )
    runtime = Runtime(
        make_settings(tmp_path, retry_base_seconds=0),
        config,
        transport=httpx.MockTransport(handler),
        clock=SystemClock(),
    )
    await runtime.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime, manage_runtime=False)), base_url="http://t"
    )
    try:
        for n in range(5):
            await bridge_post_segment(client, n)
        for n in range(clicks):
            payload = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"b{n}"}}
            await client.post(
                "/webhooks/fullstory/streams/s",
                content=orjson.dumps(payload),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {STREAM_TOKEN}"},
            )
        await asyncio.wait_for(segment_done.wait(), timeout=10)
        assert clicks == len(set(received))
    finally:
        segment_done.set()
        await client.aclose()
        await runtime.stop()


async def bridge_post_segment(client: httpx.AsyncClient, n: int) -> None:
    body = orjson.dumps({"type": "identify", "userId": f"u{n}", "messageId": f"id-{n}", "traits": {"n": n}})
    await client.post(
        "/webhooks/segment",
        content=body,
        headers={"Content-Type": "application/json", "X-Signature": sign_segment(body, SEGMENT_SECRET)},
    )


def test_breaker_config_defaults_follow_convoy() -> None:
    """Defaults: open at 70 % failures over 5 minutes with at least 10 requests, for 30 s."""
    assert (300.0, 10, 0.7, 30.0) == tuple(BreakerConfig().model_dump().values())
