"""The enrichment row of `make bench`: `session_url_to_segment` end to end. Segment tracks
(`Ticket Created`) arrive at a steady rate; each needs the user's latest session from a fake
Fullstory that answers after 50 ms; what is measured is receipt-to-delivery (from the send to the
arrival of `Fullstory Session Linked` at the fake Segment) and look-ups per trigger, once with
2,000 distinct users and once with the same 200 users repeating (the look-up cache at work).

Run alone: `python bench/session_links.py` (needs nothing but this checkout's virtualenv)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import LOAD_CORE, PYTHON, fsbridge, paced_requests, pinned, post, segment_stats, uvicorn  # noqa: E402
from fsbridge.testing import free_port  # noqa: E402

SEGMENT_TOKEN = "bench-segment-token"
# Look-ups at 50 ms each, up to 200 a second: the fullstory destination's concurrency and rate limit
# are raised from their defaults (4 in flight, 20/s), which would cap look-ups at 20 a second.
CONFIG = "destinations:\n  fullstory: {concurrency: 16, rate_limit_per_second: 400, burst: 400}\n"


async def send_triggers(port: int, rate: int, seconds: float, users: int, connections: int = 16) -> dict[str, float]:
    """`rate` Segment tracks a second for `seconds`, cycling through `users` userIds; each one's
    send time is recorded under its messageId."""

    def trigger(n: int) -> tuple[str, bytes]:
        mark = f"lat-{n}"
        body = orjson.dumps({"type": "track", "event": "Ticket Created", "userId": f"user-{n % users}",
                             "messageId": mark, "properties": {"ticket_id": f"T-{n}"}})  # fmt: skip
        return mark, post("/webhooks/segment", f"Bearer {SEGMENT_TOKEN}", body)

    return await paced_requests(port, rate, seconds, trigger, connections)


def measure_session_links(segment_port: int, workdir: Path, rate: int, seconds: float, users: int) -> dict[str, float]:
    httpx.post(f"http://127.0.0.1:{segment_port}/reset")
    run_dir = workdir / f"session-links-{users}"
    (run_dir / "config").mkdir(parents=True)
    (run_dir / "config" / "fsbridge.yaml").write_text(CONFIG)
    server = fsbridge(run_dir, segment_port)
    server.env |= {
        "FSBRIDGE_SEGMENT_WEBHOOK_TOKENS": SEGMENT_TOKEN,
        "FSBRIDGE_FULLSTORY_API_KEY": "bench-key",
        "FSBRIDGE_FULLSTORY_API_URL": f"http://127.0.0.1:{segment_port}",
    }
    with server:
        argv = [PYTHON, str(Path(__file__).resolve()), "--send", str(server.port), str(rate), str(seconds), str(users)]
        load = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, check=True)
        sent: dict[str, float] = orjson.loads(load.stdout)
        achieved = sent.pop("achieved_rate", 0)
        deadline = time.monotonic() + 60
        stats = segment_stats(segment_port)
        while len(stats["arrivals"]) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
            stats = segment_stats(segment_port)
    arrivals = stats["arrivals"]
    latencies = sorted((arrivals[m] - t) * 1000 for m, t in sent.items() if m in arrivals)
    return {
        "achieved_rate": achieved,
        "triggers": len(sent),
        "linked": len(latencies),
        "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else float("nan"),
        "lookups_per_trigger": stats["lookups"] / max(1, len(sent)),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        port, rate, seconds, users = sys.argv[2:6]
        result = asyncio.run(send_triggers(int(port), int(rate), float(seconds), int(users)))
        sys.stdout.buffer.write(orjson.dumps(result))
        return
    workdir = Path(tempfile.mkdtemp(prefix="fsbridge-bench-links-"))
    try:
        with uvicorn("fake_segment", free_port(), LOAD_CORE) as segment:
            for distinct in (2000, 200):
                print(distinct, measure_session_links(segment.port, workdir, 200, 20, distinct), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
