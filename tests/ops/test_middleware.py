"""Request ids on routes outside the webhook fast path: echoed, generated when missing, on log lines."""

from __future__ import annotations

import io
import json
import logging

import structlog

from fsbridge.log import configure_logging
from tests.conftest import Bridge


async def test_request_id_is_echoed_and_on_the_request_log_line(bridge: Bridge) -> None:
    """A given X-Request-ID comes back in the response and on the line logged for the request."""
    out = io.StringIO()
    configure_logging("json", level=logging.DEBUG)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    response = await bridge.client.get("/healthz", headers={"X-Request-ID": "req-ops-42"})
    assert "req-ops-42" == response.headers["x-request-id"]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [("http.request", "/healthz", "req-ops-42")] == [
        (line["event"], line["path"], line.get("request_id")) for line in lines if line["event"] == "http.request"
    ]


async def test_request_id_is_generated_when_missing_and_cut_when_long(bridge: Bridge) -> None:
    """Without X-Request-ID each request gets its own id; an overlong one is cut to 128 characters."""
    first = (await bridge.client.get("/healthz")).headers["x-request-id"]
    second = (await bridge.client.get("/healthz")).headers["x-request-id"]
    assert first
    assert first != second
    long = (await bridge.client.get("/healthz", headers={"X-Request-ID": "r" * 300})).headers["x-request-id"]
    assert "r" * 128 == long
