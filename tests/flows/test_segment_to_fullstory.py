"""Segment → Fullstory: identify becomes a /v2/users upsert (never redundantly), delete deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from structlog.testing import capture_logs

from fsbridge.config import FsbridgeConfig
from fsbridge.testing import FakeUpstream
from tests.conftest import FULLSTORY_KEY, Bridge, start_bridge


def identify(user_id: str | None = "u_1842", **traits: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "identify",
        "messageId": f"m-{user_id}-{sorted(traits.items())}",
        "anonymousId": "anon-7",
        "traits": {"email": " Ada.Lovelace@Example.com", "firstName": "Ada", "lastName": "Lovelace", **traits},
    }
    if user_id is not None:
        message["userId"] = user_id
    return message


async def sent_users(bridge: Bridge) -> list[dict[str, Any]]:
    await bridge.drain()
    return [orjson.loads(r.content) for r in bridge.upstream.fullstory("POST")]


class TestIdentify:
    async def test_identify_becomes_a_fullstory_user(self, bridge: Bridge) -> None:
        """uid = userId, email normalised, display_name from first + last name, other traits as properties."""
        await bridge.post_segment(identify(plan="pro", **{"created-at": "2024-03-01T10:00:00Z"}))
        [body] = await sent_users(bridge)
        assert {
            "uid": "u_1842",
            "email": "ada.lovelace@example.com",
            "display_name": "Ada Lovelace",
            "properties": {
                "firstName": "Ada",
                "lastName": "Lovelace",
                "plan": "pro",
                "created_at": "2024-03-01T10:00:00Z",
            },
            "schema": {"properties": {"created_at": "date"}},
        } == body
        request = bridge.upstream.fullstory("POST")[0]
        assert f"Basic {FULLSTORY_KEY}" == request.headers["Authorization"]
        assert request.headers["Idempotency-Key"].startswith("fsb-")

    async def test_traits_name_wins_for_display_name(self, bridge: Bridge) -> None:
        """traits.name is the display name when present."""
        await bridge.post_segment(identify(name="Countess Lovelace"))
        [body] = await sent_users(bridge)
        assert "Countess Lovelace" == body["display_name"]
        assert "name" not in body["properties"]

    async def test_identify_without_user_id_is_counted_not_sent(self, bridge: Bridge) -> None:
        """An identify with only an anonymousId makes no call and is counted as filtered, with the reason."""
        await bridge.post_segment(identify(user_id=None))
        assert [] == await sent_users(bridge)
        assert 1 == (await bridge.runtime.store.stats())["by_flow"]["segment_identify_to_fullstory_user"]["filtered"]

    async def test_dropped_traits_are_logged_with_the_reason(self, bridge: Bridge) -> None:
        """An array of objects is dropped from properties and the reason is logged."""
        await bridge.post_segment(identify(orders=[{"id": 1}]))
        with capture_logs() as logs:
            [body] = await sent_users(bridge)
        assert "orders" not in body["properties"]
        [dropped] = [entry for entry in logs if entry["event"] == "fullstory.property_dropped"]
        assert "arrays of objects" in dropped["reasons"][0]

    async def test_thousands_of_unusable_traits_are_one_log_line(self, bridge: Bridge) -> None:
        """20,000 trait names that cannot become properties are logged in one line with the count."""
        punctuation = "!@#$%^&*()"
        names = ["".join(punctuation[int(d)] for d in f"{n:05d}") for n in range(20_000)]  # no letters or digits
        traits: dict[str, Any] = dict.fromkeys(names, 1)
        await bridge.post_segment(identify("u_1842", **traits))
        with capture_logs() as logs:
            await sent_users(bridge)
        dropped = [entry for entry in logs if entry["event"] == "fullstory.property_dropped"]
        assert 1 == len(dropped)
        assert dropped[0]["dropped"] >= 20_000
        assert len(dropped[0]["reasons"]) == 5

    async def test_same_identify_twice_is_one_call(self, bridge: Bridge) -> None:
        """An identify whose mapped content did not change since the last successful sync is not sent again."""
        await bridge.post_segment(identify(plan="pro"))
        assert 1 == len(await sent_users(bridge))
        await bridge.post_segment({**identify(plan="pro"), "messageId": "another-message"})
        assert 1 == len(await sent_users(bridge))
        stats = (await bridge.runtime.store.stats())["by_flow"]["segment_identify_to_fullstory_user"]
        assert (1, 1) == (stats["delivered"], stats["filtered"])

    async def test_failed_sync_does_not_suppress_the_next(self, bridge: Bridge) -> None:
        """Only a successful sync counts: after a dead letter, the same identify is sent again."""
        bridge.upstream.script_next([400])
        await bridge.post_segment(identify(plan="pro"))
        await sent_users(bridge)
        await bridge.post_segment({**identify(plan="pro"), "messageId": "retry-by-app"})
        assert 2 == len(await sent_users(bridge))

    async def test_suppression_holds_across_a_restart(self, tmp_path: Path) -> None:
        """Same traits after a restart → no call; one trait changed → one more call."""
        first = await start_bridge(tmp_path)
        await first.post_segment(identify(plan="pro"))
        assert 1 == len(await sent_users(first))
        await first.client.aclose()
        await first.runtime.stop()

        upstream = FakeUpstream()
        second = await start_bridge(tmp_path, upstream)
        try:
            await second.post_segment({**identify(plan="pro"), "messageId": "after-restart"})
            assert [] == await sent_users(second)
            await second.post_segment(identify(plan="enterprise"))
            [body] = await sent_users(second)
            assert "enterprise" == body["properties"]["plan"]
        finally:
            await second.client.aclose()
            await second.runtime.stop()

    async def test_uid_prefix_rule(self, tmp_path: Path) -> None:
        """With a uid prefix configured, the Fullstory uid is prefix + userId."""
        config = FsbridgeConfig.model_validate({"identity": {"fullstory_uid_prefix": "shop-"}})
        b = await start_bridge(tmp_path, config=config)
        try:
            await b.post_segment(identify())
            [body] = await sent_users(b)
            assert "shop-u_1842" == body["uid"]
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    async def test_fullstory_429_is_retried_after_retry_after(self, bridge: Bridge) -> None:
        """A 429 from Fullstory reschedules the upsert after Retry-After, then it is delivered."""
        bridge.upstream.script_next([(429, {"Retry-After": "30"})])
        await bridge.post_segment(identify())
        await bridge.drain()
        [delivery] = await bridge.runtime.store.list_deliveries(None, "segment_identify_to_fullstory_user", 5)
        assert bridge.clock.now() + 30 == delivery.next_attempt_at
        bridge.clock.advance(30)
        await bridge.drain()
        [delivery] = await bridge.runtime.store.list_deliveries(None, "segment_identify_to_fullstory_user", 5)
        assert "delivered" == delivery.status

    async def test_without_api_key_fullstory_is_dry_run(self, tmp_path: Path) -> None:
        """With no Fullstory API key, upserts are recorded as dry_run and never sent."""
        b = await start_bridge(tmp_path, fullstory_api_key=None)
        try:
            await b.post_segment(identify())
            assert [] == await sent_users(b)
            [delivery] = await b.runtime.store.list_deliveries(None, "segment_identify_to_fullstory_user", 5)
            assert "dry_run" == delivery.status
        finally:
            await b.client.aclose()
            await b.runtime.stop()


class TestDeletion:
    async def test_delete_request_deletes_the_fullstory_user(self, bridge: Bridge) -> None:
        """A Segment delete becomes DELETE /v2/users?uid=<userId>, and nothing personal is logged; once
        the call is delivered, the call and the request go too (they name the user)."""
        accepted = await bridge.post_segment({"type": "delete", "userId": "u_secret_42", "messageId": "del-1"})
        with capture_logs() as logs:
            await bridge.drain()
        [request] = bridge.upstream.fullstory("DELETE")
        assert "u_secret_42" == request.url.params["uid"]
        assert "u_secret_42" not in str(logs)
        assert [] == await bridge.runtime.store.list_deliveries(None, "segment_delete_to_fullstory_user", 5)
        assert await bridge.runtime.store.get_inbox_event(accepted.json()["id"]) is None

    async def test_deletion_flow_can_be_switched_off(self, tmp_path: Path) -> None:
        """With the deletion flow disabled, a delete is stored but nothing is sent."""
        config = FsbridgeConfig.model_validate({"flows": {"segment_delete_to_fullstory_user": {"enabled": False}}})
        b = await start_bridge(tmp_path, config=config)
        try:
            assert 202 == (await b.post_segment({"type": "delete", "userId": "u1", "messageId": "d"})).status_code
            await b.drain()
            assert [] == b.upstream.fullstory()
        finally:
            await b.client.aclose()
            await b.runtime.stop()
