"""Every status of the contract on both Fullstory endpoints: 202, duplicate, 400, 401, 413, 415, 422, 503."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from fsbridge.app import create_app
from fsbridge.errors import StoreUnavailableError
from fsbridge.log import configure_logging
from fsbridge.store import Accepted, NewInboxEvent
from fsbridge.testing import bearer_headers, fullstory_signed_headers
from tests.conftest import OLD_WEBHOOK_SECRET, RAGE_CLICK, STREAM_TOKEN, WEBHOOK_SECRET, Bridge, start_bridge

NOTE: dict[str, Any] = {"eventName": "note.created", "version": 1, "data": {"id": "798ith22928347", "text": "look"}}
STREAM = "/webhooks/fullstory/streams/frustration"


def assert_error(response: Any, status: int, code: str) -> None:
    assert status == response.status_code, response.text
    body = response.json()
    assert code == body["error"]["code"]
    assert body["error"]["message"].endswith(".")


class TestAccepted:
    async def test_stream_event_is_stored_before_202(self, bridge: Bridge) -> None:
        """A valid Streams event answers 202 with an id under which the raw bytes are stored."""
        response = await bridge.post_stream(RAGE_CLICK)
        assert 202 == response.status_code
        body = response.json()
        assert {"status": "accepted", "id": body["id"]} == body
        stored = await bridge.runtime.store.get_inbox_event(body["id"])
        assert stored is not None
        assert orjson.dumps(RAGE_CLICK) == stored.body
        assert ("fullstory_stream", "frustration", "rage_click") == (
            stored.source,
            stored.stream,
            stored.kind,
        )

    async def test_system_webhook_is_stored(self, bridge: Bridge) -> None:
        """A signed system webhook answers 202 and is stored with its eventName as kind."""
        response = await bridge.post_system(NOTE)
        assert 202 == response.status_code
        stored = await bridge.runtime.store.get_inbox_event(response.json()["id"])
        assert stored is not None
        assert ("fullstory", "note.created", 'json:["note.created","798ith22928347"]') == (
            stored.source,
            stored.kind,
            stored.dedup_key,
        )

    async def test_rotated_secret_is_accepted(self, bridge: Bridge) -> None:
        """A system webhook signed with the previous secret is accepted during rotation."""
        assert 202 == (await bridge.post_system(NOTE, secret=OLD_WEBHOOK_SECRET)).status_code

    async def test_stream_accepts_a_fullstory_signature_instead_of_a_token(self, bridge: Bridge) -> None:
        """The Streams endpoint also accepts a valid Fullstory-Signature."""
        body = orjson.dumps(RAGE_CLICK)
        headers = fullstory_signed_headers(body, WEBHOOK_SECRET, int(bridge.clock.now()))
        assert 202 == (await bridge.client.post(STREAM, content=body, headers=headers)).status_code

    async def test_unknown_event_name_is_accepted_and_stored(self, bridge: Bridge) -> None:
        """A well-formed system webhook of a type no flow uses is 202, not an error."""
        response = await bridge.post_system({"eventName": "future.thing", "data": {"id": 1}})
        assert 202 == response.status_code

    async def test_json_subtype_content_type_is_accepted(self, bridge: Bridge) -> None:
        """`application/json; charset=utf-8` is JSON too."""
        headers = {**bearer_headers(STREAM_TOKEN), "Content-Type": "application/json; charset=utf-8"}
        response = await bridge.client.post(STREAM, content=orjson.dumps(RAGE_CLICK), headers=headers)
        assert 202 == response.status_code


class TestDuplicates:
    async def test_same_stream_body_is_a_duplicate(self, bridge: Bridge) -> None:
        """The same body on the same stream answers 202 duplicate with the first id, stored once."""
        first = (await bridge.post_stream(RAGE_CLICK)).json()
        second = await bridge.post_stream(RAGE_CLICK)
        assert 202 == second.status_code
        assert {"status": "accepted", "id": first["id"], "duplicate": True} == second.json()
        stats = await bridge.runtime.store.stats()
        assert {"received": 2, "duplicate": 1, "quarantined": 0} == stats["by_source"]["fullstory_stream"]

    async def test_same_body_on_another_stream_is_new(self, bridge: Bridge) -> None:
        """Identity without a provider id is body + endpoint + stream."""
        first = (await bridge.post_stream(RAGE_CLICK, stream="a")).json()
        second = (await bridge.post_stream(RAGE_CLICK, stream="b")).json()
        assert first["id"] != second["id"]
        assert "duplicate" not in second

    async def test_system_webhook_dedups_on_event_name_and_data_id(self, bridge: Bridge) -> None:
        """A redelivered system webhook with a different body but the same eventName + data.id is a duplicate."""
        first = (await bridge.post_system(NOTE)).json()
        redelivered = {**NOTE, "data": {**NOTE["data"], "text": "edited"}}
        second = (await bridge.post_system(redelivered)).json()
        assert first["id"] == second["id"]
        assert second["duplicate"] is True

    async def test_duplicate_is_not_processed_twice(self, bridge: Bridge) -> None:
        """A duplicate creates no second delivery."""
        await bridge.post_stream(RAGE_CLICK)
        await bridge.post_stream(RAGE_CLICK)
        await bridge.drain()
        assert 1 == len(bridge.upstream.messages())


class TestRefused:
    async def test_invalid_json_is_400(self, bridge: Bridge) -> None:
        """An authenticated body that is not JSON answers 400 invalid_json."""
        response = await bridge.client.post(STREAM, content=b"{not json", headers=bearer_headers(STREAM_TOKEN))
        assert_error(response, 400, "invalid_json")

    @pytest.mark.parametrize("token", ["wrong-token", ""])
    async def test_wrong_or_missing_token_is_401(self, bridge: Bridge, token: str) -> None:
        """A Streams request without a configured token or signature answers 401."""
        headers = bearer_headers(token) if token else {"Content-Type": "application/json"}
        response = await bridge.client.post(STREAM, content=orjson.dumps(RAGE_CLICK), headers=headers)
        assert_error(response, 401, "unauthenticated")

    async def test_bad_signature_is_401(self, bridge: Bridge) -> None:
        """A system webhook signed with an unknown secret answers 401."""
        assert_error(await bridge.post_system(NOTE, secret="not-configured"), 401, "unauthenticated")

    async def test_stale_timestamp_is_401(self, bridge: Bridge) -> None:
        """A correct signature more than 5 minutes old answers 401."""
        body = orjson.dumps(NOTE)
        headers = fullstory_signed_headers(body, WEBHOOK_SECRET, int(bridge.clock.now()) - 600)
        response = await bridge.client.post("/webhooks/fullstory", content=body, headers=headers)
        assert_error(response, 401, "unauthenticated")
        assert "5 minutes" in response.json()["error"]["message"]

    @pytest.mark.parametrize("timestamp", ["²", "¹²³", "9" * 400, "١٧٩٥٠٠٠٠٠٠"])
    async def test_malformed_signature_timestamp_is_401_never_500(self, bridge: Bridge, timestamp: str) -> None:
        """A Fullstory-Signature whose `t` is not ASCII seconds or milliseconds answers 401, never 500."""
        headers = {b"Content-Type": b"application/json", b"Fullstory-Signature": f"o:x,t:{timestamp},v:x".encode()}
        response = await bridge.client.post("/webhooks/fullstory", content=orjson.dumps(NOTE), headers=headers)
        assert_error(response, 401, "unauthenticated")

    async def test_missing_signature_is_401(self, bridge: Bridge) -> None:
        """A system webhook without Fullstory-Signature answers 401."""
        response = await bridge.client.post(
            "/webhooks/fullstory", content=orjson.dumps(NOTE), headers={"Content-Type": "application/json"}
        )
        assert_error(response, 401, "unauthenticated")

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
    async def test_non_json_content_type_is_415(self, bridge: Bridge, content_type: str | None) -> None:
        """Anything but application/json answers 415, on both endpoints."""
        headers = {"Authorization": f"Bearer {STREAM_TOKEN}"}
        if content_type:
            headers["Content-Type"] = content_type
        for path in (STREAM, "/webhooks/fullstory"):
            response = await bridge.client.post(path, content=orjson.dumps(NOTE), headers=headers)
            assert_error(response, 415, "unsupported_media_type")

    async def test_nothing_refused_is_stored(self, bridge: Bridge) -> None:
        """Refused requests leave no trace in the store's counts."""
        await bridge.client.post(STREAM, content=b"{", headers=bearer_headers(STREAM_TOKEN))
        await bridge.client.post(STREAM, content=orjson.dumps(RAGE_CLICK), headers=bearer_headers("nope"))
        assert {} == (await bridge.runtime.store.stats())["by_source"]


