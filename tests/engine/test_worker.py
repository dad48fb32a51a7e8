"""Delivery through the worker against a scripted fake Segment: retries, dead letters, parking, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fsbridge.config import FsbridgeConfig
from fsbridge.store import NewDelivery
from fsbridge.testing import FakeUpstream
from tests.conftest import RAGE_CLICK, Bridge, start_bridge


def click(n: int, **extra: Any) -> dict[str, Any]:
    return {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"button {n}", **extra}}


async def only_delivery(bridge: Bridge) -> Any:
    [delivery] = await bridge.runtime.store.list_deliveries(None, None, 10)
    return delivery


@pytest.fixture
async def upstream_bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    b = await start_bridge(tmp_path, FakeUpstream())
    yield b
    await b.client.aclose()
    await b.runtime.stop()


class TestRetries:
    @pytest.mark.parametrize(
        "failure",
        [500, 503, 408, httpx.ReadTimeout("read timed out"), httpx.ConnectError("connection refused")],
    )
    async def test_retryable_failure_then_success(self, bridge: Bridge, failure: Any) -> None:
        """A 5xx, 408, timeout or refused connection is retried after the backoff, then delivered."""
        bridge.upstream.script_next([failure])
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        first = await only_delivery(bridge)
        assert ("pending", 1) == (first.status, first.attempts)
        assert bridge.clock.now() + 1 == first.next_attempt_at
        bridge.clock.advance(1)
        await bridge.drain()
        delivered = await only_delivery(bridge)
        assert ("delivered", 2) == (delivered.status, delivered.attempts)
        sent = [orjson.loads(r.content)["batch"][0]["messageId"] for r in bridge.upstream.requests]
        assert [delivered.message_id, delivered.message_id] == sent

    async def test_script_500_500_200(self, bridge: Bridge) -> None:
        """[500, 500, 200]: two retries with growing waits, then one delivery; every attempt is logged."""
        bridge.upstream.script_next([500, 500])
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        bridge.clock.advance(1)
        await bridge.drain()
        second = await only_delivery(bridge)
        assert bridge.clock.now() + 2 == second.next_attempt_at
        bridge.clock.advance(2)
        await bridge.drain()
        delivery = await only_delivery(bridge)
        attempts = await bridge.runtime.store.list_attempts(delivery.id)
        assert [500, 500, 200] == [a.status_code for a in attempts]
        assert "delivered" == delivery.status

    async def test_429_waits_for_retry_after(self, bridge: Bridge) -> None:
        """A 429 with Retry-After: 120 schedules the next attempt 120 s later, not after the 1 s backoff."""
        bridge.upstream.script_next([(429, {"Retry-After": "120"})])
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        delivery = await only_delivery(bridge)
        assert bridge.clock.now() + 120 == delivery.next_attempt_at
        bridge.clock.advance(60)
        await bridge.drain()
        assert 1 == len(bridge.upstream.requests)
        bridge.clock.advance(60)
        await bridge.drain()
        assert "delivered" == (await only_delivery(bridge)).status

    async def test_horizon_turns_retries_into_a_dead_letter(self, tmp_path: Path) -> None:
        """A delivery still failing at the retry horizon becomes a dead letter that says why."""
        b = await start_bridge(tmp_path, FakeUpstream(default=503), retry_horizon_seconds=10)
        try:
            await b.post_stream(RAGE_CLICK)
            for _ in range(10):
                await b.drain()
                b.clock.advance(10)
            delivery = await only_delivery(b)
            assert "dead" == delivery.status
            assert "retried for 10 s" in delivery.last_error
        finally:
            await b.client.aclose()
            await b.runtime.stop()


class TestDeadLetters:
    async def test_400_goes_straight_to_dead_letters_with_the_response(self, bridge: Bridge) -> None:
        """A 400 is not retried: the delivery is dead with its status and response excerpt kept."""
        bridge.upstream.script_next([400])
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        delivery = await only_delivery(bridge)
        assert ("dead", 400, 1) == (delivery.status, delivery.last_status_code, delivery.attempts)
        assert "scripted 400" in delivery.last_response
        [attempt] = await bridge.runtime.store.list_attempts(delivery.id)
        assert attempt.response_excerpt is not None
        assert "scripted 400" in attempt.response_excerpt

    async def test_replay_keeps_the_message_id(self, bridge: Bridge) -> None:
        """A replayed dead letter is sent again with the same messageId."""
        bridge.upstream.script_next([400])
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        dead = await only_delivery(bridge)
        response = await bridge.client.post(f"/ops/api/deliveries/{dead.id}/replay", headers=bridge.ops_headers())
        assert 202 == response.status_code
        await bridge.drain()
        delivered = await only_delivery(bridge)
        assert "delivered" == delivered.status
        ids = [m["messageId"] for m in bridge.upstream.messages()]
        assert [dead.message_id, dead.message_id] == ids

    async def test_bulk_replay_of_dead_letters(self, bridge: Bridge) -> None:
        """Replaying all dead letters of a flow resends each one once."""
        bridge.upstream.script_next([400, 400, 400])
        for n in range(3):
            await bridge.post_stream(click(n))
            await bridge.drain()
        response = await bridge.client.post(
            "/ops/api/deliveries/replay",
            json={"status": "dead", "flow": "frustration_to_segment_track"},
            headers=bridge.ops_headers(),
        )
        assert {"replayed": 3} == response.json()
        await bridge.drain()
        stats = await bridge.runtime.store.stats()
        assert 3 == stats["by_destination"]["segment"]["delivered"]
        assert 0 == stats["by_destination"]["segment"]["dead"]

    async def test_oversize_message_is_a_dead_letter_with_the_reason(self, bridge: Bridge) -> None:
        """A message over 32 KiB is never sent: it is dead at dispatch with its size in the reason."""
        await bridge.post_stream(click(1, target_text="x" * 40_000))
        await bridge.drain()
        delivery = await only_delivery(bridge)
        assert "dead" == delivery.status
        assert "32,768 bytes a message" in delivery.last_error
        assert [] == bridge.upstream.requests

    async def test_mapping_that_cannot_satisfy_the_target_is_a_dead_letter(self, bridge: Bridge) -> None:
        """An event with neither user nor session cannot become a Segment message: dead with the reason."""
        await bridge.post_stream({"event": {"event_type": "rage-click"}})
        await bridge.drain()
        delivery = await only_delivery(bridge)
        assert "dead" == delivery.status
        assert "userId or anonymousId" in delivery.last_error

    async def test_a_refused_batch_is_resent_message_by_message(self, bridge: Bridge) -> None:
        """When Segment refuses a batch with 400, each message is resent alone and only the bad one dies."""
        for n in range(3):
            await bridge.post_stream(click(n))
        bridge.upstream.script_next([400, 200, 400, 200])
        await bridge.drain()
        statuses = sorted(d.status for d in await bridge.runtime.store.list_deliveries(None, None, 10))
        assert ["dead", "delivered", "delivered"] == statuses
        assert [3, 1, 1, 1] == [len(b) for b in bridge.upstream.batches()]


class TestParking:
    async def test_401_parks_the_destination_until_resumed(self, bridge: Bridge) -> None:
        """A 401 parks Segment: its deliveries wait as parked, /readyz says so, and resume sends them."""
        bridge.upstream.script_next([401])
        await bridge.post_stream(click(1))
        await bridge.drain()
        await bridge.post_stream(click(2))
        await bridge.drain()
        assert 1 == len(bridge.upstream.requests)
        statuses = [d.status for d in await bridge.runtime.store.list_deliveries(None, None, 10)]
        assert ["parked", "parked"] == statuses
        ready = await bridge.client.get("/readyz")
        assert 503 == ready.status_code
        assert "segment" in ready.json()["error"]["parked"]

        resumed = await bridge.client.post("/ops/api/destinations/segment/resume", headers=bridge.ops_headers())
        assert 200 == resumed.status_code
        await bridge.drain()
        statuses = [d.status for d in await bridge.runtime.store.list_deliveries(None, None, 10)]
        assert ["delivered", "delivered"] == statuses
        assert {} == bridge.runtime.worker.parked
        assert "parked" not in str((await bridge.client.get("/readyz")).json()["error"]["reasons"])

    async def test_parking_survives_in_the_store(self, tmp_path: Path) -> None:
        """Parking is recorded in the store, so a worker started later sees the destination as parked."""
        b = await start_bridge(tmp_path, FakeUpstream(script=[403]))
        await b.post_stream(RAGE_CLICK)
        await b.drain()
        assert {"segment"} == set(await b.runtime.store.parked_destinations())
        await b.client.aclose()
        await b.runtime.stop()


class TestDryRun:
    async def test_without_write_key_deliveries_are_recorded_as_dry_run(self, tmp_path: Path) -> None:
        """With no Segment write key, deliveries are rendered and recorded as dry_run and nothing is sent."""
        b = await start_bridge(tmp_path, segment_write_key=None)
        try:
            await b.post_stream(RAGE_CLICK)
            await b.drain()
            delivery = await only_delivery(b)
            assert "dry_run" == delivery.status
            assert "Rage Click Detected" == orjson.loads(delivery.body)["event"]
            assert [] == b.upstream.requests
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    async def test_dry_run_env_forces_dry_run_with_credentials(self, tmp_path: Path) -> None:
        """FSBRIDGE_DRY_RUN=true records dry_run even when the write key is set."""
        b = await start_bridge(tmp_path, dry_run=True)
        try:
            await b.post_stream(RAGE_CLICK)
            await b.drain()
            assert "dry_run" == (await only_delivery(b)).status
            assert [] == b.upstream.requests
        finally:
            await b.client.aclose()
            await b.runtime.stop()


class TestBatching:
    async def test_many_events_share_batches_within_the_count_limit(self, tmp_path: Path) -> None:
        """With max_batch_messages=10, 25 events go out as batches of at most 10, each message once."""
        config = FsbridgeConfig.model_validate({"destinations": {"segment": {"max_batch_messages": 10}}})
        b = await start_bridge(tmp_path, config=config)
        try:
            for n in range(25):
                await b.post_stream(click(n))
            await b.drain()
            sizes = [len(batch) for batch in b.upstream.batches()]
            assert 25 == sum(sizes)
            assert max(sizes) <= 10
            assert 25 == len({m["messageId"] for m in b.upstream.messages()})
        finally:
            await b.client.aclose()
            await b.runtime.stop()


class TestIdleWait:
    async def test_a_paused_destination_waits_the_whole_interval(self, bridge: Bridge) -> None:
        """A paused destination with deliveries due sleeps the poll interval between rounds instead of spinning."""
        await bridge.post_stream(RAGE_CLICK)
        await bridge.runtime.worker.dispatch_once()
        response = await bridge.client.post("/ops/api/destinations/segment/pause", headers=bridge.ops_headers())
        assert 200 == response.status_code
        worker = bridge.runtime.worker
        assert 0 == await worker.deliver_once("segment")
        assert worker.poll_interval == await worker.wait_before_next_round("segment")

    async def test_the_wait_ends_when_the_next_delivery_is_due(self, bridge: Bridge) -> None:
        """After a round that sent nothing, the sender sleeps until the next delivery's retry is due."""
        bridge.upstream.script_next([500])
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        worker = bridge.runtime.worker
        worker.poll_interval = 60.0
        assert 1.0 == await worker.wait_before_next_round("segment")
        bridge.clock.advance(0.25)
        assert 0.75 == await worker.wait_before_next_round("segment")


