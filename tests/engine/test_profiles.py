"""Profiles (Part 2): the last traits and group per Segment user, shown by GET /ops/api/users/{id};
a Segment deletion request removes all of it, and a Fullstory upsert still queued for that user
is not sent after the deletion."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import Bridge

PER_USER_TABLES = ("profiles", "identity_links", "identity_conflicts", "group_members", "audience_membership",
                   "sync_snapshots", "lookup_cache")  # fmt: skip


def rows_naming(db: Path, *needles: str) -> dict[str, list[Any]]:
    with sqlite3.connect(db) as conn:
        found = {}
        for table in PER_USER_TABLES:
            rows = [r for r in conn.execute(f"SELECT * FROM {table}") if any(n in repr(r) for n in needles)]  # noqa: S608
            if rows:
                found[table] = rows
        return found


def message(kind: str, n: int, user: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"type": kind, "userId": user, "messageId": f"{kind}-{user}-{n}", **fields}


async def test_a_profile_is_kept_and_a_deletion_removes_everything(bridge: Bridge, tmp_path: Path) -> None:
    """Traits merge across identify calls, a group call sets the account; after a deletion the user
    page answers 404, no table names the user, and a queued upsert for them is gone."""
    await bridge.post_segment(message("identify", 1, traits={"email": "Ada@Example.com", "plan": "pro"}))
    await bridge.post_segment(message("identify", 2, traits={"seats": 12}))
    await bridge.post_segment(message("group", 3, groupId="acme"))
    await bridge.post_segment(message("track", 4, event="Audience Entered", properties={"audience_key": "power_users"}))
    await bridge.post_segment(message("identify", 5, user="u2", traits={"email": "grace@example.com"}))
    await bridge.drain()
    page = await bridge.client.get("/ops/api/users/u1", headers=bridge.ops_headers())
    assert 200 == page.status_code
    body = page.json()
    assert {"email": "Ada@Example.com", "plan": "pro", "seats": 12} == body["profile"]["traits"]
    assert "acme" == body["profile"]["group_id"]
    assert {"power_users": True} == body["audiences"]
    assert {"kind": "email", "value": "ada@example.com"} in body["identity_links"]

    await bridge.runtime.pause_destination("fullstory")
    await bridge.post_segment(message("identify", 6, traits={"plan": "enterprise"}))  # queued behind the pause
    await bridge.post_segment({"type": "delete", "userId": "u1", "messageId": "delete-u1"})
    await bridge.drain()

    assert 404 == (await bridge.client.get("/ops/api/users/u1", headers=bridge.ops_headers())).status_code
    assert {} == rows_naming(tmp_path / "fsbridge.db", '"u1"', "'u1'", "create:u1", "ada@example.com")
    assert rows_naming(tmp_path / "fsbridge.db", "'u2'")  # the other user is untouched
    # The upsert still queued for them is gone, not kept as a dead letter naming them.
    queued = await bridge.runtime.store.list_deliveries(None, "segment_identify_to_fullstory_user", 10)
    assert [] == [d for d in queued if b'"u1"' in d.body]

    await bridge.runtime.resume_destination("fullstory")
    await bridge.drain()
    sent = [(r.method, r.url.params.get("uid")) for r in bridge.upstream.fullstory()]
    assert ("DELETE", "u1") == sent[-1]
    assert 3 == sum(1 for method, _ in sent if method == "POST")  # u1 twice and u2, never after the deletion


async def test_the_user_page_lists_the_users_latest_events_and_deliveries(bridge: Bridge) -> None:
    """GET /ops/api/users/{id} lists the newest stored events naming the user (Segment and Fullstory alike)
    and the deliveries made from them, newest first; another user's events are not listed."""
    await bridge.post_segment(message("identify", 1, traits={"email": "ada@example.com"}))
    await bridge.post_segment(message("identify", 2, user="u10", traits={"email": "x@example.com"}))
    click = {"event": {"event_type": "rage-click"}, "session": {"session_id": "1:2"}, "user": {"user_id": "u1"}}
    await bridge.post_stream(click)
    await bridge.drain()
    body = (await bridge.client.get("/ops/api/users/u1", headers=bridge.ops_headers())).json()
    assert [("fullstory_stream", "rage_click"), ("segment", "identify")] == [
        (e["source"], e["kind"]) for e in body["events"]
    ]
    flows = sorted(d["flow"] for d in body["deliveries"])
    assert ["frustration_to_segment_track", "segment_identify_to_fullstory_user"] == flows
    assert {"delivered"} == {d["status"] for d in body["deliveries"]}


async def test_the_user_page_leaves_out_events_that_merely_mention_the_id(bridge: Bridge) -> None:
    """An event of another user whose properties happen to hold "u1" is not listed on u1's page."""
    await bridge.post_segment(message("identify", 1, traits={"plan": "pro"}))
    await bridge.post_segment(message("track", 2, user="u7", event="Referral Sent", properties={"referred_by": "u1"}))
    await bridge.drain()
    body = (await bridge.client.get("/ops/api/users/u1", headers=bridge.ops_headers())).json()
    assert [("segment", "identify")] == [(e["source"], e["kind"]) for e in body["events"]]
