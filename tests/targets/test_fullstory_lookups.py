"""Fullstory look-ups: what each one asks Fullstory and how it reads the answer, and the frustration
flow's email → uid look-up, now made by its enrich step when the track is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from fsbridge.config import IdentityConfig
from fsbridge.engine.identity import IdentityRules
from fsbridge.targets.fullstory_lookups import (
    Answer,
    FullstoryApi,
    FullstoryUser,
    LatestSession,
    LookupUnavailableError,
    UserByEmail,
    parse_created_time,
)
from fsbridge.testing import FakeUpstream
from tests.conftest import RAGE_CLICK, Bridge, start_bridge

API = "https://api.fullstory.com"
RULES = IdentityRules(IdentityConfig(fullstory_uid_prefix="app-"))


def api(client: httpx.AsyncClient) -> FullstoryApi:
    return FullstoryApi(client, api_url=API, api_key=SecretStr("K"))


def users(*uids: str) -> httpx.Response:
    return httpx.Response(200, json={"results": [{"id": str(n), "uid": uid} for n, uid in enumerate(uids)]})


def session(created: Any, n: int = 1, key: str = "createdTime") -> dict[str, Any]:
    return {
        "userId": "77",
        "sessionId": f"77:{n}",
        key: created,
        "fsUrl": f"https://app.fullstory.com/ui/o/session/77:{n}",
    }


@respx.mock
async def test_user_by_email_asks_for_identified_users_with_the_raw_key() -> None:
    """GET /v2/users?email=&is_identified=true with the raw key; one user → its uid and the userId behind it."""
    route = respx.get(f"{API}/v2/users").mock(return_value=users("app-u_1"))
    async with httpx.AsyncClient() as client:
        answer = await UserByEmail(RULES).ask(api(client), {"email": " A@B.co"})
    assert {"uid": "app-u_1", "user_id": "u_1"} == answer.value
    request = route.calls.last.request
    assert {"email": "a@b.co", "is_identified": "true"} == dict(request.url.params)
    assert "Basic K" == request.headers["Authorization"]


@respx.mock
@pytest.mark.parametrize("answer", [users(), users("app-u_1", "app-u_2"), users("other-1"), httpx.Response(404)])
async def test_user_by_email_finds_nothing_when_none_ambiguous_or_foreign(answer: httpx.Response) -> None:
    """No user, two users, a uid without the prefix, or a 404 → nothing found, with a reason."""
    respx.get(f"{API}/v2/users").mock(return_value=answer)
    async with httpx.AsyncClient() as client:
        found = await UserByEmail(RULES).ask(api(client), {"email": "a@b.co"})
    assert (None, True) == (found.value, bool(found.reason))


@respx.mock
@pytest.mark.parametrize(
    ("outcome", "status", "refused"),
    [
        (httpx.Response(429, headers={"Retry-After": "7"}), 429, False),
        (httpx.Response(503), 503, False),
        (httpx.ConnectError("refused"), None, False),
        (httpx.Response(401), 401, True),
    ],
)
async def test_failures_worth_retrying_raise(outcome: Any, status: int | None, refused: bool) -> None:
    """429 (with its Retry-After), 5xx and network errors raise for the delivery to retry; 401 also says refused."""
    respx.get(f"{API}/v2/users").mock(side_effect=[outcome])
    async with httpx.AsyncClient() as client:
        with pytest.raises(LookupUnavailableError) as raised:
            await UserByEmail(RULES).ask(api(client), {"email": "a@b.co"})
    assert (status, refused) == (raised.value.status_code, raised.value.refused)
    if status == 429:
        assert raised.value.retry_after == pytest.approx(7, abs=1)


@respx.mock
async def test_latest_session_is_the_most_recent_by_created_time() -> None:
    """GET /sessions/v2?uid=<prefix + userId>&limit=20; of several sessions in any order, the newest is taken."""
    sessions = [session("1764000000", 1), session(1764100000, 2), session("2025-11-20T00:00:00Z", 3)]
    route = respx.get(f"{API}/sessions/v2").mock(return_value=httpx.Response(200, json={"sessions": sessions}))
    async with httpx.AsyncClient() as client:
        answer = await LatestSession(RULES).ask(api(client), {"uid": "u_1", "email": "a@b.co"})
    assert {"uid": "app-u_1", "limit": "20"} == dict(route.calls.last.request.url.params)
    assert answer.value is not None
    assert ("77:2", "https://app.fullstory.com/ui/o/session/77:2") == (answer.value["session_id"], answer.value["url"])
    assert "2025-11-25T19:46:40Z" == answer.value["started_at"]


@respx.mock
async def test_latest_session_falls_back_to_the_email_and_reads_a_bare_list() -> None:
    """Without a uid the email is asked (normalised); an answer that is a bare list of snake_case rows is read too."""
    rows = [session("1764100000", 1, key="created_time") | {"fs_url": "https://x/1"}]
    route = respx.get(f"{API}/sessions/v2").mock(return_value=httpx.Response(200, json=rows))
    async with httpx.AsyncClient() as client:
        answer = await LatestSession(RULES).ask(api(client), {"email": " Ada@Example.com"})
    assert {"email": "ada@example.com", "limit": "20"} == dict(route.calls.last.request.url.params)
    assert answer.value is not None
    assert answer.value["session_id"] == "77:1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1764100000", 1764100000.0),
        (1764100000, 1764100000.0),
        (1764100000123, 1764100000.123),
        ("2025-11-25T19:46:40Z", 1764100000.0),
        ("2025-11-25T20:46:40+01:00", 1764100000.0),
        ("soon", None),
        (None, None),
        (True, None),
    ],
)
def test_created_time_forms(value: Any, expected: float | None) -> None:
    """createdTime as epoch seconds (number or string), milliseconds, or RFC 3339; anything else is unreadable."""
    assert parse_created_time(value) == (pytest.approx(expected) if expected is not None else None)


def test_an_old_session_counts_as_none() -> None:
    """With max_age, a cached latest session older than it is judged as no recent session."""
    lookup = LatestSession(RULES)
    found = lookup.judge(lookup_answer(started=1000.0), {"max_age": 30 * 86400.0}, now=1000.0 + 31 * 86400)
    assert (None, "no recent Fullstory session") == (found.value, found.reason)
    assert lookup.judge(lookup_answer(started=1000.0), {"max_age": 30 * 86400.0}, now=2000.0).value is not None


def lookup_answer(started: float) -> Answer:
    return Answer({"url": "u", "session_id": "s", "started_at": "t", "started_at_epoch": started})


@respx.mock
@pytest.mark.parametrize(
    ("answer", "value", "reason"),
    [
        (httpx.Response(200, json={"id": "42", "uid": "app-u_7", "email": "a@b.co", "is_being_deleted": False}),
         "u_7", ""),
        (httpx.Response(404, json={"code": "user_not_found"}), None, "Fullstory does not know this user (404)"),
        (httpx.Response(200, json={"id": "42", "is_being_deleted": False}), None, "the Fullstory user has no uid"),
    ],
)  # fmt: skip
async def test_fullstory_user_by_id(answer: httpx.Response, value: str | None, reason: str) -> None:
    """GET /v2/users/{id}: its uid names the Segment user; a 404 or a user without a uid is nothing found."""
    route = respx.get(f"{API}/v2/users/42").mock(return_value=answer)
    async with httpx.AsyncClient() as client:
        found = await FullstoryUser(RULES).ask(api(client), {"id": "42"})
    assert route.called
    assert (value, reason) == ((found.value or {}).get("user_id"), found.reason)


async def test_unlinked_email_is_resolved_through_fullstory_and_remembered(bridge: Bridge) -> None:
    """A click with an email no Segment call linked is resolved by asking Fullstory when the track is
    sent; the link is kept, so the next click is resolved without asking."""
    bridge.upstream.script_next([users("u_from_fs")])
    click = {**RAGE_CLICK, "user": {"user_email": "new@x.io"}}
    await bridge.post_stream(click)
    await bridge.drain()
    await bridge.post_stream({**click, "event": {**RAGE_CLICK["event"], "target_text": "again"}})
    await bridge.drain()
    tracks = bridge.upstream.messages()
    assert ["u_from_fs", "u_from_fs"] == [t["userId"] for t in tracks]
    lookups_made = [r for r in bridge.upstream.requests if r.method == "GET"]
    assert 1 == len(lookups_made)


async def test_ten_clicks_of_one_email_in_a_round_make_one_lookup(bridge: Bridge) -> None:
    """Deliveries of one round that ask the same thing share one call."""
    bridge.upstream.script_next([users("u_many")])
    for n in range(10):
        click = {**RAGE_CLICK, "user": {"user_email": "many@x.io"}, "event": {**RAGE_CLICK["event"], "target_text": n}}
        await bridge.post_stream(click)
    await bridge.drain()
    assert ["u_many"] * 10 == [t["userId"] for t in bridge.upstream.messages()]
    assert 1 == len([r for r in bridge.upstream.requests if r.method == "GET"])


async def test_failed_lookup_leaves_the_event_anonymous(tmp_path: Path) -> None:
    """When Fullstory cannot answer the optional identity look-up, the click is still delivered, anonymously."""
    b = await start_bridge(tmp_path, FakeUpstream(script=[503]))
    try:
        await b.post_stream({**RAGE_CLICK, "user": {"user_email": "x@y.io"}})
        await b.drain()
        [track] = b.upstream.messages()
        assert (None, True) == (track["userId"], bool(track["anonymousId"]))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_no_lookups_in_dry_run(tmp_path: Path) -> None:
    """Without a Fullstory API key nothing is looked up (and nothing is ever sent to Fullstory)."""
    b = await start_bridge(tmp_path, fullstory_api_key=None)
    try:
        assert b.runtime.fullstory_api is None
        await b.post_stream({**RAGE_CLICK, "user": {"user_email": "x@y.io"}})
        await b.drain()
        [track] = b.upstream.messages()
        assert track["userId"] is None
        assert [] == [r for r in b.upstream.requests if r.method == "GET"]
    finally:
        await b.client.aclose()
        await b.runtime.stop()
