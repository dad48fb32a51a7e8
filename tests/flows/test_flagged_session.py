"""flagged_session_to_segment: a Fullstory note (or an event of a configured Stream) on a key
account's session becomes `Session Flagged For Outreach`; everyone else's sends nothing."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fsbridge.config import FsbridgeConfig
from fsbridge.store.profiles import ForgetUser
from tests.conftest import RAGE_CLICK, Bridge, start_bridge
from tests.fake_fullstory import FakeFullstory

AUTHOR = "daniel@falko.co"
NOTE: dict[str, Any] = {
    "eventName": "note.created",
    "version": 1,
    "data": {
        "id": "798ith22928347",
        "created": "2026-11-18T10:49:50.433Z",
        "author": AUTHOR,
        "text": "Stuck on the pricing page; tried the coupon field six times.",
        "sessionUrl": "https://app.fullstory.com/ui/TN1/session/6915774531905556:5557778531805533!1110765439578976",
        "userUrl": "https://app.fullstory.com/ui/TN1/segments/everyone/people/0/user/6915774531905556",
    },
}
KEY_ACCOUNTS = {"audiences": ["key_accounts"], "group_ids": ["acct_9"], "traits": {"plan": ["enterprise"]}}


def flagged(b: Bridge) -> list[dict[str, Any]]:
    return [m for m in b.upstream.messages() if m.get("event") == "Session Flagged For Outreach"]


def config(**options: Any) -> FsbridgeConfig:
    return FsbridgeConfig.model_validate({"flows": {"flagged_session_to_segment": options}})


@pytest.fixture
async def fullstory() -> FakeFullstory:
    fake = FakeFullstory()
    fake.users_by_id["6915774531905556"] = {"id": "6915774531905556", "uid": "u_1842", "is_being_deleted": False}
    return fake


async def started(tmp_path: Path, fullstory: FakeFullstory, **options: Any) -> Bridge:
    return await start_bridge(tmp_path, fullstory, config=config(**({"key_accounts": KEY_ACCOUNTS} | options)))


@pytest.fixture
async def bridge(tmp_path: Path, fullstory: FakeFullstory) -> AsyncIterator[Bridge]:
    b = await started(tmp_path, fullstory)
    yield b
    await b.client.aclose()
    await b.runtime.stop()


async def test_a_note_on_a_key_account_is_flagged(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """note.created → GET /v2/users/{id from userUrl} → uid → a key account (its group) → one track, with the note."""
    await bridge.post_segment({"type": "group", "userId": "u_1842", "groupId": "acct_9", "messageId": "g-1"})
    await bridge.drain()
    await bridge.post_system(NOTE)
    await bridge.drain()
    [track] = flagged(bridge)
    assert "u_1842" == track["userId"]
    assert {
        "session_url": NOTE["data"]["sessionUrl"],
        "reason": "note",
        "note_text": NOTE["data"]["text"],
        "flagged_by": AUTHOR,
        "account_id": "acct_9",
        "source": "fullstory",
    } == track["properties"]
    [lookup] = fullstory.lookups("/v2/users/")
    assert "/v2/users/6915774531905556" == lookup.url.path


@pytest.mark.parametrize(
    "membership",
    [
        {"type": "identify", "userId": "u_1842", "messageId": "i-1", "traits": {"plan": "enterprise"}},
        {
            "type": "identify",
            "userId": "u_1842",
            "messageId": "i-2",
            "traits": {"key_accounts": True},
            "context": {"personas": {"computation_class": "audience", "computation_key": "key_accounts"}},
        },
    ],
    ids=["trait", "audience"],
)
async def test_key_accounts_by_trait_or_audience(bridge: Bridge, membership: dict[str, Any]) -> None:
    """A profile trait with an accepted value, or membership of a listed audience, makes a key account."""
    await bridge.post_segment(membership)
    await bridge.drain()
    await bridge.post_system(NOTE)
    await bridge.drain()
    assert 1 == len(flagged(bridge))


async def test_a_note_outside_the_key_accounts_sends_nothing(bridge: Bridge) -> None:
    """A user in none of the key accounts: nothing is sent; the delivery ends filtered with the reason."""
    await bridge.post_segment({"type": "identify", "userId": "u_1842", "messageId": "i-1", "traits": {"plan": "free"}})
    await bridge.drain()
    await bridge.post_system(NOTE)
    await bridge.drain()
    assert [] == flagged(bridge)
    [delivery] = await bridge.runtime.store.list_deliveries("filtered", "flagged_session_to_segment", 10)
    assert "the user is not in a key account" == delivery.last_error


async def test_without_key_accounts_every_known_user_counts(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """key_accounts all empty (the default): any user whose uid Fullstory knows is flagged."""
    b = await start_bridge(tmp_path, fullstory)
    try:
        await b.post_system(NOTE)
        await b.drain()
        assert ["u_1842"] == [t["userId"] for t in flagged(b)]
    finally:
        await b.client.aclose()
        await b.runtime.stop()


@pytest.mark.parametrize(
    ("user", "reason"),
    [(None, "Fullstory does not know this user (404)"), ({"id": "6915774531905556"}, "the Fullstory user has no uid")],
    ids=["404", "no_uid"],
)
async def test_unknown_or_anonymous_fullstory_users_are_filtered(
    bridge: Bridge, fullstory: FakeFullstory, user: dict[str, Any] | None, reason: str
) -> None:
    """GET /v2/users/{id} answering 404, or a user without a uid: filtered with that reason, nothing sent."""
    if user is None:
        fullstory.users_by_id.clear()
    else:
        fullstory.users_by_id["6915774531905556"] = user
    await bridge.post_system(NOTE)
    await bridge.drain()
    assert [] == flagged(bridge)
    [delivery] = await bridge.runtime.store.list_deliveries("filtered", "flagged_session_to_segment", 10)
    assert reason == delivery.last_error


async def test_the_session_url_names_the_user_when_the_note_has_no_user_url(
    bridge: Bridge, fullstory: FakeFullstory
) -> None:
    """Without data.userUrl, the user id is the first id of the session URL's last segment."""
    note = copy.deepcopy(NOTE)
    del note["data"]["userUrl"]
    await bridge.post_segment({"type": "group", "userId": "u_1842", "groupId": "acct_9", "messageId": "g-1"})
    await bridge.post_system(note)
    await bridge.drain()
    assert 1 == len(flagged(bridge))
    assert "/v2/users/6915774531905556" == fullstory.lookups("/v2/users/")[0].url.path


