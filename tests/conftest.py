"""Shared fixtures: settings with known secrets, a frozen clock, a real SQLite file, a scripted fake
Segment, and an fsbridge runtime with an HTTP client over ASGI (no network anywhere)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from pydantic import SecretStr

from fsbridge.app import create_app
from fsbridge.clock import FrozenClock
from fsbridge.config import FsbridgeConfig
from fsbridge.engine.retry import RetryPolicy
from fsbridge.flows import Flow, build_flows
from fsbridge.runtime import Runtime
from fsbridge.settings import Settings
from fsbridge.sources.signatures import sign_segment
from fsbridge.testing import FakeUpstream, bearer_headers, fullstory_signed_headers
from tests.fullstory_spec import validate_fullstory_requests
from tests.postgres_server import PostgresServer, throwaway_server

WEBHOOK_SECRET = "whsec-current-0123456789"
OLD_WEBHOOK_SECRET = "whsec-previous-9876543210"
STREAM_TOKEN = "stream-token-abcdefghijkl"
WRITE_KEY = "segment-write-key-xyz"
OPS_TOKEN = "ops-token-0123456789abcdef"
SEGMENT_URL = "https://segment.test"
FULLSTORY_URL = "https://fullstory.test"
FULLSTORY_KEY = "na1.fullstory-api-key"
SEGMENT_SECRET = "segment-shared-secret-1"
OLD_SEGMENT_SECRET = "segment-shared-secret-0"
SEGMENT_TOKEN = "segment-bearer-token-xyz"

RAGE_CLICK: dict[str, Any] = {
    "event": {
        "event_type": "rage-click",
        "event_time": "2026-11-26T10:15:02.120Z",
        "url": "https://shop.example.com/checkout",
        "target_text": "Pay now",
        "element_name": "checkout-pay-button",
        "page_name": "Checkout",
    },
    "session": {"session_id": "5557778531805533:6915774531905556"},
    "user": {
        "user_id": "u_1842",
        "user_email": "Ada.Lovelace@Example.com ",
        "user_display_name": "Ada Lovelace",
    },
    "session_url": "https://app.fullstory.com/ui/o-1ABC/session/5557778531805533%3A6915774531905556",
    "stream": {"name": "frustration"},
}


def flow_named(name: str, config: FsbridgeConfig | None = None) -> Flow:
    """One compiled flow of a configuration (the defaults when none is given)."""
    return next(flow for flow in build_flows(config or FsbridgeConfig()) if flow.name == name)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'fsbridge.db'}",
        "fullstory_webhook_secrets": (SecretStr(WEBHOOK_SECRET), SecretStr(OLD_WEBHOOK_SECRET)),
        "fullstory_stream_tokens": (SecretStr(STREAM_TOKEN),),
        "segment_write_key": SecretStr(WRITE_KEY),
        "segment_api_url": SEGMENT_URL,
        "fullstory_api_key": SecretStr(FULLSTORY_KEY),
        "fullstory_api_url": FULLSTORY_URL,
        "segment_webhook_secrets": (SecretStr(SEGMENT_SECRET), SecretStr(OLD_SEGMENT_SECRET)),
        "segment_webhook_tokens": (SecretStr(SEGMENT_TOKEN),),
        "ops_token": SecretStr(OPS_TOKEN),
        "retry_base_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Bridge:
    """A running fsbridge (workers not started: tests drive them with `drain`)."""

    runtime: Runtime
    client: httpx.AsyncClient
    upstream: FakeUpstream
    clock: FrozenClock

    async def post_stream(self, payload: Any, stream: str = "frustration", token: str = STREAM_TOKEN) -> httpx.Response:
        return await self.client.post(
            f"/webhooks/fullstory/streams/{stream}",
            content=orjson.dumps(payload),
            headers=bearer_headers(token),
        )

    async def post_system(self, payload: Any, secret: str = WEBHOOK_SECRET) -> httpx.Response:
        body = orjson.dumps(payload)
        headers = fullstory_signed_headers(body, secret, int(self.clock.now()))
        return await self.client.post("/webhooks/fullstory", content=body, headers=headers)

    async def post_segment(
        self, payload: Any, *, secret: str | None = SEGMENT_SECRET, token: str | None = None
    ) -> httpx.Response:
        """Post like Segment: signed with X-Signature (classic, Actions) or with a bearer token."""
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif secret is not None:
            headers["X-Signature"] = sign_segment(body, secret)
        return await self.client.post("/webhooks/segment", content=body, headers=headers)

    async def drain(self) -> None:
        await self.runtime.worker.drain()

    def ops_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {OPS_TOKEN}"}


AGGREGATION_FLOWS = ("experience_at_risk", "frustration_traits", "health_score", "nps_follow_up")


def without_aggregations(config: FsbridgeConfig) -> FsbridgeConfig:
    """The configuration with Part 2's per-user aggregation flows switched off: the tests of other
    behaviours count the messages a click produces, and these flows add identifies to them."""
    flows = config.flows.model_copy(
        update={name: getattr(config.flows, name).model_copy(update={"enabled": False}) for name in AGGREGATION_FLOWS}
    )
    return config.model_copy(update={"flows": flows})


async def start_bridge(
    tmp_path: Path,
    upstream: FakeUpstream | None = None,
    config: FsbridgeConfig | None = None,
    *,
    aggregations: bool = False,
    **settings_overrides: Any,
) -> Bridge:
    """A running fsbridge over a fresh store; the per-user aggregations run only with `aggregations`."""
    upstream = upstream or FakeUpstream()
    config = config or FsbridgeConfig()
    if not aggregations:
        config = without_aggregations(config)
    _upstreams.append(upstream)
    clock = FrozenClock()
    settings = make_settings(tmp_path, **settings_overrides)
    policy = RetryPolicy(
        base_seconds=settings.retry_base_seconds,
        max_seconds=settings.retry_max_seconds,
        horizon_seconds=settings.retry_horizon_seconds,
        jitter=0.0,
        rng=random.Random(0),
    )
    runtime = Runtime(settings, config, transport=upstream.transport(), clock=clock, policy=policy)
    await runtime.start(workers=False)
    app = create_app(runtime, manage_runtime=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    return Bridge(runtime, client, upstream, clock)


_upstreams: list[FakeUpstream] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session; the tests that need it are skipped without it."""
    with throwaway_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """A command that configured logging in one test does not leak into the next."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def every_fullstory_body_matches_the_spec() -> Iterator[None]:
    """After each test, every request a fake Fullstory received is checked against Fullstory's Swagger."""
    _upstreams.clear()
    yield
    for upstream in _upstreams:
        validate_fullstory_requests(upstream.requests)


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    b = await start_bridge(tmp_path)
    yield b
    await b.client.aclose()
    await b.runtime.stop()
