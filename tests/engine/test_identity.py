"""Identity links and audiences: who is who across both systems, conflicts, and Engage membership."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from fsbridge.config import FsbridgeConfig, IdentityConfig
from fsbridge.engine.identity import IdentityRules, email_sha256
from fsbridge.envelope import MISSING, Envelope
from fsbridge.store import IdentityClaim
from tests.conftest import RAGE_CLICK, Bridge, start_bridge


def segment_envelope(message: dict[str, Any]) -> Envelope:
    return Envelope("evt", "segment", "", message["type"], "k", 0.0, message)


def anonymous_click(**user: Any) -> dict[str, Any]:
    return {**RAGE_CLICK, "user": user}


class TestClaims:
    def test_identify_claims_every_identifier(self) -> None:
        """An identify links its anonymousId, normalised email (and hash) and Fullstory uid to the userId."""
        claims = IdentityRules(IdentityConfig()).claims(
            segment_envelope({"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"email": " A@B.co "}})
        )
        assert {
            IdentityClaim("fullstory_uid", "u1", "u1"),
            IdentityClaim("anonymous_id", "a1", "u1"),
            IdentityClaim("email", "a@b.co", "u1"),
            IdentityClaim("email_sha256", email_sha256("a@b.co"), "u1"),
        } == set(claims)

    def test_track_email_comes_from_context_traits(self) -> None:
        """A track's email is read from context.traits.email."""
        claims = IdentityRules(IdentityConfig()).claims(
            segment_envelope(
                {"type": "track", "userId": "u1", "event": "X", "context": {"traits": {"email": "c@d.co"}}}
            )
        )
        assert IdentityClaim("email", "c@d.co", "u1") in claims

    def test_hashed_emails_only(self) -> None:
        """With hash_emails, the plain email is never kept, only its SHA-256."""
        claims = IdentityRules(IdentityConfig(hash_emails=True)).claims(
            segment_envelope({"type": "identify", "userId": "u1", "traits": {"email": "a@b.co"}})
        )
        assert "a@b.co" not in str(claims)
        assert IdentityClaim("email_sha256", email_sha256("a@b.co"), "u1") in claims

    def test_custom_user_id_field(self) -> None:
        """The Segment user id can come from another field, such as a trait."""
        rules = IdentityRules(IdentityConfig(segment_user_id_path="traits.account_uid"))
        claims = rules.claims(segment_envelope({"type": "identify", "userId": "x", "traits": {"account_uid": 77}}))
        assert IdentityClaim("fullstory_uid", "77", "77") in claims

    def test_no_user_id_no_claims(self) -> None:
        """Anonymous calls claim nothing (there is no user to link to)."""
        assert [] == IdentityRules(IdentityConfig()).claims(
            segment_envelope({"type": "track", "anonymousId": "a1", "event": "X"})
        )


class TestThroughTheService:
    async def test_stream_event_with_only_an_email_resolves_to_the_user(self, bridge: Bridge) -> None:
        """After an identify, a Fullstory click that carries only the email is sent with that userId."""
        await bridge.post_segment(
            {"type": "identify", "userId": "u_77", "messageId": "i1", "traits": {"email": "Z@Q.io"}}
        )
        await bridge.drain()
        await bridge.post_stream(anonymous_click(user_email="z@q.io "))
        await bridge.drain()
        [track] = bridge.upstream.messages()
        assert ("u_77", None) == (track["userId"], track["anonymousId"])

    async def test_stream_event_with_segment_anonymous_id_resolves(self, bridge: Bridge) -> None:
        """A click whose user carries the Segment anonymousId (as Segment's Fullstory destination sets it) resolves."""
        await bridge.post_segment(
            {"type": "track", "userId": "u_9", "anonymousId": "anon-9", "event": "X", "messageId": "t"}
        )
        await bridge.drain()
        await bridge.post_stream(anonymous_click(segmentAnonymousId="anon-9"))
        await bridge.drain()
        assert "u_9" == bridge.upstream.messages()[-1]["userId"]

    async def test_resolution_with_hashed_emails(self, tmp_path: Path) -> None:
        """With hash_emails, resolution still works, through the hash."""
        config = FsbridgeConfig.model_validate({"identity": {"hash_emails": True}})
        b = await start_bridge(tmp_path, config=config)
        try:
            await b.post_segment({"type": "identify", "userId": "u_5", "messageId": "i", "traits": {"email": "h@x.io"}})
            await b.drain()
            await b.post_stream(anonymous_click(user_email="H@X.io"))
            await b.drain()
            assert "u_5" == b.upstream.messages()[-1]["userId"]
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    async def test_unknown_email_stays_anonymous(self, bridge: Bridge) -> None:
        """An email nobody claimed leaves the click anonymous (stable anonymousId from the session)."""
        await bridge.post_stream(anonymous_click(user_email="nobody@x.io"))
        await bridge.drain()
        [track] = bridge.upstream.messages()
        assert track["userId"] is None
        assert track["anonymousId"]

    async def test_conflicting_claim_keeps_the_first_and_is_counted(self, bridge: Bridge) -> None:
        """One email claimed by two users: the first is kept, the conflict is logged (no email) and counted."""
        await bridge.post_segment({"type": "identify", "userId": "u1", "messageId": "a", "traits": {"email": "s@x.io"}})
        await bridge.drain()
        await bridge.post_segment({"type": "identify", "userId": "u2", "messageId": "b", "traits": {"email": "s@x.io"}})
        with capture_logs() as logs:
            await bridge.drain()
        conflicts = [e for e in logs if e["event"] == "identity.conflict"]
        assert {"email", "email_sha256"} == {c["kind"] for c in conflicts}
        assert "s@x.io" not in str(conflicts)
        stats = (await bridge.client.get("/ops/api/stats", headers=bridge.ops_headers())).json()
        assert 2 == stats["identity"]["conflicts"]
        found = await bridge.runtime.store.resolve_identities([("email", "s@x.io")])
        assert {("email", "s@x.io"): "u1"} == found


