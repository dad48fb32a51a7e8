"""Fuzzing fsbridge's own OpenAPI with schemathesis: every webhook and ops operation, 25 generated
requests each (400 in all), with valid credentials so bodies reach validation. No 5xx may come
back except the documented 503, and every error is the contract's JSON body."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from fsbridge.app import create_app
from fsbridge.config import FsbridgeConfig
from fsbridge.runtime import Runtime
from fsbridge.testing import FakeUpstream
from tests.conftest import OPS_TOKEN, SEGMENT_TOKEN, STREAM_TOKEN, make_settings

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def operations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    runtime = Runtime(make_settings(tmp), FsbridgeConfig(), transport=FakeUpstream().transport())
    asyncio.run(runtime.store.open())
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(runtime, manage_runtime=False))
    results = list(schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), "fsbridge's own OpenAPI document must be valid"
    yield [r.ok() for r in results if isinstance(r, Ok)]
    asyncio.run(runtime.store.close())


def credentials(path: str) -> dict[str, str]:
    if path.startswith("/webhooks/segment"):
        return {"Authorization": f"Bearer {SEGMENT_TOKEN}"}
    if path.startswith("/webhooks/fullstory/streams"):
        return {"Authorization": f"Bearer {STREAM_TOKEN}"}
    return {"Authorization": f"Bearer {OPS_TOKEN}"}


def test_no_undocumented_server_errors(operations: list[Any]) -> None:
    """Whatever the generated request, fsbridge answers without a 5xx other than the documented 503."""
    assert len(operations) >= 15
    seen: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(headers=credentials(case.path))
            seen.append(response.status_code)
            assert response.status_code < 500 or response.status_code == 503, (case.method, case.path, response.text)
            if response.status_code >= 400 and case.path not in ("/metrics", "/ops"):  # /ops is a page for people
                assert "error" in response.json(), response.text

        check()
    print(f"\nfuzz: {len(seen)} requests, statuses {sorted(Counter(seen).items())}")
    assert len(seen) >= 200
