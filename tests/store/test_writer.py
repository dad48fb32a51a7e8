"""The store's single writer: writes queued together commit together, and a large write (an inbound
body over 64 KiB) is committed on its own after the small writes queued with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from fsbridge.store.engine import Connection
from fsbridge.store.sqlite import SQLiteEngine
from fsbridge.store.writer import GroupCommitWriter


async def test_small_writes_queued_with_large_ones_commit_first(tmp_path: Path) -> None:
    """Behind a running write, a large write then two small ones: the small ones commit first, together,
    and the large one after, alone."""
    engine = SQLiteEngine(str(tmp_path / "w.db"))
    engine.prepare()
    writer = GroupCommitWriter(engine)
    writer.start()
    release, taken = threading.Event(), threading.Event()
    order: list[tuple[str, int]] = []

    def write(name: str) -> Callable[[Connection], None]:
        def fn(conn: Connection) -> None:
            order.append((name, writer.transactions))

        return fn

    def blocker(conn: Connection) -> None:
        taken.set()
        release.wait(5)
        order.append(("blocker", writer.transactions))

    try:
        running = writer.submit(blocker)
        assert await asyncio.to_thread(taken.wait, 5)  # the writer runs the blocker: what follows queues
        large = writer.submit(write("large"), large=True)
        small = [writer.submit(write(f"small-{n}")) for n in range(2)]
        release.set()
        await asyncio.gather(running, large, *small)
    finally:
        writer.stop()
    assert ["blocker", "small-0", "small-1", "large"] == [name for name, _ in order]
    transactions = dict(order)
    assert transactions["small-0"] == transactions["small-1"] < transactions["large"]