async def test_note_text_is_cut_or_left_out(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """Note text is cut to 500 characters; include_note_text: false leaves it out."""
    note = copy.deepcopy(NOTE)
    note["data"]["text"] = "x" * 900
    b = await start_bridge(tmp_path, fullstory)
    try:
        await b.post_system(note)
        await b.drain()
        [track] = flagged(b)
        assert 500 == len(track["properties"]["note_text"])
    finally:
        await b.client.aclose()
        await b.runtime.stop()
    b = await start_bridge(tmp_path / "off", fullstory, config=config(include_note_text=False))
    try:
        await b.post_system({**note, "data": {**note["data"], "id": "other"}})
        await b.drain()
        first, second = flagged(b)  # one fake Fullstory and Segment for both runs
        assert ("note_text" in first["properties"], "note_text" in second["properties"]) == (True, False)
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_a_configured_stream_flags_without_asking_fullstory(tmp_path: Path, fullstory: FakeFullstory) -> None:
    """An event of a Stream named in `streams` names its user itself: no look-up in Fullstory, reason = the Stream."""
    b = await started(tmp_path, fullstory, streams=["vip_errors"], key_accounts={})
    try:
        await b.post_stream(
            {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "event_type": "error"}}, stream="vip_errors"
        )
        await b.post_stream({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "event_type": "error"}}, stream="other")
        await b.drain()
        [track] = flagged(b)
        assert ("u_1842", "vip_errors") == (track["userId"], track["properties"]["reason"])
        assert [] == fullstory.lookups("/v2/users/")
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_the_author_is_never_logged(bridge: Bridge, capsys: pytest.CaptureFixture[str]) -> None:
    """The note's author travels as flagged_by and appears in no log line."""
    await bridge.post_segment({"type": "group", "userId": "u_1842", "groupId": "acct_9", "messageId": "g-1"})
    await bridge.post_system(NOTE)
    await bridge.drain()
    assert 1 == len(flagged(bridge))
    logged = capsys.readouterr().out
    assert "inbox.dispatched" in logged  # the log is captured here, so the next line can fail
    assert AUTHOR not in logged


async def test_a_note_on_a_deleted_user_sends_nothing(bridge: Bridge, fullstory: FakeFullstory) -> None:
    """A note whose Fullstory user the look-up resolves to a deleted userId is filtered (tombstone), not sent."""
    await bridge.runtime.store.forget_user(ForgetUser("u_1842"), bridge.clock.now())
    assert 202 == (await bridge.post_system(NOTE)).status_code
    await bridge.drain()
    assert [] == flagged(bridge)
    [delivery] = await bridge.runtime.store.list_deliveries(None, "flagged_session_to_segment", 5)
    assert ("filtered", "deleted") == (delivery.status, (delivery.last_error or "").split(":")[0]), delivery.last_error
