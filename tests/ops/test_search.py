"""GET /ops/api/events: stored events by the person they are about (userId, email, anonymousId), a
Segment messageId, source and time, newest first, a page at a time; each with its flows and deliveries."""

from __future__ import annotations

from typing import Any

from tests.conftest import OPS_TOKEN, RAGE_CLICK, Bridge


def identify(n: int, user: str, **fields: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": f"m-{user}-{n}", **fields}


async def found(bridge: Bridge, **params: Any) -> dict[str, Any]:
    response = await bridge.client.get("/ops/api/events", params=params, headers=bridge.ops_headers())
    assert 200 == response.status_code, response.text
    body: dict[str, Any] = response.json()
    return body


async def people(bridge: Bridge) -> None:
    await bridge.post_segment(identify(1, "u1", anonymousId="anon-1", traits={"email": "Ada@Example.com"}))
    await bridge.drain()  # the links it claims are known to what comes after
    bridge.clock.advance(1)
    await bridge.post_segment(identify(2, "u7", properties={"referred_by": "u1"}))
    bridge.clock.advance(1)
    await bridge.post_stream({**RAGE_CLICK, "user": {"user_id": "u1"}})
    bridge.clock.advance(1)
    await bridge.post_stream(
        {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "n": 2}, "user": {"user_email": "ada@example.com"}}
    )
    await bridge.drain()


async def test_a_person_is_found_by_user_id_email_or_anonymous_id(bridge: Bridge) -> None:
    """The three identities find the same three events of u1 (the last a click that named only the email),
    newest first, and not u7's event that merely mentions u1."""
    await people(bridge)
    by_user = await found(bridge, user_id="u1")
    assert [("fullstory_stream", "rage_click"), ("fullstory_stream", "rage_click"), ("segment", "identify")] == [
        (e["source"], e["kind"]) for e in by_user["items"]
    ]
    assert {"u1"} == {e["user_id"] for e in by_user["items"]}
    for identity in (
        {"email": " ADA@example.com"},
        {"anonymous_id": "anon-1"},
        {"user_id": " u1 ", "email": "ada@example.com"},
    ):
        assert by_user["items"] == (await found(bridge, **identity))["items"], identity
    assert [] == (await found(bridge, email="nobody@example.com"))["items"]
    assert [] == (await found(bridge, user_id="u1", anonymous_id="anon-unknown"))["items"]


async def test_an_event_shows_its_flows_and_deliveries(bridge: Bridge) -> None:
    """Each item carries what each flow did with it and each delivery's destination and status."""
    await people(bridge)
    [identify_u1] = (await found(bridge, message_id="m-u1-1"))["items"]
    assert "identify" == identify_u1["kind"]
    assert {("segment_identify_to_fullstory_user", "fullstory", "delivered")} == {
        (d["flow"], d["destination"], d["status"]) for d in identify_u1["deliveries"]
    }
    assert {"flow": "segment_identify_to_fullstory_user", "outcome": "delivered"} in identify_u1["flows"]


async def test_pages_follow_the_cursor_and_time_narrows(bridge: Bridge) -> None:
    """limit and next_cursor walk the results newest first; since and until bound received_at; a bad time is 422."""
    await people(bridge)
    everything = [e["id"] for e in (await found(bridge))["items"]]
    assert 4 == len(everything)
    walked, cursor = [], None
    while True:
        page = await found(bridge, limit=3, **({"cursor": cursor} if cursor else {}))
        walked += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert everything == walked
    start = bridge.clock.now() - 3
    assert 2 == len((await found(bridge, since=start + 1, until=start + 2))["items"])
    assert 1 == len((await found(bridge, source="segment", since="2000-01-01T00:00:00Z", user_id="u7"))["items"])
    wrong = await bridge.client.get("/ops/api/events", params={"since": "soon"}, headers=bridge.ops_headers())
    assert (422, "invalid_time") == (wrong.status_code, wrong.json()["error"]["code"])
    bad = await bridge.client.get("/ops/api/events", params={"cursor": "x"}, headers=bridge.ops_headers())
    assert (422, "invalid_cursor") == (bad.status_code, bad.json()["error"]["code"])


async def test_the_dashboard_searches_from_one_box(bridge: Bridge) -> None:
    """/ops has a search box; /ops/search?q= finds a person's events by email, userId or anonymousId, or one
    event by messageId, each linked to its story."""
    await people(bridge)
    await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
    assert 'action="/ops/search"' in (await bridge.client.get("/ops")).text
    for q in ("ada@example.com", "u1", "anon-1"):
        page = (await bridge.client.get("/ops/search", params={"q": q})).text
        assert 3 == page.count('href="/ops/events/'), q
    one = (await bridge.client.get("/ops/search", params={"q": "m-u7-2"})).text
    assert 1 == one.count('href="/ops/events/')
    assert "No stored event" in (await bridge.client.get("/ops/search", params={"q": "nobody"})).text
