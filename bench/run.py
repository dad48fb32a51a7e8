"""`make bench`: fsbridge's figures beside baselines measured in the same run, on 127.0.0.1 only.

Server processes are pinned to core 0 and the load generators and the fake Segment to core 1. Each
intake figure is the median of several wrk runs. The table is printed, and written into
docs/performance-table.md (shown on the docs' performance page) between the bench markers, with the date, the machine, the versions and the method.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from fsbridge.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TOKEN = "bench-stream-token"
OPS_TOKEN = "bench-ops-token"
SERVER_CORE, LOAD_CORE = 0, 1
WRK_THREADS = 2  # wrk's load threads, on LOAD_CORE
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def pinned(core: int, argv: list[str]) -> list[str]:
    cores = os.cpu_count() or 1
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") and cores > 1 else argv


@dataclass
class Process:
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    ready_path: str = "/healthz"
    handle: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSBRIDGE_")} | self.env
        self.handle = subprocess.Popen(
            self.argv, cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.handle.poll() is not None:
                raise RuntimeError(
                    f"{self.argv} exited: {self.handle.stderr.read().decode() if self.handle.stderr else ''}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1).status_code < 500:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.argv} did not start")

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None and self.handle.poll() is None:
            self.handle.terminate()
            try:
                self.handle.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.handle.kill()

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server, all threads (from /proc/<pid>/stat)."""
        assert self.handle is not None
        user, system = _cpu_of(Path(f"/proc/{self.handle.pid}/stat"))
        return user + system

    def cpu_seconds_by_thread(self) -> dict[str, float]:
        """CPU seconds (user and system, and system alone) of the server's main thread (the event
        loop) and of its other threads (the store's writer above all), from /proc/<pid>/task."""
        assert self.handle is not None
        pid = str(self.handle.pid)
        seconds = {"main": 0.0, "main, system": 0.0, "other threads": 0.0, "other threads, system": 0.0}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                user, system = _cpu_of(task / "stat")
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
            thread = "main" if task.name == pid else "other threads"
            seconds[thread] += user + system
            seconds[f"{thread}, system"] += system
        return seconds

    def peak_rss_mb(self) -> float:
        assert self.handle is not None
        # The server is the exec'd process (taskset execs), so its /proc entry is the server's.
        status = Path(f"/proc/{self.handle.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def _cpu_of(stat: Path) -> tuple[float, float]:
    """User and system CPU seconds from a /proc stat file (after the command name, which may hold spaces)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def uvicorn(target: str, port: int, core: int, env: dict[str, str] | None = None) -> Process:
    argv = [PYTHON, "-m", "uvicorn", f"bench.servers:{target}", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning"]  # fmt: skip
    return Process(pinned(core, argv), port, env or {}, ready_path="/stats" if target == "fake_segment" else "/")


def fsbridge(workdir: Path, segment_port: int, role: str = "all", database: Path | None = None) -> Process:
    port = free_port()
    env = {
        "FSBRIDGE_DATABASE_URL": f"sqlite:///{database or workdir / 'fsbridge.db'}",
        "FSBRIDGE_FULLSTORY_STREAM_TOKENS": TOKEN,
        "FSBRIDGE_SEGMENT_WRITE_KEY": "bench-write-key",
        "FSBRIDGE_SEGMENT_API_URL": f"http://127.0.0.1:{segment_port}",
        "FSBRIDGE_OPS_TOKEN": OPS_TOKEN,
        "FSBRIDGE_LOG_FORMAT": "json",
    }
    argv = [PYTHON, "-m", "fsbridge", "serve", "--port", str(port), "--role", role]
    return Process(pinned(SERVER_CORE, argv), port, env, cwd=workdir)


def wrk(
    port: int, seconds: float, connections: int = 32, script: str = "intake.lua", env: dict[str, str] | None = None
) -> dict[str, float]:
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s",
            str(ROOT / "bench" / script), f"http://127.0.0.1:{port}/webhooks/fullstory/streams/bench"]  # fmt: skip
    # A script that splits users between wrk's threads reads their number (wrk does not give it).
    script_env = {"BENCH_STREAM_TOKEN": TOKEN, "BENCH_WRK_THREADS": str(WRK_THREADS), **(env or {})}
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, check=True,
                         env=os.environ | script_env).stdout  # fmt: skip
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["requests"] = float(total.group(1)) if total else 0
    result["non_2xx"] = float(errors.group(1)) if errors else 0
    for percentile in ("50", "99"):
        value, unit = re.search(rf"\s{percentile}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{percentile}_ms"] = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    return result


def segment_stats(port: int) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()
    return stats


def wait_for_messages(port: int, count: float, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats = segment_stats(port)
    while stats["messages"] < count and time.monotonic() < deadline:
        time.sleep(0.2)
        stats = segment_stats(port)
    return stats


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def measure_intake(target: str, segment_port: int, runs: int, seconds: float, workdir: Path) -> dict[str, float]:
    results = []
    for n in range(runs):
        httpx.post(f"http://127.0.0.1:{segment_port}/reset")
        if target == "fsbridge":
            # An api replica: intake alone, as it runs when scaled out (delivery is measured by the drain).
            run_dir = workdir / f"intake-{n}"
            shutil.copytree(ROOT / "config", run_dir / "config")
            server = fsbridge(run_dir, segment_port, role="api")
        else:
            env = {"BENCH_DURABLE_DB": str(workdir / f"{target}-{n}.db")}
            server = uvicorn(target, free_port(), SERVER_CORE, env)
        with server:
            wrk(server.port, 1)  # warm-up
            cpu = server.cpu_seconds()
            commits = store_commits(server.port) if target == "fsbridge" else (0.0, 0.0)
            result = wrk(server.port, seconds)
            result["cpu_us"] = (server.cpu_seconds() - cpu) / max(1.0, result["requests"]) * 1e6
            if target == "fsbridge":
                after = store_commits(server.port)
                result["group"] = (after[1] - commits[1]) / max(1.0, after[0] - commits[0])
            results.append(result)
    keys = ("rps", "p50_ms", "p99_ms", "non_2xx", "cpu_us", *(("group",) if target == "fsbridge" else ()))
    return {key: median(results, key) for key in keys}


def measure_whole_service(segment_port: int, runs: int, seconds: float, workdir: Path) -> dict[str, float]:
    """The deployment a small user runs: one process (`--role all`) on one core taking 32 connections
    of Streams clicks and delivering them; counted is what the fake Segment received during the
    load (delivered events/s), not the acknowledgements."""
    results = []
    for n in range(runs):
        run_dir = workdir / f"whole-{n}"
        shutil.copytree(ROOT / "config", run_dir / "config")
        with fsbridge(run_dir, segment_port, role="all") as server:
            wrk(server.port, 1)  # warm-up
            before = segment_stats(segment_port)["messages"]
            result = wrk(server.port, seconds)
            delivered = segment_stats(segment_port)["messages"] - before
        result["delivered_per_s"] = delivered / seconds
        results.append(result)
    return {key: median(results, key) for key in ("rps", "delivered_per_s", "p99_ms")}


def store_commits(port: int) -> tuple[float, float]:
    """fsbridge's (commits, writes) from /metrics: their ratio is the mean commit group."""
    text = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"}, timeout=10
    ).text
    values = {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}
    return values["fsbridge_store_commits_total"], values["fsbridge_store_writes_total"]