class TestAudiences:
    async def test_engage_tracks_update_membership(self, bridge: Bridge) -> None:
        """Audience Entered then Audience Exited tracks set membership true, then false."""
        entered = {
            "type": "track",
            "userId": "u1",
            "event": "Audience Entered",
            "messageId": "ae",
            "properties": {"audience_key": "high_value_accounts", "high_value_accounts": True},
        }
        await bridge.post_segment(entered)
        await bridge.drain()
        assert {"high_value_accounts": True} == await bridge.runtime.store.audience_memberships("u1")
        await bridge.post_segment({**entered, "event": "Audience Exited", "messageId": "ax"})
        await bridge.drain()
        assert {"high_value_accounts": False} == await bridge.runtime.store.audience_memberships("u1")

    async def test_engage_identify_with_boolean_audience_trait(self, bridge: Bridge) -> None:
        """An Engage identify carrying the audience's boolean trait updates membership."""
        await bridge.post_segment(
            {
                "type": "identify",
                "userId": "u2",
                "messageId": "ai",
                "traits": {"first_time_shopper": True},
                "context": {"personas": {"computation_class": "audience", "computation_key": "first_time_shopper"}},
            }
        )
        await bridge.drain()
        assert {"first_time_shopper": True} == await bridge.runtime.store.audience_memberships("u2")

    async def test_ordinary_boolean_traits_are_not_audiences(self, bridge: Bridge) -> None:
        """A boolean trait on an identify without Engage's personas context is not an audience."""
        await bridge.post_segment({"type": "identify", "userId": "u3", "messageId": "n", "traits": {"vip": True}})
        await bridge.drain()
        assert {} == await bridge.runtime.store.audience_memberships("u3")


async def test_group_calls_and_context_group_id_record_accounts(bridge: Bridge) -> None:
    """A group call, and a track with context.groupId, record which account the user belongs to."""
    await bridge.post_segment({"type": "group", "userId": "u1", "groupId": "acct-1", "messageId": "g"})
    await bridge.post_segment(
        {"type": "track", "userId": "u2", "event": "X", "messageId": "t", "context": {"groupId": "acct-1"}}
    )
    await bridge.drain()
    path = bridge.runtime.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT group_id, user_id FROM group_members ORDER BY user_id").fetchall()
    assert [("acct-1", "u1"), ("acct-1", "u2")] == rows


def test_the_fullstory_user_is_read_for_the_envelope_asked_about() -> None:
    """The user id kept for the last envelope answers only that envelope: asked about others in turn
    (equal payloads included), each gets its own, and one without a user id gets MISSING."""
    rules = IdentityRules(IdentityConfig())

    def click(payload: dict[str, Any]) -> Envelope:
        return Envelope("evt", "fullstory_stream", "s", "rage_click", "k", 0.0, payload)

    ada, bob, nobody = click({"user": {"user_id": "ada"}}), click({"user": {"uid": 7}}), click({"user": {}})
    ada_again = click({"user": {"user_id": "ada"}})
    asked = [ada, ada, bob, ada_again, nobody, bob, ada]
    assert [rules.fullstory_user(e) for e in asked] == ["ada", "ada", "7", "ada", MISSING, "7", "ada"]
