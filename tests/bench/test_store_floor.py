"""The store-floor benchmark runs intake's own statement on a file fsbridge prepared."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import store_floor


def test_run_once_stores_every_row_and_reports_its_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stores each distinct body once, in commits of the group size, and prices it per row."""
    kept: list[Path] = []
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: kept.append(self))
    cost = store_floor.run_once(store_floor.VARIANTS[0], 48, tmp_path)
    database = next(path for path in kept if path.suffix == ".db")
    with sqlite3.connect(database) as conn:
        stored = conn.execute("SELECT count(*), count(DISTINCT dedup_key) FROM inbox").fetchone()
    assert stored == (48, 48)
    assert cost.cpu_us > 0
    assert cost.wal_kib_per_commit > 4  # at least one page written per commit of 16


def test_arrival_keys_write_fewer_wal_pages_than_body_hashes(tmp_path: Path) -> None:
    """Body-hash keys land on scattered index pages; arrival-order keys append to one."""
    hashed = store_floor.run_once(store_floor.Variant("hash", 16, "hash"), 3_000, tmp_path)
    arrival = store_floor.run_once(store_floor.Variant("arrival", 16, "arrival"), 3_000, tmp_path)
    assert arrival.wal_kib_per_commit < hashed.wal_kib_per_commit


def test_handoff_cost_counts_every_write_through_the_writer_thread(tmp_path: Path) -> None:
    """Empty writes go through the real group commit, in groups, and are priced per write."""
    handoff = store_floor.handoff_cost(400, tmp_path, concurrency=8)
    assert 1 <= handoff.group <= 8
    assert handoff.loop_us > 0
