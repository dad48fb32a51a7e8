"""Segment target: the /v1/batch request, batch limits, and conformance with segment-analytics-python."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import respx
from pydantic import SecretStr
from segment.analytics import Client

from fsbridge.envelope import Envelope
from fsbridge.sources.fullstory import stream_kind
from fsbridge.store import Delivery
from fsbridge.targets.segment import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, SegmentDestination, SegmentIdentify
from tests.conftest import RAGE_CLICK, flow_named


def delivery(n: int, body: bytes, send_alone: bool = False) -> Delivery:
    return Delivery(
        f"dlv_{n}", "evt", "flow", "segment", f"m-{n}", body, "pending", 0, 0.0, 0.0, 0.0, 0.0, send_alone, None, None
    )


def destination(client: httpx.AsyncClient | None = None, **kwargs: Any) -> SegmentDestination:
    return SegmentDestination(
        client or httpx.AsyncClient(),
        api_url="https://events.eu1.segmentapis.com/",
        write_key=SecretStr("WK"),
        dry_run=False,
        **kwargs,
    )


class TestRequest:
    @respx.mock
    async def test_batch_request_shape(self) -> None:
        """POST {api_url}/v1/batch, Basic auth with the write key as user, the stored messages in `batch`."""
        route = respx.post("https://events.eu1.segmentapis.com/v1/batch").mock(
            return_value=httpx.Response(200, json={"success": True})
        )
        async with httpx.AsyncClient() as client:
            result = await destination(client).send([delivery(1, b'{"a":1}'), delivery(2, b'{"b":2}')])
        assert 200 == result.status_code
        request = route.calls.last.request
        assert "Basic " + base64.b64encode(b"WK:").decode() == request.headers["Authorization"]
        assert "application/json" == request.headers["Content-Type"]
        body = orjson.loads(request.content)
        assert [{"a": 1}, {"b": 2}] == body["batch"]
        assert datetime.fromisoformat(body["sentAt"]).tzinfo == UTC
        assert "writeKey" not in body

    @respx.mock
    async def test_failures_are_reported_not_raised(self) -> None:
        """HTTP errors and network errors become a SendResult; Retry-After is passed on."""
        respx.post("https://events.eu1.segmentapis.com/v1/batch").mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": "7"}, text="slow down"), httpx.ConnectTimeout("x")]
        )
        async with httpx.AsyncClient() as client:
            dest = destination(client)
            limited = await dest.send([delivery(1, b"{}")])
            timed_out = await dest.send([delivery(1, b"{}")])
        assert (429, "7", "slow down") == (limited.status_code, limited.retry_after, limited.response_excerpt)
        assert timed_out.status_code is None
        assert timed_out.error is not None
        assert "ConnectTimeout" in timed_out.error


class TestPlan:
    def test_count_limit(self) -> None:
        """No batch holds more than 2,500 messages."""
        batches = destination().plan([delivery(n, b"{}") for n in range(6000)])
        assert [2500, 2500, 1000] == [len(b) for b in batches]
        assert MAX_BATCH_MESSAGES == 2500

    def test_byte_limit(self) -> None:
        """No batch request body exceeds 500 KiB, envelope included."""
        body = b'{"p":"' + b"x" * 30_000 + b'"}'
        dest = destination()
        batches = dest.plan([delivery(n, body) for n in range(40)])
        for batch in batches:
            size = len(
                b'{"batch":[' + b",".join(d.body for d in batch) + b'],"sentAt":"2026-11-26T10:15:02.120+00:00"}'
            )
            assert size <= MAX_BATCH_BYTES
        assert 40 == sum(len(b) for b in batches)
        assert [17, 17, 6] == [len(b) for b in batches]

    def test_send_alone_travels_alone(self) -> None:
        """A delivery marked send_alone gets a batch of its own."""
        batches = destination().plan([delivery(1, b"{}"), delivery(2, b"{}", send_alone=True), delivery(3, b"{}")])
        assert [["dlv_2"], ["dlv_1", "dlv_3"]] == [[d.id for d in b] for b in batches]


def types_of(value: Any) -> Any:
    """The shape of a JSON value: keys and types all the way down."""
    if isinstance(value, dict):
        return {k: types_of(v) for k, v in value.items()}
    return type(value).__name__


class TestConformance:
    @pytest.mark.parametrize("with_user", [True, False])
    def test_track_matches_the_official_library(self, with_user: bool) -> None:
        """For the same track, fsbridge's message has the fields and types segment-analytics-python produces."""
        payload = RAGE_CLICK if with_user else {**RAGE_CLICK, "user": {"user_email": "a@b.co"}}
        env = Envelope("evt", "fullstory_stream", "s", stream_kind(payload), "k", 1_795_000_000.0, payload)
        ours = orjson.loads(flow_named("frustration_to_segment_track").render(env))

        official = Client(write_key="wk", send=False, sync_mode=True)
        ok, theirs = official.track(
            user_id=ours["userId"],
            anonymous_id=ours["anonymousId"],
            event=ours["event"],
            properties=ours["properties"],
            context={k: v for k, v in ours["context"].items() if k != "library"},
            timestamp=datetime.fromisoformat(ours["timestamp"]),
            message_id=ours["messageId"],
        )
        assert ok
        theirs = orjson.loads(orjson.dumps(theirs, default=str))
        theirs["context"]["library"] = {"name": "fsbridge", "version": ours["context"]["library"]["version"]}
        assert types_of(theirs) == types_of(ours)
        assert theirs == ours

    def test_identify_model_matches_the_official_library(self) -> None:
        """An identify rendered through fsbridge's model has the official library's fields and types."""
        ours = SegmentIdentify.model_validate(
            {"userId": "u1", "traits": {"plan": "pro"}, "timestamp": "2026-11-26T10:15:02.120Z", "messageId": "m1"}
        ).model_dump(mode="json")
        ok, theirs = Client(write_key="wk", send=False, sync_mode=True).identify(
            user_id="u1",
            traits={"plan": "pro"},
            timestamp=datetime(2026, 11, 26, 10, 15, 2, 120000, UTC),
            message_id="m1",
        )
        assert ok
        theirs = orjson.loads(orjson.dumps(theirs, default=str))
        theirs["context"]["library"] = ours["context"]["library"]
        assert theirs == ours
