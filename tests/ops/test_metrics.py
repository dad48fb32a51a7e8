"""/metrics: Prometheus text that prometheus-client's own parser reads, with every family of the issue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RAGE_CLICK, Bridge


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_exposition(bridge: Bridge) -> None:
    """Counters, histograms and gauges appear with fsbridge_ names and the values of what happened."""
    bridge.upstream.script_next([500])
    await bridge.post_stream(RAGE_CLICK)
    await bridge.post_stream(RAGE_CLICK)
    await bridge.post_stream({"no": "type"})
    await bridge.post_stream({"event": {"event_type": "page view"}})
    await bridge.drain()
    response = await bridge.client.get("/metrics", headers=bridge.ops_headers())
    assert 200 == response.status_code
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    src = (("source", "fullstory_stream"),)
    assert 4 == values[("fsbridge_events_received_total", src)]
    assert 1 == values[("fsbridge_events_duplicate_total", src)]
    assert 1 == values[("fsbridge_events_quarantined_total", src)]
    assert (
        1
        == values[
            (
                "fsbridge_events_filtered_total",
                (("flow", "frustration_to_segment_track"), ("reason", "is_frustration_signal")),
            )
        ]
    )
    assert 1 == values[("fsbridge_delivery_outcomes_total", (("destination", "segment"), ("outcome", "retry")))]
    assert 1 == values[("fsbridge_attempt_duration_seconds_count", (("destination", "segment"),))]
    assert 1 == values[("fsbridge_queue_depth", (("destination", "segment"), ("status", "retrying")))]
    assert 0 == values[("fsbridge_breaker_state", (("destination", "segment"),))]
    assert 50 == values[("fsbridge_rate_limit_per_second", (("destination", "segment"),))]
    names = {name for name, _ in values}
    assert "fsbridge_build_info" in names
    assert all(name.startswith("fsbridge_") for name in names if not name.startswith("python_"))

    bridge.clock.advance(1)
    await bridge.drain()
    values = samples((await bridge.client.get("/metrics", headers=bridge.ops_headers())).text)
    assert 1 == values[("fsbridge_delivery_outcomes_total", (("destination", "segment"), ("outcome", "delivered")))]
    assert 1 == values[("fsbridge_receipt_to_delivery_seconds_count", (("destination", "segment"),))]
    assert 0 == values[("fsbridge_queue_depth", (("destination", "segment"), ("status", "retrying")))]


async def test_metrics_need_the_ops_token(bridge: Bridge) -> None:
    """/metrics answers 401 with the JSON error body without the token."""
    response = await bridge.client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert 401 == response.status_code
    assert "unauthenticated" == response.json()["error"]["code"]


async def test_concurrent_accepts_share_commits_and_the_metrics_say_so(bridge: Bridge) -> None:
    """fsbridge_store_writes_total and fsbridge_store_commits_total count group commit: 32 events posted
    together are 32 more writes in fewer commits."""

    async def counts() -> tuple[float, float]:
        values = samples((await bridge.client.get("/metrics", headers=bridge.ops_headers())).text)
        return values[("fsbridge_store_commits_total", ())], values[("fsbridge_store_writes_total", ())]

    commits, writes = await counts()
    responses = await asyncio.gather(
        *(bridge.post_stream({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "n": n}}) for n in range(32))
    )
    assert [202] * 32 == [r.status_code for r in responses]
    commits_after, writes_after = await counts()
    assert 32 == writes_after - writes
    assert 1 <= commits_after - commits < 32


async def test_a_scrape_reads_no_table_wide_counts(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics reads gauges from indexed and counter reads, never the table scans of /ops/api/stats."""
    await bridge.post_stream(RAGE_CLICK)
    await bridge.drain()

    async def refuse() -> dict[str, Any]:
        raise AssertionError("a scrape read the full stats")

    monkeypatch.setattr(bridge.runtime.store, "stats", refuse)
    response = await bridge.client.get("/metrics", headers=bridge.ops_headers())
    assert 200 == response.status_code
    assert "fsbridge_queue_depth" in response.text
