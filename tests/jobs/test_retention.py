"""Retention (Part 2): finished work is pruned after its period, pending, parked and dry-run work
and identity links never are, and under a steady load the store's file stops growing once the
retention period has passed (time compressed through the configuration)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from fsbridge.config import FsbridgeConfig, JobsConfig, RetentionConfig
from fsbridge.testing import FakeUpstream
from tests.conftest import RAGE_CLICK, Bridge, start_bridge

MINUTE = 60.0


def click(n: int) -> dict[str, Any]:
    return {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"b{n}"}}


def short_retention() -> FsbridgeConfig:
    periods = RetentionConfig(inbox=MINUTE, delivered=MINUTE, dead=2 * MINUTE, filtered=MINUTE)
    return FsbridgeConfig(retention=periods, jobs=JobsConfig.model_validate({"retention": {"every": "10s"}}))


async def run_retention(bridge: Bridge) -> dict[str, Any]:
    result = await bridge.runtime.scheduler.run_now("retention")
    assert "ok" == result.outcome
    return result.counts or {}


async def test_finished_work_is_pruned_and_live_work_is_kept(tmp_path: Path) -> None:
    """Delivered and dead deliveries, their attempts, filter records and finished raw events go after
    their periods; a pending delivery, its event and the identity links stay."""
    upstream = FakeUpstream()
    bridge = await start_bridge(tmp_path, upstream, config=short_retention())
    try:
        store = bridge.runtime.store
        upstream.script_next([400])
        await bridge.post_stream(click(2))  # dead
        await bridge.drain()
        await bridge.post_stream(click(1))  # delivered
        await bridge.post_stream({**click(3), "event": {**click(3)["event"], "event_type": "page-view"}})  # filtered
        await bridge.post_segment({"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"email": "a@b.c"}})
        await bridge.drain()
        bridge.runtime.worker.paused.add("segment")
        pending_id = (await bridge.post_stream(click(4))).json()["id"]  # stays pending
        await bridge.drain()
        nothing = {"inbox": 0, "delivered": 0, "dead": 0, "filtered": 0, "aggregate_state": 0, "lookup_cache": 0,
                   "user_state": 0, "tombstones": 0}  # fmt: skip
        assert nothing == await run_retention(bridge)

        bridge.clock.advance(MINUTE + 1)
        counts = await run_retention(bridge)
        assert (2, 0, 1) == (counts["delivered"], counts["dead"], counts["filtered"])  # the click and the identify
        bridge.clock.advance(MINUTE)
        counts = await run_retention(bridge)
        assert 1 == counts["dead"]
        left = await store.list_deliveries(None, None, 10)
        assert ["pending"] == [d.status for d in left]
        assert await store.get_inbox_event(pending_id) is not None
        assert 1 == len(await store.list_inbox(0, 100))
        assert (await store.stats())["identity"]["links"] > 0
        with sqlite3.connect(tmp_path / "fsbridge.db") as conn:
            assert 0 == conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    finally:
        await bridge.client.aclose()
        await bridge.runtime.stop()


async def test_the_store_stays_flat_under_a_steady_load(tmp_path: Path) -> None:
    """200 clicks every 10 s (frozen clock) for 40 rounds, retention at one minute: once the period
    has passed, the database file does not grow."""
    bridge = await start_bridge(tmp_path, config=short_retention())
    db = tmp_path / "fsbridge.db"
    sizes = []
    try:
        for round_ in range(40):
            for n in range(200):
                await bridge.post_stream(click(round_ * 1000 + n))
            await bridge.drain()
            await run_retention(bridge)
            bridge.clock.advance(10)
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            sizes.append(db.stat().st_size)
        print(f"\nretention soak: database file sizes by round {sizes}")
        settled = sizes[15]
        assert max(sizes[15:]) <= settled * 1.05, sizes
        assert sizes[15] < sizes[39] * 2  # and it did grow before the period had passed
        assert len(await bridge.runtime.store.list_inbox(0, 100_000)) <= 8 * 200
    finally:
        await bridge.client.aclose()
        await bridge.runtime.stop()