class TestTooLarge:
    @pytest.fixture
    async def small(self, tmp_path: Path) -> AsyncIterator[Bridge]:
        b = await start_bridge(tmp_path, max_body_bytes=1000)
        yield b
        await b.client.aclose()
        await b.runtime.stop()

    async def test_declared_length_over_limit_is_413(self, small: Bridge) -> None:
        """A Content-Length over the limit answers 413."""
        body = orjson.dumps({**RAGE_CLICK, "pad": "x" * 2000})
        response = await small.client.post(STREAM, content=body, headers=bearer_headers(STREAM_TOKEN))
        assert_error(response, 413, "payload_too_large")

    async def test_streamed_body_over_limit_is_413(self, small: Bridge) -> None:
        """Without Content-Length the bytes received are counted, and the request answers 413."""

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 100

        response = await small.client.post(STREAM, content=chunks(), headers=bearer_headers(STREAM_TOKEN))
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large")

    async def test_streamed_body_under_the_limit_is_stored_whole(self, small: Bridge) -> None:
        """A body sent in several chunks without Content-Length is joined and stored byte for byte."""
        body = orjson.dumps(RAGE_CLICK)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 50):
                yield body[start : start + 50]

        response = await small.client.post(STREAM, content=chunks(), headers=bearer_headers(STREAM_TOKEN))
        assert 202 == response.status_code, response.text
        stored = await small.runtime.store.get_inbox_event(response.json()["id"])
        assert stored is not None
        assert body == stored.body

    async def test_body_at_the_limit_is_accepted(self, small: Bridge) -> None:
        """A body of exactly the limit is accepted."""
        body = orjson.dumps(RAGE_CLICK)
        body = body[:-1] + b',"p":"' + b"x" * (1000 - len(body) - 7) + b'"}'
        assert 1000 == len(body)
        assert 202 == (await small.client.post(STREAM, content=body, headers=bearer_headers(STREAM_TOKEN))).status_code


