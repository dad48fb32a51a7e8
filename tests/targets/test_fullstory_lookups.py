"""Fullstory look-ups: short in-process retries (tenacity) for an idempotent GET, then give up."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState

from fsbridge.targets.fullstory_lookups import FullstoryLookups, LookupUnavailableError
from fsbridge.testing import FakeUpstream
from tests.conftest import RAGE_CLICK, Bridge, start_bridge

USERS = "https://api.fullstory.com/v2/users"


def lookups(client: httpx.AsyncClient) -> FullstoryLookups:
    return FullstoryLookups(client, api_url="https://api.fullstory.com", api_key=SecretStr("K"), max_wait_seconds=0)


def users(*uids: str) -> httpx.Response:
    return httpx.Response(200, json={"results": [{"id": str(n), "uid": uid} for n, uid in enumerate(uids)]})


@respx.mock
async def test_one_identified_user_gives_its_uid() -> None:
    """GET /v2/users?email=&is_identified=true with the raw key; one user → its uid."""
    route = respx.get(USERS).mock(return_value=users("u_1"))
    async with httpx.AsyncClient() as client:
        assert "u_1" == await lookups(client).uid_for_email("a@b.co")
    request = route.calls.last.request
    assert {"email": "a@b.co", "is_identified": "true"} == dict(request.url.params)
    assert "Basic K" == request.headers["Authorization"]


@respx.mock
@pytest.mark.parametrize("answer", [users(), users("u_1", "u_2"), httpx.Response(404, json={})])
async def test_none_ambiguous_or_refused_gives_none(answer: httpx.Response) -> None:
    """No user, two users with that email, or a non-retryable refusal → None, without retrying."""
    route = respx.get(USERS).mock(return_value=answer)
    async with httpx.AsyncClient() as client:
        assert await lookups(client).uid_for_email("a@b.co") is None
    assert 1 == route.call_count


@respx.mock
async def test_429_and_5xx_are_retried_briefly() -> None:
    """A 429 (with Retry-After) and a 503 are retried in-process; the third attempt succeeds."""
    route = respx.get(USERS).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(503), users("u_9")]
    )
    async with httpx.AsyncClient() as client:
        assert "u_9" == await lookups(client).uid_for_email("a@b.co")
    assert 3 == route.call_count


@respx.mock
async def test_gives_up_after_three_attempts() -> None:
    """A look-up that keeps failing raises after 3 attempts: the durable queue is the only long retry."""
    route = respx.get(USERS).mock(side_effect=httpx.ConnectError("refused"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(LookupUnavailableError):
            await lookups(client).uid_for_email("a@b.co")
    assert 3 == route.call_count


def test_wait_honours_a_short_retry_after_within_the_cap() -> None:
    """The wait between attempts is Retry-After when given, else exponential, never above the cap."""
    client = httpx.AsyncClient()
    look = FullstoryLookups(client, api_url="https://x", api_key=SecretStr("K"), max_wait_seconds=2.0)
    state = RetryCallState(AsyncRetrying(), None, (), {})
    state.attempt_number = 1
    state.set_exception((LookupUnavailableError, LookupUnavailableError("429", retry_after=1.5), None))
    assert 1.5 == look._wait(state)
    state.set_exception((LookupUnavailableError, LookupUnavailableError("429", retry_after=30), None))
    assert 2.0 == look._wait(state)
    state.attempt_number = 3
    state.set_exception((LookupUnavailableError, LookupUnavailableError("500"), None))
    assert 0.4 == pytest.approx(look._wait(state))


async def test_unlinked_email_is_resolved_through_fullstory_and_remembered(bridge: Bridge) -> None:
    """A click with an email no Segment call linked is resolved by asking Fullstory, and the link is kept."""
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


async def test_failed_lookup_leaves_the_event_anonymous(tmp_path: Path) -> None:
    """When Fullstory cannot answer, the click is still delivered, anonymously."""
    b = await start_bridge(tmp_path, FakeUpstream(script=[503, 503, 503]))
    b.runtime.worker.lookups.max_wait_seconds = 0  # type: ignore[union-attr]
    try:
        await b.post_stream({**RAGE_CLICK, "user": {"user_email": "x@y.io"}})
        await b.drain()
        [track] = b.upstream.messages()
        assert (None, True) == (track["userId"], bool(track["anonymousId"]))
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_no_lookups_in_dry_run(tmp_path: Path) -> None:
    """Without a Fullstory API key nothing is looked up (and nothing is ever sent)."""
    b = await start_bridge(tmp_path, fullstory_api_key=None)
    try:
        assert b.runtime.worker.lookups is None
    finally:
        await b.client.aclose()
        await b.runtime.stop()