async def paced_requests(
    port: int, rate: int, seconds: float, request_for: Callable[[int], tuple[str, bytes]], connections: int = 32
) -> dict[str, float]:
    """Send `rate` requests a second for `seconds` over keep-alive connections (raw HTTP/1.1, so the
    generator is not the bottleneck); `request_for(n)` gives the n-th request and its mark, and
    each mark's send time is recorded."""
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    sent: dict[str, float] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await queue.get()) is not None:
            mark, request = item
            sent[mark] = time.time()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    start = time.monotonic()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(request_for(n))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return {"achieved_rate": total / (time.monotonic() - start), **sent}


def post(path: str, authorization: str, body: bytes) -> bytes:
    """One raw HTTP/1.1 POST of a JSON body."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def steady_load(port: int, rate: int, seconds: float, connections: int = 32) -> dict[str, float]:
    """Streams rage clicks at a steady rate, each marked in its target_text."""

    def click(n: int) -> tuple[str, bytes]:
        mark = f"lat-{n}"
        body = orjson.dumps({"event": {"event_type": "rage-click", "target_text": mark, "url": "https://shop.example.com/"},
                             "session": {"session_id": "1:2"}, "user": {"user_id": "u_1"}})  # fmt: skip
        return mark, post("/webhooks/fullstory/streams/latency", f"Bearer {TOKEN}", body)

    return await paced_requests(port, rate, seconds, click, connections)


def measure_latency(segment_port: int, workdir: Path, rate: int, seconds: float) -> dict[str, float]:
    httpx.post(f"http://127.0.0.1:{segment_port}/reset")
    run_dir = workdir / "latency"
    shutil.copytree(ROOT / "config", run_dir / "config")
    with fsbridge(run_dir, segment_port) as server:
        load = subprocess.run(
            pinned(LOAD_CORE, [PYTHON, str(ROOT / "bench" / "run.py"), "--steady", str(server.port), str(rate), str(seconds)]),
            capture_output=True, check=True,
        )  # fmt: skip
        sent = orjson.loads(load.stdout)
        arrivals = wait_for_messages(segment_port, rate * seconds, 60)["arrivals"]
    latencies = sorted((arrivals[m] - t) * 1000 for m, t in sent.items() if m in arrivals)
    return {
        "achieved_rate": sent.pop("achieved_rate", 0),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "delivered": len(latencies),
    }


InboxRow = tuple[str, str, str, str, str, bytes, float]  # id, source, stream, dedup_key, kind, body, received_at


def preload(database: Path, rows: Iterable[InboxRow]) -> float:
    """Create the schema with fsbridge itself, then insert stored inbox events directly; the seconds it took."""
    from fsbridge.store.sqlite import SQLiteEngine

    SQLiteEngine(str(database)).prepare()
    conn = sqlite3.connect(database)
    started = time.monotonic()
    with conn:
        conn.executemany(
            "INSERT INTO inbox (id, source, stream, dedup_key, kind, body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()
    return time.monotonic() - started


def stored_rage_clicks(count: int) -> Iterator[InboxRow]:
    body = b'{"event":{"event_type":"rage-click","target_text":"%d"},"session":{"session_id":"1:2"},"user":{"user_id":"u"}}'
    now = time.time()
    for n in range(count):
        yield f"evt_pre{n:012d}", "fullstory_stream", "bench", f"pre-{n}", "rage_click", body % n, now


def stored_identifies(count: int) -> Iterator[InboxRow]:
    """Segment identify calls, each for another user, so none is suppressed as unchanged."""
    body = b'{"type":"identify","userId":"u%d","messageId":"m%d","traits":{"plan":"pro","seats":%d}}'
    now = time.time()
    for n in range(count):
        yield f"evt_id{n:012d}", "segment", "", f"messageId:m{n}", "identify", body % (n, n, n), now


def measure_drain(segment_port: int, workdir: Path, count: int) -> dict[str, float]:
    httpx.post(f"http://127.0.0.1:{segment_port}/reset")
    run_dir = workdir / "drain"
    shutil.copytree(ROOT / "config", run_dir / "config")
    preload(run_dir / "fsbridge.db", stored_rage_clicks(count))
    started = time.time()
    with fsbridge(run_dir, segment_port, role="worker"):
        ready = time.time()  # /healthz answers: start-up is over, draining has begun
        stats = wait_for_messages(segment_port, count, 300)
    # Both ends on the wall clock: the fake Segment stamps each batch's arrival with time.time().
    seconds = stats["last"] - ready
    return {
        "seconds": seconds,
        "per_s": stats["messages"] / seconds,
        "startup_s": ready - started,
        "from_start_s": stats["last"] - started,
        "delivered": stats["messages"],
    }


def measure_fullstory(segment_port: int, workdir: Path, count: int, concurrency: int) -> float:
    """Fullstory upserts a second through one worker: one request per delivery, `concurrency` in flight."""
    httpx.post(f"http://127.0.0.1:{segment_port}/reset")
    run_dir = workdir / f"fullstory-{concurrency}"
    (run_dir / "config").mkdir(parents=True)
    # The rate limit is lifted so the client's own cost per request is what is measured.
    (run_dir / "config" / "fsbridge.yaml").write_text(
        f"destinations:\n  fullstory: {{concurrency: {concurrency}, rate_limit_per_second: 100000, burst: 100000}}\n"
    )
    preload(run_dir / "fsbridge.db", stored_identifies(count))
    server = fsbridge(run_dir, segment_port, role="worker")
    server.env |= {
        "FSBRIDGE_FULLSTORY_API_KEY": "bench-key",
        "FSBRIDGE_FULLSTORY_API_URL": f"http://127.0.0.1:{segment_port}",
    }
    with server:
        stats = wait_for_messages(segment_port, count, 120)
    return float(stats["messages"] / max(1e-6, stats["last"] - stats["first"]))


def measure_memory(segment_port: int, workdir: Path, backlog: int, watch_seconds: float) -> dict[str, float]:
    empty_dir, full_dir = workdir / "rss-empty", workdir / "rss-backlog"
    for directory in (empty_dir, full_dir):
        shutil.copytree(ROOT / "config", directory / "config")
    with fsbridge(empty_dir, segment_port) as idle:
        time.sleep(watch_seconds)
        empty = idle.peak_rss_mb()
    httpx.post(f"http://127.0.0.1:{segment_port}/reset")
    load_seconds = preload(full_dir / "fsbridge.db", stored_rage_clicks(backlog))
    with fsbridge(full_dir, segment_port) as busy:
        time.sleep(watch_seconds)
        loaded = busy.peak_rss_mb()
        delivered = segment_stats(segment_port)["messages"]
    return {"empty_mb": empty, "backlog_mb": loaded, "delivered_while_watching": delivered, "preload_s": load_seconds}


def versions() -> str:
    import fastapi
    import httpx as httpx_module
    import pydantic
    import uvicorn as uvicorn_module

    import fsbridge as package

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[
        0
    ]
    return (
        f"fsbridge {package.__version__}, Python {platform.python_version()}, uvicorn {uvicorn_module.__version__}, "
        f"FastAPI {fastapi.__version__}, pydantic {pydantic.VERSION}, httpx {httpx_module.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, {wrk_version.strip()}"
    )


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024**2  # type: ignore[union-attr]
    return f"{os.cpu_count()} cores ({cpu}), {memory} GiB, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--drain", type=int, default=100_000)
    parser.add_argument("--steady", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steady:
        port, rate, seconds = args.steady
        sys.stdout.buffer.write(orjson.dumps(asyncio.run(steady_load(int(port), int(rate), float(seconds)))))
        return
    if not shutil.which("wrk"):
        sys.exit("make bench needs wrk (Debian package `wrk`).")
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT))  # the bench package's other rows (bench/session_links.py and the like)
    workdir = Path(tempfile.mkdtemp(prefix="fsbridge-bench-"))
    try:
        with uvicorn("fake_segment", free_port(), LOAD_CORE) as segment:
            print("intake: bare ASGI...", flush=True)
            bare = measure_intake("bare", segment.port, args.runs, args.seconds, workdir)
            print("intake: bare ASGI + fsbridge's durable store...", flush=True)
            durable = measure_intake("bare_durable", segment.port, args.runs, args.seconds, workdir)
            print("intake: FastAPI + pydantic...", flush=True)
            floor = measure_intake("fastapi_parse", segment.port, args.runs, args.seconds, workdir)
            print("intake and delivery: fsbridge...", flush=True)
            ours = measure_intake("fsbridge", segment.port, args.runs, args.seconds, workdir)
            print("the whole service in one process (--role all, one core)...", flush=True)
            whole = measure_whole_service(segment.port, args.runs, args.seconds, workdir)
            print("receipt-to-delivery at 1,000 events/s...", flush=True)
            latency = measure_latency(segment.port, workdir, 1000, args.seconds)
            print(f"drain of {args.drain:,} stored events...", flush=True)
            drain = measure_drain(segment.port, workdir, args.drain)
            print(f"memory, empty and with {args.backlog:,} stored events...", flush=True)
            memory = measure_memory(segment.port, workdir, args.backlog, 15)
            print("Fullstory upserts at concurrency 1, 4, 16...", flush=True)
            fullstory = {c: measure_fullstory(segment.port, workdir, 3000, c) for c in (1, 4, 16)}
            print("session links (enrichment) at 200 triggers/s, 2,000 then 200 users...", flush=True)
            from bench.session_links import measure_session_links

            links = {users: measure_session_links(segment.port, workdir, 200, 20, users) for users in (2000, 200)}
        print("a Fullstory segment export of 1,000,000 individuals (alone, then in a worker)...", flush=True)
        from bench.segment_export import measure_job_alone, measure_segment_export

        export = {"alone": measure_job_alone(workdir, 1_000_000), "worker": measure_segment_export(workdir, 1_000_000)}
        print("the frustration pipeline with the five aggregation flows off, then on, end to end (10,000 users)...")
        from bench.aggregations import measure as measure_aggregations
        from bench.aggregations import measure_end_to_end

        with uvicorn("fake_segment", free_port(), LOAD_CORE) as segment:
            end_to_end = {
                on: measure_end_to_end(workdir, segment.port, args.seconds, 10_000, aggregations=on)
                for on in (False, True)
            }
            print("the same, the drain alone (100,000 stored clicks)...", flush=True)
            drain_alone = {
                on: measure_aggregations(workdir, segment.port, 100_000, 10_000, aggregations=on)
                for on in (False, True)
            }
        aggregations = {"end to end": end_to_end, "drain": drain_alone}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = "\n".join(
        [render(bare, durable, floor, ours, whole, latency, drain, memory, fullstory, args), render_links(links),
         render_export(export), render_aggregations(aggregations)]
    )  # fmt: skip
    print("\n" + table)
    write_report(table, args)


def render(
    bare: dict[str, float], durable: dict[str, float], floor: dict[str, float], ours: dict[str, float],
    whole: dict[str, float], latency: dict[str, float], drain: dict[str, float], memory: dict[str, float], fullstory: dict[int, float],
    args: argparse.Namespace,
) -> str:  # fmt: skip
    ratio = ours["rps"] / floor["rps"]
    delivered_ratio = drain["per_s"] / floor["rps"]
    whole_ratio = whole["delivered_per_s"] / floor["rps"]

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    rows = [
        "| measure | fsbridge | bare ASGI | bare ASGI + durable store | FastAPI + pydantic | fsbridge ÷ FastAPI | target |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| intake req/s, 32 connections (api replica) | {ours['rps']:,.0f} | {bare['rps']:,.0f} | {durable['rps']:,.0f} | {floor['rps']:,.0f} | {ratio:.2f}× | |",
        f"| ÷ FastAPI + pydantic | {ratio:.2f}× | {bare['rps'] / floor['rps']:.2f}× | {durable['rps'] / floor['rps']:.2f}× | 1.00× | | |",
        f"| writes per durable commit (group commit) | {ours['group']:.1f} | | | | | |",
        f"| server CPU per request | {ours['cpu_us']:.0f} µs | {bare['cpu_us']:.0f} µs | {durable['cpu_us']:.0f} µs | {floor['cpu_us']:.0f} µs | {ours['cpu_us'] / floor['cpu_us']:.2f}× | |",
        f"| intake p50 | {ours['p50_ms']:.1f} ms | {bare['p50_ms']:.1f} ms | {durable['p50_ms']:.1f} ms | {floor['p50_ms']:.1f} ms | | |",
        f"| intake p99 | {ours['p99_ms']:.1f} ms | {bare['p99_ms']:.1f} ms | {durable['p99_ms']:.1f} ms | {floor['p99_ms']:.1f} ms | | ≤ 20 ms ({mark(ours['p99_ms'] <= 20)}) |",
        f"| delivered events/s to Segment (worker, draining) | {drain['per_s']:,.0f} | | | | {delivered_ratio:.2f}× | ≥ 1.2× ({mark(delivered_ratio >= 1.2)}) |",
        f"| whole service (`--role all`, one core), 32 connections: delivered events/s (acks {whole['rps']:,.0f}/s) | {whole['delivered_per_s']:,.0f} | | | | {whole_ratio:.2f}× | |",
        f"| receipt-to-delivery p50 at {latency['achieved_rate']:,.0f} events/s | {latency['p50_ms']:.0f} ms | | | | | |",
        f"| receipt-to-delivery p99 at {latency['achieved_rate']:,.0f} events/s | {latency['p99_ms']:.0f} ms | | | | | ≤ 1 s ({mark(latency['p99_ms'] <= 1000)}) |",
        f"| drain of {args.drain:,} stored events, from ready to last arrival | {drain['seconds']:.1f} s ({drain['per_s']:,.0f}/s) | | | | | ≥ 10,000/s ({mark(drain['per_s'] >= 10_000)}) |",
        f"| the same, from process start (start-up {drain['startup_s']:.1f} s) | {drain['from_start_s']:.1f} s ({drain['delivered'] / drain['from_start_s']:,.0f}/s) | | | | | |",
        f"| peak RSS, empty queue | {memory['empty_mb']:.0f} MiB | | | | | |",
        f"| peak RSS, {args.backlog:,} stored events | {memory['backlog_mb']:.0f} MiB | | | | | flat ({mark(memory['backlog_mb'] <= memory['empty_mb'] * 1.5)}) |",
        *(f"| Fullstory upserts/s, {c} in flight (one request each) | {rate:,.0f} | | | | | |" for c, rate in fullstory.items()),
    ]  # fmt: skip
    return "\n".join(rows)


def render_links(links: dict[int, dict[str, float]]) -> str:
    """The enrichment rows: session_url_to_segment against a fake Fullstory answering in 50 ms."""

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    rows = []
    for users, r in links.items():
        limit = 1.0 if users >= 2000 else 0.1
        rows += [
            f"| session links, {r['achieved_rate']:,.0f} triggers/s for 20 s, {users:,} users: receipt-to-delivery p50 / p99"
            f" ({r['linked']:,.0f} of {r['triggers']:,.0f} linked) | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms | | | | |"
            f" p99 ≤ 1 s ({mark(r['p99_ms'] <= 1000)}) |",
            f"| session links, {users:,} users: Fullstory look-ups per trigger | {r['lookups_per_trigger']:.2f} | | | | |"
            f" ≤ {limit:g} ({mark(r['lookups_per_trigger'] <= limit)}) |",
        ]  # fmt: skip
    return "\n".join(rows)


def render_export(export: dict[str, dict[str, float]]) -> str:
    """The segment-export rows: the job alone (`fsbridge jobs run`), then in a worker dispatching its output."""

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    alone, worker = export["alone"], export["worker"]
    return "\n".join([
        f"| segment export, 1,000,000 individuals, the job alone: rows/s (read, staged, diffed into the inbox) | {alone['rows_per_s']:,.0f} | | | | | ≥ 20,000 ({mark(alone['rows_per_s'] >= 20_000)}) |",
        f"| the same: peak RSS added | {alone['rss_added_mb']:.0f} MiB | | | | | ≤ 50 MiB ({mark(alone['rss_added_mb'] <= 50)}) |",
        f"| the same job in a worker that dispatches and delivers its output meanwhile: rows/s | {worker['rows_per_s']:,.0f} | | | | | |",
        f"| identifies delivered, and seconds from the download's start | {worker['delivered']:,.0f} in {worker['delivered_after_s']:.0f} s | | | | | all ({mark(worker['delivered'] >= worker['rows'])}) |",
    ])  # fmt: skip


def render_aggregations(runs: dict[str, dict[bool, dict[str, Any]]]) -> str:
    """The aggregations rows: the frustration pipeline with the five aggregation flows on against
    off, end to end (the row the target is for) and the drain alone."""
    off, on = runs["end to end"][False], runs["end to end"][True]
    ratio = on["clicks_per_s"] / off["clicks_per_s"]
    mark = "met" if ratio >= 0.8 else "**not met**"
    cpu_off, cpu_on = (r["cpu_us_per_click"]["main"] + r["cpu_us_per_click"]["other threads"] for r in (off, on))
    drain_off, drain_on = runs["drain"][False], runs["drain"][True]
    drain_ratio = drain_on["clicks_per_s"] / drain_off["clicks_per_s"]
    return "\n".join([
        f"| frustration pipeline end to end (`--role all`, one core, 32 connections, clicks of 10,000 users until all"
        f" are at Segment), the five aggregation flows on: clicks/s (off: {off['clicks_per_s']:,.0f}) |"
        f" {on['clicks_per_s']:,.0f} | | | | {ratio:.2f}× | ≥ 0.8× ({mark}) |",
        f"| the same: server CPU per click, on / off | {cpu_on:.0f} / {cpu_off:.0f} µs | | | | | |",
        f"| the same, the drain alone (one worker, 100,000 stored clicks of 10,000 users): clicks/s (off:"
        f" {drain_off['clicks_per_s']:,.0f}) | {drain_on['clicks_per_s']:,.0f} | | | | {drain_ratio:.2f}× | |",
    ])  # fmt: skip


def write_report(table: str, args: argparse.Namespace) -> None:
    path = ROOT / "docs" / "performance-table.md"  # shown by docs/performance.md
    section = (
        f"{START}\nLatest run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"- Machine: {machine()}\n- Versions: {versions()}\n"
        f"- Method: servers pinned to core {SERVER_CORE}, wrk (2 threads, 32 connections) and the fake Segment on core "
        f"{LOAD_CORE}; intake figures are medians of {args.runs} runs of {args.seconds:g} s; all on 127.0.0.1.\n\n"
        f"{table}\n{END}"
    )
    text = path.read_text() if path.exists() else START + "\n" + END + "\n"
    if START not in text:
        text += "\n" + START + "\n" + END + "\n"
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    path.write_text(before + section + after)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