class TestQuarantine:
    async def test_stream_without_event_type_is_quarantined(self, bridge: Bridge) -> None:
        """An authenticated Streams payload without an event type answers 422 and is kept in quarantine."""
        response = await bridge.post_stream({"user": {"user_id": "u1"}})
        assert_error(response, 422, "unrecognised_payload")
        [item] = await bridge.runtime.store.list_quarantine(10)
        assert item.id == response.json()["error"]["quarantine_id"]
        assert b'{"user":{"user_id":"u1"}}' == item.body
        assert "event type" in item.error

    async def test_system_webhook_without_event_name_is_quarantined(self, bridge: Bridge) -> None:
        """A system webhook without eventName/data answers 422 and is counted as quarantined."""
        assert_error(await bridge.post_system({"hello": "world"}), 422, "unrecognised_payload")
        stats = await bridge.runtime.store.stats()
        assert {"received": 1, "duplicate": 0, "quarantined": 1} == stats["by_source"]["fullstory"]

    async def test_quarantine_is_visible_in_the_ops_api(self, bridge: Bridge) -> None:
        """Quarantined events are listed by the ops API with their reason."""
        await bridge.post_stream({"nothing": True})
        response = await bridge.client.get("/ops/api/quarantine", headers=bridge.ops_headers())
        [item] = response.json()["items"]
        assert "fullstory_stream" == item["source"]
        assert "event type" in item["error"]