async def test_a_message_over_the_limit_keeps_an_excerpt_and_cannot_be_replayed_as_it_is(tmp_path: Path) -> None:
    """A flow's message over Segment's 32 KiB is a dead letter keeping its first 2 KiB (the event is stored);
    replaying it answers 409 (change the mapping, then replay the flow) and it stays dead with its reason."""
    b = await start_bridge(tmp_path, segment_write_key=None)
    try:
        assert 202 == (await b.post_stream(click(1, target_text="x" * 40_000))).status_code
        await b.drain()
        dead = await only_delivery(b)
        assert ("dead", 2048) == (dead.status, len(dead.body))
        assert "over segment's limit of 32,768 bytes" in (dead.last_error or "")
        replayed = await b.client.post(f"/ops/api/deliveries/{dead.id}/replay", headers=b.ops_headers())
        assert (409, "never_rendered") == (replayed.status_code, replayed.json()["error"]["code"])
        assert "dead" == (await only_delivery(b)).status
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_dead_letter_over_the_limit_replayed_in_dry_run_stays_dead(tmp_path: Path) -> None:
    """A dead letter whose body is over its destination's limit, replayed in dry-run, is recorded dead again
    with the reason, not dry_run with its error cleared."""
    b = await start_bridge(tmp_path, segment_write_key=None)
    try:
        body = b'{"type":"identify","userId":"u1","traits":{"x":"' + b"x" * 40_000 + b'"}}'
        await b.runtime.store.enqueue([NewDelivery("health_score", "segment", "fsb-big", body, "dead", "too big",
                                                   "identify")], b.clock.now())  # fmt: skip
        dead = await only_delivery(b)
        assert (
            202 == (await b.client.post(f"/ops/api/deliveries/{dead.id}/replay", headers=b.ops_headers())).status_code
        )
        await b.drain()
        again = await only_delivery(b)
        assert "dead" == again.status
        assert "over segment's limit of 32,768 bytes" in (again.last_error or "")
    finally:
        await b.client.aclose()
        await b.runtime.stop()
