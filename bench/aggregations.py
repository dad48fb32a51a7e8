"""The aggregations row of `make bench`: the frustration pipeline end to end (stored rage, dead
and error clicks of many users, drained by one worker into a fake Segment) with the per-user
aggregation flows enabled (the shipped configuration) against the same run with them disabled,
and a soak: 1,000,000 clicks over 100,000 users, with the worker's RSS at the start and its peak.

Run alone: `python bench/aggregations.py [CLICKS] [USERS] [off,on,...]`."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import LOAD_CORE, OPS_TOKEN, InboxRow, fsbridge, preload, segment_stats, uvicorn  # noqa: E402
from fsbridge.testing import free_port  # noqa: E402

KINDS = (("rage_click", "rage-click"), ("dead_click", "dead-click"), ("error_click", "error-click"))
OFF = "".join(f"  {name}: {{enabled: false}}\n" for name in
              ("experience_at_risk", "frustration_traits", "health_score", "nps_follow_up"))  # fmt: skip


def clicks(count: int, users: int) -> Iterator[InboxRow]:
    """Frustration clicks of `users` users, three sessions each, in arrival order (a second apart per user)."""
    now = time.time() - count / users
    for n in range(count):
        user, round_ = n % users, n // users
        kind, spelling = KINDS[n % 3]
        body = (b'{"event":{"event_type":"%s","target_text":"%d"},"session":{"session_id":"1:%d-%d"},'
                b'"user":{"user_id":"user-%d"}}') % (spelling.encode(), n, user, round_ // 4, user)  # fmt: skip
        yield f"evt_agg{n:012d}", "fullstory_stream", "bench", f"agg-{n}", kind, body, now + round_


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def undispatched(port: int) -> int:
    stats = httpx.get(f"http://127.0.0.1:{port}/ops/api/stats", headers={"Authorization": f"Bearer {OPS_TOKEN}"},
                      timeout=10).json()  # fmt: skip
    return int(stats["undispatched"]["events"])


def drained(port: int, segment_port: int) -> None:
    """Every stored click dispatched, and nothing more arriving at Segment for a second (coalesced
    identifies due after min_interval are not waited for)."""
    deadline = time.monotonic() + 1800
    last = -1
    while time.monotonic() < deadline:
        time.sleep(0.5)
        messages = segment_stats(segment_port)["messages"]
        if messages == last and undispatched(port) == 0:
            return
        last = messages


def measure(workdir: Path, segment_port: int, count: int, users: int, *, aggregations: bool) -> dict[str, float]:
    httpx.post(f"http://127.0.0.1:{segment_port}/reset")
    run_dir = Path(tempfile.mkdtemp(prefix=f"agg-{'on' if aggregations else 'off'}-", dir=workdir))
    shutil.copytree(ROOT / "config", run_dir / "config")
    if not aggregations:
        path = run_dir / "config" / "fsbridge.yaml"
        path.write_text(path.read_text().rstrip("\n") + "\n" + OFF)
    preload(run_dir / "fsbridge.db", clicks(count, users))
    with fsbridge(run_dir, segment_port, role="worker") as server:
        assert server.handle is not None
        ready = time.time()
        start_rss = rss_mb(server.handle.pid)
        drained(server.port, segment_port)
        peak_rss = rss_mb(server.handle.pid, "VmHWM")
        stats = segment_stats(segment_port)
    seconds = (stats["last"] or time.time()) - ready
    return {"clicks_per_s": count / seconds, "seconds": seconds, "messages": stats["messages"],
            "start_rss_mb": start_rss, "peak_rss_mb": peak_rss}  # fmt: skip


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    users = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    workdir = Path(tempfile.mkdtemp(prefix="fsbridge-bench-agg-"))
    try:
        with uvicorn("fake_segment", free_port(), LOAD_CORE) as segment:
            variants = sys.argv[3].split(",") if len(sys.argv) > 3 else ["off", "on", "off", "on"]
            for aggregations in (variant == "on" for variant in variants):
                print("on " if aggregations else "off", measure(workdir, segment.port, count, users,
                                                               aggregations=aggregations), flush=True)  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