class TestUnavailable:
    @pytest.mark.parametrize(
        ("overrides", "path", "variable"),
        [
            ({"fullstory_webhook_secrets": ()}, "/webhooks/fullstory", "FSBRIDGE_FULLSTORY_WEBHOOK_SECRETS"),
            (
                {"fullstory_webhook_secrets": (), "fullstory_stream_tokens": ()},
                STREAM,
                "FSBRIDGE_FULLSTORY_STREAM_TOKENS",
            ),
        ],
    )
    async def test_unconfigured_endpoint_is_503_naming_the_variable(
        self, tmp_path: Path, overrides: dict[str, Any], path: str, variable: str
    ) -> None:
        """An endpoint with no secret configured refuses everything with 503 and names the variable."""
        b = await start_bridge(tmp_path, **overrides)
        try:
            response = await b.client.post(path, content=orjson.dumps(NOTE), headers=bearer_headers("x"))
            assert_error(response, 503, "not_configured")
            assert variable in response.json()["error"]["message"]
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    async def test_store_failure_is_503_never_202(self, bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the store cannot take the event, intake answers 503 so the sender retries."""

        async def failing_accept(event: NewInboxEvent) -> Accepted:
            raise StoreUnavailableError("disk I/O error")

        monkeypatch.setattr(bridge.runtime.store, "accept", failing_accept)
        response = await bridge.post_stream(RAGE_CLICK)
        assert_error(response, 503, "store_unavailable")


class TestConnection:
    async def test_disconnect_before_the_whole_body_stores_nothing(self, bridge: Bridge) -> None:
        """A client that disconnects mid-body gets 400 incomplete_body, and nothing is stored."""
        messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": orjson.dumps(RAGE_CLICK)[:20], "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        headers = [(k.lower().encode(), v.encode()) for k, v in bearer_headers(STREAM_TOKEN).items()]
        scope = {"type": "http", "method": "POST", "path": STREAM, "headers": headers, "query_string": b""}
        await create_app(bridge.runtime, manage_runtime=False)(scope, receive, send)
        assert 400 == sent[0]["status"]
        assert "incomplete_body" == orjson.loads(sent[1]["body"])["error"]["code"]
        assert {} == (await bridge.runtime.store.stats())["by_source"]

    async def test_log_lines_of_a_webhook_carry_its_request_id(self, bridge: Bridge) -> None:
        """What the receiver logs during a request carries that request's X-Request-ID, echoed back."""
        out = io.StringIO()
        configure_logging("json")
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
        response = await bridge.client.post(
            STREAM,
            content=orjson.dumps(RAGE_CLICK),
            headers={**bearer_headers("wrong-token"), "X-Request-ID": "req-7f3a"},
        )
        assert_error(response, 401, "unauthenticated")
        assert "req-7f3a" == response.headers["x-request-id"]
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [("inbox.rejected", "req-7f3a")] == [(line["event"], line.get("request_id")) for line in lines]


async def test_a_wrong_signature_on_the_streams_endpoint_says_so(bridge: Bridge) -> None:
    """A Streams request with a wrong Fullstory-Signature (and no bearer token) is told about its signature."""
    body = orjson.dumps(RAGE_CLICK)
    headers = fullstory_signed_headers(body, "not-the-secret", int(bridge.clock.now()))
    response = await bridge.client.post(STREAM, content=body, headers=headers)
    assert_error(response, 401, "unauthenticated")
    message = response.json()["error"]["message"]
    assert "ignature" in message
    assert "Bearer" not in message
