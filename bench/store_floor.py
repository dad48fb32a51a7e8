"""`make bench-store`: what intake's durable write costs in SQLite alone, the floor under intake.

No HTTP, no event loop, no writer thread: one thread on core 0 runs intake's own statement
(`INBOX_INSERT`) on a file that fsbridge prepared, with fsbridge's connection settings (WAL,
`synchronous=FULL`), committing groups of writes as the group commit does. It prints the CPU time
per stored event and the WAL bytes per commit, medians of several runs, for the keys intake uses
(body hashes) beside arrival-order keys, other group sizes, and `synchronous=NORMAL` (which is not
durable against power loss, shown only to price the `fdatasync`). Bounded: a fixed count of rows
per run, in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fsbridge.sources.fullstory import body_dedup_key
from fsbridge.store.sql import INBOX_INSERT
from fsbridge.store.sqlite import SQLiteEngine

SERVER_CORE = 0
ENDPOINT = "fullstory_stream/bench"
# The body bench/intake.lua sends, made distinct per row as wrk makes it distinct per request.
BODY = (
    b'{"event":{"event_type":"rage-click","event_time":"2026-11-26T10:15:02.120Z",'
    b'"url":"https://shop.example.com/checkout","target_text":"floor-%d",'
    b'"element_name":"checkout-pay-button","page_name":"Checkout"},'
    b'"session":{"session_id":"5557778531805533:6915774531905556"},'
    b'"user":{"user_id":"u_1842","user_email":"Ada.Lovelace@Example.com ","user_display_name":"Ada Lovelace"},'
    b'"session_url":"https://app.fullstory.com/ui/o-1ABC/session/5557778531805533%%3A6915774531905556"}'
)


@dataclass(frozen=True)
class Variant:
    label: str
    group: int
    keys: str  # "hash": what intake stores; "arrival": strictly increasing, for comparison
    synchronous: str = "FULL"


VARIANTS = (
    Variant("body-hash keys, 16 writes a commit (intake at 32 connections)", 16, "hash"),
    Variant("body-hash keys, 32 writes a commit", 32, "hash"),
    Variant("body-hash keys, 8 writes a commit", 8, "hash"),
    Variant("arrival-order keys, 16 writes a commit", 16, "arrival"),
    Variant("body-hash keys, 16 a commit, synchronous=NORMAL (not durable on power loss)", 16, "hash", "NORMAL"),
)


@dataclass(frozen=True)
class Cost:
    user_us: float
    system_us: float
    wal_kib_per_commit: float

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.system_us


def run_once(variant: Variant, rows: int, workdir: Path) -> Cost:
    path = workdir / f"floor-{time.monotonic_ns()}.db"
    engine = SQLiteEngine(str(path))
    engine.prepare()
    conn = engine.connect()
    conn.execute(f"PRAGMA synchronous={variant.synchronous}")
    received_at = time.time()
    bodies = [BODY % n for n in range(rows)]
    keys = (
        [body_dedup_key(ENDPOINT, body) for body in bodies]
        if variant.keys == "hash"
        else [f"arrival:{n:016d}" for n in range(rows)]
    )
    params = [
        (f"evt_{time.time_ns():016x}{n:08x}", "fullstory_stream", "bench", key, "rage_click", body, received_at)
        for n, (key, body) in enumerate(zip(keys, bodies, strict=True))
    ]
    before = resource.getrusage(resource.RUSAGE_THREAD)
    for start in range(0, rows, variant.group):
        conn.execute("BEGIN IMMEDIATE")
        for row in params[start : start + variant.group]:
            conn.execute(INBOX_INSERT, row).fetchone()
        conn.execute("COMMIT")
    after = resource.getrusage(resource.RUSAGE_THREAD)
    commits = -(-rows // variant.group)
    wal_bytes = os.path.getsize(f"{path}-wal")
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return Cost(
        user_us=(after.ru_utime - before.ru_utime) / rows * 1e6,
        system_us=(after.ru_stime - before.ru_stime) / rows * 1e6,
        wal_kib_per_commit=wal_bytes / 1024 / commits,
    )


def median_cost(costs: list[Cost]) -> Cost:
    middle = sorted(costs, key=lambda cost: cost.cpu_us)[len(costs) // 2]
    return Cost(
        user_us=middle.user_us,
        system_us=middle.system_us,
        wal_kib_per_commit=statistics.median(cost.wal_kib_per_commit for cost in costs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows stored per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; the median is printed")
    args = parser.parse_args()
    os.sched_setaffinity(0, {SERVER_CORE})
    lines = [
        f"Intake's insert alone, {args.rows:,} rows a run, median of {args.runs} runs, one thread on core {SERVER_CORE}:",
        "",
        "| variant | CPU per stored event | of which kernel | WAL per commit |",
        "|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="fsbridge-floor-") as folder:
        for variant in VARIANTS:
            cost = median_cost([run_once(variant, args.rows, Path(folder)) for _ in range(args.runs)])
            lines.append(
                f"| {variant.label} | {cost.cpu_us:.1f} µs | {cost.system_us:.1f} µs | {cost.wal_kib_per_commit:.0f} KiB |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
