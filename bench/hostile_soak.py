"""`make soak-hostile`: memory and other users' latency while a sender posts hostile values.

One fsbridge (the shipped configuration, every aggregation flow on) on 127.0.0.1, pinned to one core,
with a fake Segment. Ordinary Streams clicks of 2,000 users arrive at a steady 200 a second the whole
time; their intake latency (request sent to 202 read) is measured before and during the hostile
phase. The hostile phase posts 1,000 clicks, each with a unique value of about 1 MiB in one of the
fields that reach a memo, a log line, a stored error or a user's state document: the event time,
the event type, the session id, the user id and the session URL, in turn. The server's RSS is read
before the hostile phase, after it (once the queue has drained) and at its peak. The loops are
bounded in count and time and talk only to 127.0.0.1.

    python bench/hostile_soak.py [--hostile 1000] [--rate 200] [--hostile-rate N]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.run import LOAD_CORE, OPS_TOKEN, TOKEN, fsbridge, post, uvicorn  # noqa: E402
from fsbridge.testing import free_port  # noqa: E402

HUGE = 1024 * 1024 - 4096  # five of them would not fit a 5 MiB body; one per click does
FIELDS = ("event_time", "event_type", "session_id", "user_id", "session_url")


def ordinary(n: int) -> bytes:
    return orjson.dumps(
        {"event": {"event_type": "rage-click", "event_time": "2026-11-26T10:15:02.120Z", "target_text": f"pay {n}"},
         "session": {"session_id": f"5557778531805533:{n % 5000}"}, "user": {"user_id": f"u_{n % 2000}"},
         "session_url": f"https://app.fullstory.com/ui/o/session/5557778531805533:{n % 5000}"}
    )  # fmt: skip


def hostile(n: int) -> bytes:
    value = f"{n:08d}" + "x" * HUGE  # unique per click
    click: dict[str, Any] = {"event": {"event_type": "rage-click", "event_time": "2026-11-26T10:15:02.120Z"},
             "session": {"session_id": f"hostile:{n}"}, "user": {"user_id": "u_hostile"},
             "session_url": "https://app.fullstory.com/ui/o/session/x"}  # fmt: skip
    field = FIELDS[n % len(FIELDS)]
    if field in ("event_time", "event_type"):
        click["event"][field] = value
    elif field == "session_id":
        click["session"]["session_id"] = value
    elif field == "user_id":
        click["user"]["user_id"] = value
    else:
        click["session_url"] = value
    return orjson.dumps(click)


async def timed_posts(
    port: int, rate: float, seconds: float, body_for: Callable[[int], bytes], offset: int = 0
) -> list[float]:
    """POST bodies at `rate` a second for `seconds` over 16 keep-alive connections; each latency in ms."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await queue.get()) is not None:
            _, request = item
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(16)]
    start = time.monotonic()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        body = body_for(n + offset)
        queue.put_nowait((time.monotonic(), post("/webhooks/fullstory/streams/soak", f"Bearer {TOKEN}", body)))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=600)
    return latencies


async def hostile_phase(port: int, count: int, rate: float | None) -> int:
    """Post the hostile clicks over one connection (as one careless sender would), as fast as they are
    answered or at `rate` a second; how many were answered other than 202."""
    refused = 0
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for n in range(count):
            if rate and (delay := start + n / rate - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            response = await client.post(
                "/webhooks/fullstory/streams/soak",
                content=hostile(n),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            refused += response.status_code != 202
    return refused


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    now = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    return now, peak


def undispatched(port: int) -> float:
    stats = httpx.get(f"http://127.0.0.1:{port}/ops/api/stats", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
    return float(stats.json()["undispatched"]["events"])


async def soak(port: int, pid: int, count: int, rate: float, hostile_rate: float | None) -> dict[str, float]:
    await timed_posts(port, rate, 5, ordinary)  # warm-up: the users' states exist
    before = await timed_posts(port, rate, 10, ordinary, offset=1000)
    rss_before, _ = rss_mb(pid)
    started = time.monotonic()
    hostile_task = asyncio.create_task(hostile_phase(port, count, hostile_rate))
    during: list[float] = []
    n = 10_000
    while not hostile_task.done() and time.monotonic() - started < 900:
        during += await timed_posts(port, rate, 5, ordinary, offset=n)
        n += int(rate * 5)
    refused = await hostile_task
    hostile_seconds = time.monotonic() - started
    deadline = time.monotonic() + 300
    while undispatched(port) > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another process
        await asyncio.sleep(1)
    rss_after, rss_peak = rss_mb(pid)
    return {
        "p50_before_ms": statistics.median(before),
        "p50_during_ms": statistics.median(during),
        "p99_before_ms": statistics.quantiles(before, n=100)[98],
        "p99_during_ms": statistics.quantiles(during, n=100)[98],
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_peak_mb": rss_peak,
        "hostile_seconds": hostile_seconds,
        "hostile_refused": refused,
        "ordinary_during": len(during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hostile", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--hostile-rate", type=float, default=None, help="hostile clicks a second (default: no pause)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fsbridge-soak-"))
    try:
        shutil.copytree(ROOT / "config", workdir / "config")
        with uvicorn("fake_segment", free_port(), LOAD_CORE) as segment, fsbridge(workdir, segment.port) as server:
            assert server.handle is not None
            result = asyncio.run(soak(server.port, server.handle.pid, args.hostile, args.rate, args.hostile_rate))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    growth = result["rss_after_mb"] - result["rss_before_mb"]
    print(
        f"| hostile values: {args.hostile:,} clicks with a unique ~1 MiB {', '.join(FIELDS)} (in turn), "
        f"{result['hostile_seconds']:.0f} s; {result['hostile_refused']:.0f} refused (413/422) |"
    )
    print(
        f"| RSS before / after / peak | {result['rss_before_mb']:.1f} / {result['rss_after_mb']:.1f} / "
        f"{result['rss_peak_mb']:.1f} MiB (growth {growth:+.1f} MiB; target < 50) |"
    )
    print(
        f"| other users' intake p50 before / during | {result['p50_before_ms']:.2f} / {result['p50_during_ms']:.2f} ms "
        f"({result['p50_during_ms'] / result['p50_before_ms']:.2f}x; target within 2x) |"
    )
    print(
        f"| other users' intake p99 before / during | {result['p99_before_ms']:.2f} / {result['p99_during_ms']:.2f} ms |"
    )


if __name__ == "__main__":
    main()
