"""The scheduled-jobs row of `make bench`: `jobs.fullstory_segment_audiences` over an export of
1,000,000 individuals from a fake Fullstory (a gzip NDJSON file streamed in 64 KiB chunks). It
prints the rows processed a second (from the start of the download to the job's end: reading,
staging and applying the diff into the inbox), the peak RSS the run added to the fsbridge worker,
and how many identify calls reached the fake Segment and when.

Run alone: `python bench/segment_export.py [ROWS]`."""

from __future__ import annotations

import gzip
import os
import re
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

from bench.run import LOAD_CORE, OPS_TOKEN, PYTHON, SERVER_CORE, fsbridge, pinned, segment_stats, uvicorn  # noqa: E402
from fsbridge.testing import free_port  # noqa: E402

CONFIG = """jobs:
  fullstory_segment_audiences:
    enabled: true
    every: 1h
    poll_every: 1s
    send_tracks: false
    segments: [{id: everyone, key: bench_members}]
"""


def write_export(path: Path, rows: int) -> None:
    with gzip.open(path, "wb", compresslevel=1) as file:
        for start in range(0, rows, 10_000):
            file.write(b"".join(
                orjson.dumps({"IndvId": n, "Uid": f"user-{n}", "Email": f"user-{n}@example.com", "NumSessions": 3})
                + b"\n" for n in range(start, min(rows, start + 10_000))
            ))  # fmt: skip


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def job_state(port: int) -> dict[str, object]:
    items = httpx.get(f"http://127.0.0.1:{port}/ops/api/jobs", headers={"Authorization": f"Bearer {OPS_TOKEN}"},
                      timeout=10).json()["items"]  # fmt: skip
    return next(i for i in items if i["name"] == "fullstory_segment_audiences")


def job_alone(workdir: Path, fake_port: int, name: str) -> tuple[float, float]:
    """`fsbridge jobs run` in a process of its own (no worker dispatching beside it): its wall time
    and peak RSS (MiB)."""
    run_dir = workdir / name
    (run_dir / "config").mkdir(parents=True)
    (run_dir / "config" / "fsbridge.yaml").write_text(CONFIG.replace("poll_every: 1s", "poll_every: 0.05s"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSBRIDGE_")} | {
        "FSBRIDGE_DATABASE_URL": f"sqlite:///{run_dir / 'fsbridge.db'}",
        "FSBRIDGE_FULLSTORY_API_KEY": "bench-key",
        "FSBRIDGE_FULLSTORY_API_URL": f"http://127.0.0.1:{fake_port}",
    }
    # A fresh parent per run reports its one child's peak RSS (ru_maxrss of RUSAGE_CHILDREN, in KiB).
    measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)")  # fmt: skip
    argv = pinned(SERVER_CORE, [PYTHON, "-c", measure, PYTHON, "-m", "fsbridge", "jobs", "run",
                                "fullstory_segment_audiences"])  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, cwd=run_dir, env=env, capture_output=True, text=True, check=True)
    return time.monotonic() - started, int(done.stderr.strip().splitlines()[-1]) / 1024


def measure_job_alone(workdir: Path, rows: int) -> dict[str, float]:
    """The job's own rate and memory: 1,000,000 rows against a 1-row export's fixed cost."""
    figures = {}
    for label, count in (("one", 1), ("many", rows)):
        export = workdir / f"export-{label}.ndjson.gz"
        write_export(export, count)
        with uvicorn("fake_segment", free_port(), LOAD_CORE, {"BENCH_EXPORT_FILE": str(export)}) as fake:
            figures[label] = job_alone(workdir, fake.port, f"alone-{label}")
    (one_s, one_rss), (many_s, many_rss) = figures["one"], figures["many"]
    return {
        "rows_per_s": rows / max(1e-6, many_s - one_s),
        "seconds": many_s - one_s,
        "rss_added_mb": many_rss - one_rss,
    }


def measure_segment_export(workdir: Path, rows: int) -> dict[str, float]:
    """The job in a worker (`--role worker`), as it runs in production: while it applies the diff,
    the same process dispatches the inbox events it produced and delivers the identifies."""
    export = workdir / "export.ndjson.gz"
    write_export(export, rows)
    env = {"BENCH_EXPORT_FILE": str(export), "BENCH_EXPORT_PENDING_S": "3"}
    with uvicorn("fake_segment", free_port(), LOAD_CORE, env) as fake:
        run_dir = workdir / "export-run"
        (run_dir / "config").mkdir(parents=True)
        (run_dir / "config" / "fsbridge.yaml").write_text(CONFIG)
        server = fsbridge(run_dir, fake.port, role="worker")
        server.env |= {
            "FSBRIDGE_FULLSTORY_API_KEY": "bench-key",
            "FSBRIDGE_FULLSTORY_API_URL": f"http://127.0.0.1:{fake.port}",
        }
        with server:
            assert server.handle is not None
            time.sleep(1.5)  # the export is pending for 3 s: the worker is idle, so this is its baseline
            baseline = rss_mb(server.handle.pid)
            deadline = time.monotonic() + 600
            state = job_state(server.port)
            while state["last_finished_at"] is None and time.monotonic() < deadline:
                time.sleep(0.5)
                state = job_state(server.port)
            peak = server.peak_rss_mb()
            stats = segment_stats(fake.port)
            while stats["messages"] < rows and time.monotonic() < deadline:
                time.sleep(0.5)
                stats = segment_stats(fake.port)
    counts = state["last_counts"]
    assert isinstance(counts, dict)
    finished, download = float(state["last_finished_at"]), float(stats["download_started"])  # type: ignore[arg-type]
    return {
        "rows": float(counts.get("rows", 0)),
        "entered": float(counts.get("entered", 0)),
        "rows_per_s": counts.get("rows", 0) / max(1e-6, finished - download),
        "job_seconds": finished - download,
        "rss_added_mb": peak - baseline,
        "delivered": float(stats["messages"]),
        "delivered_after_s": float(stats["last"] or 0) - download,
    }


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    workdir = Path(tempfile.mkdtemp(prefix="fsbridge-bench-export-"))
    try:
        print("job alone:", measure_job_alone(workdir, rows), flush=True)
        print("in a worker:", measure_segment_export(workdir, rows), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
