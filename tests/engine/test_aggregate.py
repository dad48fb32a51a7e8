"""The aggregate stage: events counted per key (and window) in the dispatch transaction, one
message when a key reaches the threshold, never twice: not on a fourth event, a redelivered
webhook, a transaction that did not commit, or with two workers sharing a PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from fsbridge.config import FsbridgeConfig, parse_config
from fsbridge.store import aggregates
from tests.conftest import RAGE_CLICK, Bridge, start_bridge

FLOW = "rage_clicks_at_risk"
CONFIG = """
flows:
  frustration_to_segment_track: {enabled: false}
  rage_clicks_at_risk:
    trigger: {source: fullstory_stream, kinds: [rage_click]}
    aggregate: {key: {template: "{user.user_id}|{session.session_id}"}, threshold: 3%s}
    target: segment.track
    mapping:
      event: Experience At Risk
      userId: {path: user.user_id}
      properties: {session_id: {path: session.session_id}, source: fullstory}
"""


def config(window: str = "") -> FsbridgeConfig:
    return parse_config(CONFIG % (f", window: {window}" if window else ""))


def click(n: int, session: str = "s1", user: str = "u1") -> dict[str, Any]:
    payload = copy.deepcopy(RAGE_CLICK)
    payload["event"]["target_text"] = f"b{n}"
    payload["session"]["session_id"] = session
    payload["user"]["user_id"] = user
    return payload


def tracks(bridge: Bridge) -> list[dict[str, Any]]:
    return [m for r in bridge.upstream.requests if r.url.path == "/v1/batch" for m in orjson.loads(r.content)["batch"]]


@pytest.fixture
async def agg(tmp_path: Path) -> Any:
    b = await start_bridge(tmp_path, config=config())
    yield b
    await b.client.aclose()
    await b.runtime.stop()


async def test_three_clicks_in_a_session_send_one_message_and_a_fourth_none(agg: Bridge) -> None:
    """3 rage clicks in one session: one message; a 4th in the same session: none; two sessions of 2: none."""
    for n in range(3):
        await agg.post_stream(click(n))
    await agg.drain()
    assert ["Experience At Risk"] == [m["event"] for m in tracks(agg)]
    fourth = (await agg.post_stream(click(3))).json()["id"]
    for n in range(2):
        await agg.post_stream(click(10 + n, session="s2"))
        await agg.post_stream(click(20 + n, session="s3"))
    await agg.drain()
    assert 1 == len(tracks(agg))
    story = await agg.runtime.store.event_story(fourth)
    assert story is not None
    assert ["aggregate: 4 of 3, already reached the threshold"] == [f.reason for f in story.filtered]


async def test_a_redelivered_webhook_is_not_counted(agg: Bridge) -> None:
    """The same click redelivered is a duplicate at intake, so two clicks and a redelivery send nothing."""
    await agg.post_stream(click(1))
    await agg.post_stream(click(2))
    assert (await agg.post_stream(click(2))).json()["duplicate"]
    await agg.drain()
    assert [] == tracks(agg)
    await agg.post_stream(click(3))
    await agg.drain()
    assert 1 == len(tracks(agg))


async def test_a_transaction_that_does_not_commit_counts_nothing(agg: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    """The count and the message are one transaction: when it fails after counting (as a kill between
    statements would), the count is undone, and the event routed again later crosses once."""
    count = aggregates.count
    failing = {"on": True}

    def count_then_fail(conn: Any, flow: str, step: Any, at: float) -> int:
        reached = count(conn, flow, step, at)
        if failing["on"] and reached == 3:
            raise RuntimeError("killed between statements")
        return reached

    monkeypatch.setattr(aggregates, "count", count_then_fail)
    for n in range(3):
        await agg.post_stream(click(n))
    await agg.drain()
    assert [] == tracks(agg)
    assert 1 == (await agg.runtime.store.undispatched()).events
    failing["on"] = False
    agg.clock.advance(agg.runtime.config.worker.dispatch_retry_seconds + 1)
    await agg.drain()
    assert 1 == len(tracks(agg))
    assert 0 == (await agg.runtime.store.undispatched()).events


async def test_each_window_crosses_once(tmp_path: Path) -> None:
    """With a 10 s window, three clicks in each of two windows send two messages with distinct ids."""
    b = await start_bridge(tmp_path, config=config(window="10s"))
    try:
        for window in range(2):
            for n in range(3):
                await b.post_stream(click(window * 10 + n))
            b.clock.advance(10)
            await b.drain()
        sent = tracks(b)
        assert 2 == len(sent)
        assert sent[0]["messageId"] != sent[1]["messageId"]
    finally:
        await b.client.aclose()
        await b.runtime.stop()


async def test_two_workers_on_postgresql_cross_once(tmp_path: Path, postgres_url: str) -> None:
    """Two processes' workers over one PostgreSQL dispatch 30 clicks of one session one at a time,
    concurrently: the threshold is crossed once, so exactly one message is queued."""
    text = CONFIG % "" + "worker: {dispatch_batch: 1}\n"
    a = await start_bridge(tmp_path / "a", config=parse_config(text), database_url=postgres_url)
    b = await start_bridge(tmp_path / "b", config=parse_config(text), database_url=postgres_url)
    try:
        for n in range(30):
            await a.post_stream(click(n))
        for _ in range(40):
            moved = await asyncio.gather(a.runtime.worker.dispatch_once(), b.runtime.worker.dispatch_once())
            if sum(moved) == 0:
                break
        deliveries = await a.runtime.store.list_deliveries(None, FLOW, 100)
        assert 1 == len(deliveries)
        stats = (await a.runtime.store.stats())["by_flow"][FLOW]
        assert 29 == stats["filtered"]
    finally:
        for bridge in (a, b):
            await bridge.client.aclose()
            await bridge.runtime.stop()


async def test_a_count_expires_and_retention_forgets_it(tmp_path: Path) -> None:
    """A key's count is forgotten `keep_for` after its last event: two clicks, a quiet minute and
    retention, then two more clicks send nothing; a third does."""
    text = CONFIG % ", keep_for: 60s"
    b = await start_bridge(tmp_path, config=parse_config(text))
    try:
        for n in range(2):
            await b.post_stream(click(n))
        await b.drain()
        b.clock.advance(61)
        counts = (await b.runtime.scheduler.run_now("retention")).counts or {}
        assert 1 == counts["aggregate_state"]
        for n in range(2, 4):
            await b.post_stream(click(n))
        await b.drain()
        assert [] == tracks(b)
        await b.post_stream(click(4))
        await b.drain()
        assert 1 == len(tracks(b))
    finally:
        await b.client.aclose()
        await b.runtime.stop()
