"""POST /webhooks/segment: classic (one message), Actions (one or an array), destination functions."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import OLD_SEGMENT_SECRET, SEGMENT_SECRET, SEGMENT_TOKEN, Bridge, start_bridge


def identify(n: int = 1, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"msg-{n}",
        "userId": f"u{n}",
        "anonymousId": f"anon-{n}",
        "traits": {"email": f"User{n}@Example.com", "plan": "pro", **traits},
        "timestamp": "2026-11-26T10:15:02.120Z",
    }


class TestSigning:
    async def test_classic_single_message_signed(self, bridge: Bridge) -> None:
        """A single message with a valid X-Signature is stored and answered 202."""
        response = await bridge.post_segment(identify())
        assert 202 == response.status_code, response.text
        stored = await bridge.runtime.store.get_inbox_event(response.json()["id"])
        assert stored is not None
        assert ("segment", "identify", "messageId:msg-1") == (stored.source, stored.kind, stored.dedup_key)

    async def test_rotated_secret(self, bridge: Bridge) -> None:
        """A signature with the previous shared secret is accepted during rotation."""
        assert 202 == (await bridge.post_segment(identify(), secret=OLD_SEGMENT_SECRET)).status_code

    async def test_actions_array_of_one_signed_over_its_element(self, bridge: Bridge) -> None:
        """An Actions array of one message is verified over the exact bytes of that element."""
        element = b'{"type":"track","event":"Order Completed","userId":"u1","messageId":"m-arr"}'
        body = b"[" + element + b"]"
        signature = hmac.new(SEGMENT_SECRET.encode(), element, hashlib.sha1).hexdigest()
        response = await bridge.client.post(
            "/webhooks/segment", content=body, headers={"Content-Type": "application/json", "X-Signature": signature}
        )
        assert 202 == response.status_code, response.text

    async def test_signed_array_of_many_is_refused_with_a_reason(self, bridge: Bridge) -> None:
        """An array of several messages signed only with X-Signature answers 401 and says to use the token."""
        response = await bridge.post_segment([identify(1), identify(2)])
        assert 401 == response.status_code
        message = response.json()["error"]["message"]
        assert "first message" in message
        assert "FSBRIDGE_SEGMENT_WEBHOOK_TOKENS" in message
        assert {} == (await bridge.runtime.store.stats())["by_source"]

    async def test_array_with_bearer_token_is_split_into_messages(self, bridge: Bridge) -> None:
        """With the bearer token an array is accepted; each message is stored and de-duplicated on its own."""
        response = await bridge.post_segment([identify(1), identify(2), identify(3)], token=SEGMENT_TOKEN)
        assert 202 == response.status_code
        body = response.json()
        assert 3 == len(body["ids"])
        assert 0 == body["duplicates"]
        assert body["id"] == body["ids"][0]
        again = (await bridge.post_segment([identify(3), identify(4)], token=SEGMENT_TOKEN)).json()
        assert 1 == again["duplicates"]
        assert body["ids"][2] == again["ids"][0]

    async def test_destination_function_with_bearer(self, bridge: Bridge) -> None:
        """A destination function that forwards one event with Authorization: Bearer is accepted."""
        assert 202 == (await bridge.post_segment(identify(), token=SEGMENT_TOKEN)).status_code

    @pytest.mark.parametrize(
        "headers",
        [
            {"X-Signature": "00" * 20},
            {"X-Signature": ""},
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {SEGMENT_TOKEN}"},
        ],
    )
    async def test_bad_or_missing_credentials(self, bridge: Bridge, headers: dict[str, str]) -> None:
        """A wrong or missing signature, or a wrong token, answers 401."""
        response = await bridge.client.post(
            "/webhooks/segment",
            content=orjson.dumps(identify()),
            headers={"Content-Type": "application/json", **headers},
        )
        assert 401 == response.status_code

    async def test_signature_over_reserialised_json_fails(self, bridge: Bridge) -> None:
        """The signature is checked on the raw bytes: one extra space in the body breaks it."""
        body = orjson.dumps(identify())
        signature = hmac.new(SEGMENT_SECRET.encode(), body, hashlib.sha1).hexdigest()
        response = await bridge.client.post(
            "/webhooks/segment",
            content=body.replace(b'"type":', b'"type": '),
            headers={"Content-Type": "application/json", "X-Signature": signature},
        )
        assert 401 == response.status_code

    async def test_unconfigured_is_503(self, tmp_path: Path) -> None:
        """With neither secrets nor tokens configured, Segment webhooks answer 503 naming the variable."""
        b = await start_bridge(tmp_path, segment_webhook_secrets=(), segment_webhook_tokens=())
        try:
            response = await b.post_segment(identify())
            assert 503 == response.status_code
            assert "FSBRIDGE_SEGMENT_WEBHOOK_SECRETS" in response.json()["error"]["message"]
        finally:
            await b.client.aclose()
            await b.runtime.stop()


class TestMessages:
    @pytest.mark.parametrize("kind", ["identify", "track", "page", "screen", "group", "alias", "delete"])
    async def test_every_spec_type_is_accepted(self, bridge: Bridge, kind: str) -> None:
        """Each Spec type answers 202 and is stored under its type."""
        message = {"type": kind, "messageId": f"m-{kind}", "userId": "u1", "event": "X", "groupId": "g"}
        response = await bridge.post_segment(message)
        assert 202 == response.status_code
        stored = await bridge.runtime.store.get_inbox_event(response.json()["id"])
        assert stored is not None
        assert kind == stored.kind

    async def test_duplicate_message_id(self, bridge: Bridge) -> None:
        """A redelivery with the same messageId answers 202 duplicate, even if Segment re-stamped it."""
        first = (await bridge.post_segment(identify())).json()
        second = (await bridge.post_segment({**identify(), "sentAt": "2026-11-26T11:00:00Z"})).json()
        assert {"status": "accepted", "id": first["id"], "duplicate": True} == second

    @pytest.mark.parametrize(
        ("message", "reason"),
        [
            ({"userId": "u1", "traits": {}}, "needs a string `type`"),
            ({"type": "", "userId": "u1"}, "needs a string `type`"),
            ({"type": "pageview", "userId": "u1"}, "is not a Segment Spec type"),
            ([], "empty JSON array"),
            ("hello", "must be a JSON object"),
        ],
    )
    async def test_malformed_messages_are_quarantined(self, bridge: Bridge, message: Any, reason: str) -> None:
        """A message without a usable type answers 422 and is kept in quarantine with the reason."""
        response = await bridge.post_segment(message)
        assert 422 == response.status_code
        assert reason in response.json()["error"]["message"]
        [item] = await bridge.runtime.store.list_quarantine(10)
        assert reason in item.error

    async def test_mixed_array_keeps_everything(self, bridge: Bridge) -> None:
        """In an array, good messages are stored and bad ones quarantined; the answer is 422 listing both."""
        response = await bridge.post_segment([identify(1), {"userId": "u2"}], token=SEGMENT_TOKEN)
        assert 422 == response.status_code
        error = response.json()["error"]
        assert 1 == len(error["accepted_ids"])
        assert 1 == len(error["quarantine_ids"])
        assert "1 of 2 messages" in error["message"]
        stats = (await bridge.runtime.store.stats())["by_source"]["segment"]
        assert {"received": 2, "duplicate": 0, "quarantined": 1} == stats


class TestBounds:
    async def test_an_array_over_the_cap_is_refused_whole(self, bridge: Bridge) -> None:
        """An authenticated array of 2,501 messages answers 413 naming the cap, and stores nothing."""
        response = await bridge.post_segment([{}] * 2501, token=SEGMENT_TOKEN)
        assert 413 == response.status_code
        assert "too_many_messages" == response.json()["error"]["code"]
        assert "at most 2,500" in response.json()["error"]["message"]
        assert {} == (await bridge.runtime.store.stats())["by_source"]

    async def test_a_full_batch_is_one_write_and_one_log_line(
        self, bridge: Bridge, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """2,500 unrecognised messages are quarantined in one store write, with one log line for the request."""
        writes = bridge.runtime.store.writes
        response = await bridge.post_segment([{"n": n} for n in range(2500)], token=SEGMENT_TOKEN)
        assert 422 == response.status_code
        assert 1 == bridge.runtime.store.writes - writes
        assert 1 == capsys.readouterr().out.count("inbox.quarantined")
        assert 2500 == (await bridge.runtime.store.stats())["by_source"]["segment"]["quarantined"]

    @pytest.mark.parametrize("wrapping", [b"[%s]", b"[ %s]", b"[  %s ]", b"%s"])
    async def test_a_message_without_message_id_is_one_event_however_wrapped(
        self, bridge: Bridge, wrapping: bytes
    ) -> None:
        """A signed message without messageId, sent alone and re-wrapped as `[ msg]`, is one event."""
        message = orjson.dumps({"type": "track", "event": "Signed Up", "userId": "u1"})
        first = await bridge.client.post(
            "/webhooks/segment",
            content=message,
            headers={"Content-Type": "application/json", "X-Signature": sign(message)},
        )
        body = wrapping % message
        again = await bridge.client.post(
            "/webhooks/segment",
            content=body,
            headers={"Content-Type": "application/json", "X-Signature": sign(message)},
        )
        assert 202 == first.status_code
        assert {"status": "accepted", "id": first.json()["id"], "duplicate": True} == again.json()
        stored = await bridge.runtime.store.get_inbox_event(first.json()["id"])
        assert stored is not None
        assert message == stored.body

    @pytest.mark.parametrize("body", [b"[" * 1000, b"[" + b"9" * 5000 + b"]", b"[" * 900 + b"]" * 900])
    async def test_odd_json_with_any_signature_is_never_a_500(self, bridge: Bridge, body: bytes) -> None:
        """Deep arrays and huge numbers with an X-Signature answer 401 (wrong signature) or 400, never 500."""
        response = await bridge.client.post(
            "/webhooks/segment", content=body, headers={"Content-Type": "application/json", "X-Signature": "00"}
        )
        assert response.status_code in (400, 401)


def sign(body: bytes) -> str:
    return hmac.new(SEGMENT_SECRET.encode(), body, hashlib.sha1).hexdigest()


class TestHostileMessages:
    async def test_a_deep_message_without_message_id_is_quarantined_not_a_500(self, bridge: Bridge) -> None:
        """A message nested past 254 levels without a messageId is quarantined; its batch's others are stored."""
        deep = b'{"type":"track","event":"x","userId":"u","properties":' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}"
        good = orjson.dumps(identify(1))
        response = await bridge.client.post(
            "/webhooks/segment",
            content=b"[" + good + b"," + deep + b"]",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {SEGMENT_TOKEN}"},
        )
        assert 422 == response.status_code, response.text
        assert 1 == len(response.json()["error"]["accepted_ids"])
        [item] = await bridge.runtime.store.list_quarantine(10)
        assert "nests too deeply" in item.error

    async def test_a_quarantine_reason_quotes_a_short_prefix_of_a_long_type(self, bridge: Bridge) -> None:
        """A 4 MiB `type` is quarantined with a reason of a few hundred characters, not the value."""
        response = await bridge.post_segment({"type": "t" * (4 * 1024 * 1024), "userId": "u1"})
        assert 422 == response.status_code
        assert len(response.text) < 1000
        [item] = await bridge.runtime.store.list_quarantine(10)
        assert len(item.error) < 300
        assert "ttt" in item.error
