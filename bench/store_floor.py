"""`make bench-store`: what intake's durable write costs in SQLite alone, the floor under intake.

The first table has no HTTP, no event loop and no writer thread. One thread on core 0 runs intake's
own statement (`INBOX_INSERT`) on a file that fsbridge prepared, with fsbridge's connection settings
(WAL, `synchronous=FULL`), committing groups of writes as the group commit does. It prints the CPU
time per stored event and the WAL bytes per commit, medians of several runs, for the keys intake
uses (body hashes) beside arrival-order keys, other group sizes, and `synchronous=NORMAL` (not
durable against power loss, shown only to price the `fdatasync`).

The second table prices the other half, the group commit's hand-over with nothing to write: 32 tasks
on uvloop await empty writes through `SQLiteStore`'s writer thread.

Bounded: a fixed count of rows and writes, in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fsbridge.sources.fullstory import body_dedup_key
from fsbridge.store.engine import Connection
from fsbridge.store.intake import INBOX_INSERT
from fsbridge.store.sqlite import SQLiteEngine, SQLiteStore

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


@dataclass(frozen=True)
class Handoff:
    loop_us: float  # the event loop's thread, per write
    writer_us: float  # every other thread (the writer, mostly), per write
    group: float


def _nothing(conn: Connection) -> None:
    return None


async def _handoffs(writes: int, concurrency: int, folder: Path) -> Handoff:
    store = SQLiteStore(str(folder / f"handoff-{time.monotonic_ns()}.db"))
    await store.open()
    done = 0

    async def writer() -> None:
        nonlocal done
        while done < writes:
            # An empty transaction changes no page, so SQLite neither writes the WAL nor syncs it.
            await store._write(_nothing)  # the private hand-over, because it alone is measured
            done += 1

    loop_before = resource.getrusage(resource.RUSAGE_THREAD)
    process_before = resource.getrusage(resource.RUSAGE_SELF)
    commits_before, writes_before = store.transactions, store.writes
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    loop_after = resource.getrusage(resource.RUSAGE_THREAD)
    process_after = resource.getrusage(resource.RUSAGE_SELF)
    group = (store.writes - writes_before) / max(1, store.transactions - commits_before)
    await store.close()

    def cpu(before: resource.struct_rusage, after: resource.struct_rusage) -> float:
        return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

    loop_cpu = cpu(loop_before, loop_after)
    return Handoff(
        loop_us=loop_cpu / done * 1e6,
        writer_us=(cpu(process_before, process_after) - loop_cpu) / done * 1e6,
        group=group,
    )


def handoff_cost(writes: int, folder: Path, concurrency: int = 32) -> Handoff:
    """The group commit's hand-over to the writer thread and back, on uvloop as `fsbridge serve` runs."""
    import uvloop

    return uvloop.run(_handoffs(writes, concurrency, folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows stored per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant; the median is printed")
    parser.add_argument("--writes", type=int, default=40_000, help="empty writes handed over per run")
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
        handoffs = sorted(
            (handoff_cost(args.writes, Path(folder)) for _ in range(args.runs)),
            key=lambda handoff: handoff.loop_us + handoff.writer_us,
        )
    handoff = handoffs[len(handoffs) // 2]
    lines += [
        "",
        f"The group commit's hand-over alone: 32 tasks, {args.writes:,} empty writes a run, median of {args.runs} runs:",
        "",
        "| event loop's thread | writer thread | writes a commit |",
        "|---:|---:|---:|",
        f"| {handoff.loop_us:.1f} µs a write | {handoff.writer_us:.1f} µs a write | {handoff.group:.1f} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
