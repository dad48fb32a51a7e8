"""The aggregations rows of `make bench`: the frustration pipeline with the five aggregation flows
enabled (the shipped configuration, and `feature_adoption` counting the clicks) against the same
run with them disabled. End to end: rage, dead and error clicks of many users posted by 32 wrk
connections to the whole service (`--role all`, one core) until everything they sent has reached
the fake Segment. The drain alone: the same clicks stored beforehand, drained by one worker. And a
soak: 1,000,000 clicks over 100,000 users, with the worker's RSS at the start and its peak.

Run alone: `python bench/aggregations.py [CLICKS] [USERS] [off,on,...] [drain|end-to-end]`."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import LOAD_CORE, OPS_TOKEN, InboxRow, fsbridge, preload, segment_stats, uvicorn, wrk  # noqa: E402
from fsbridge.testing import free_port  # noqa: E402

KINDS = (("rage_click", "rage-click"), ("dead_click", "dead-click"), ("error_click", "error-click"))
OFF = "".join(f"  {name}: {{enabled: false}}\n" for name in
              ("experience_at_risk", "frustration_traits", "health_score", "nps_follow_up"))  # fmt: skip
# The fifth flow, off in the shipped configuration since it needs features: the bench's clicks.
FEATURE_ADOPTION = (
    "  feature_adoption: {enabled: true, features: {checkout: {source: fullstory_stream, stream: bench}}}\n"
)


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
    """Stored events not routed yet, from `/metrics` (an index count) rather than `/ops/api/stats`
    (table scans), so polling twice a second adds as little as it can to the measured core. Three
    alternating pairs against polling the stats showed no difference."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"},
                     timeout=10).text  # fmt: skip
    for family in text_string_to_metric_families(text):
        if family.name == "fsbridge_inbox_undispatched":
            return int(family.samples[0].value)
    raise LookupError("/metrics has no fsbridge_inbox_undispatched")


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


def configured(workdir: Path, *, aggregations: bool) -> Path:
    """A run directory with the shipped configuration, the five aggregation flows on or off."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"agg-{'on' if aggregations else 'off'}-", dir=workdir))
    shutil.copytree(ROOT / "config", run_dir / "config")
    path = run_dir / "config" / "fsbridge.yaml"
    path.write_text(path.read_text().rstrip("\n") + "\n" + (FEATURE_ADOPTION if aggregations else OFF))
    return run_dir


def measure_end_to_end(
    workdir: Path, segment_port: int, seconds: float, users: int, *, aggregations: bool, warmup: float = 5
) -> dict[str, float]:
    """32 wrk connections of clicks of `users` users for `seconds`, then until everything is
    dispatched and nothing more arrives at Segment: the clicks fsbridge accepted over the time from
    the first request to the last message Segment received. A warm-up of `warmup` seconds, drained
    first, gives most users their state and first identifies, as a service that has run a while has."""
    run_dir = configured(workdir, aggregations=aggregations)
    env = {"BENCH_USERS": str(users)}
    with fsbridge(run_dir, segment_port, role="all") as server:
        wrk(server.port, warmup, script="clicks_of_many_users.lua", env=env)
        drained(server.port, segment_port)
        httpx.post(f"http://127.0.0.1:{segment_port}/reset")
        cpu_before, start = server.cpu_seconds_by_thread(), time.time()
        load = wrk(server.port, seconds, script="clicks_of_many_users.lua", env=env)
        drained(server.port, segment_port)
        stats, cpu_after = segment_stats(segment_port), server.cpu_seconds_by_thread()
    accepted = load["requests"] - load["non_2xx"]
    seconds_taken = (stats["last"] or time.time()) - start
    # CPU per click by thread (the drain's last half second idle included, which costs nothing).
    cpu = {name: (cpu_after[name] - cpu_before[name]) / accepted * 1e6 for name in cpu_after}
    return {"clicks_per_s": accepted / seconds_taken, "accepted": accepted, "seconds": seconds_taken,
            "intake_rps": load["rps"], "messages": stats["messages"], "requests": stats["requests"],
            "cpu_us_per_click": {name: round(us, 1) for name, us in cpu.items()}}  # fmt: skip


def measure(workdir: Path, segment_port: int, count: int, users: int, *, aggregations: bool) -> dict[str, float]:
    httpx.post(f"http://127.0.0.1:{segment_port}/reset")
    run_dir = configured(workdir, aggregations=aggregations)
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
            end_to_end = len(sys.argv) > 4 and sys.argv[4] == "end-to-end"
            for aggregations in (variant == "on" for variant in variants):
                if end_to_end:  # CLICKS is then the seconds of load
                    result = measure_end_to_end(workdir, segment.port, count, users, aggregations=aggregations)
                else:
                    result = measure(workdir, segment.port, count, users, aggregations=aggregations)
                print("on " if aggregations else "off", result, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
