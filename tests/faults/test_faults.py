"""Fault injection: each scenario counts events acknowledged (202), delivered (distinct at the fake
upstream), lost (acknowledged but never delivered: must be 0) and duplicates (the same messageId
arriving again). The table is printed at the end, and written to $FSBRIDGE_FAULTS_REPORT if set.
These scenarios run in-process on a frozen clock (fast, part of `make test`); `make faults` adds
the process-level ones (SIGKILL during intake and delivery, several replicas)."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fsbridge.store.sql import SqlStore
from fsbridge.testing import FakeUpstream, Scripted
from tests.conftest import RAGE_CLICK, STREAM_TOKEN, Bridge, start_bridge

EVENTS = 40


@dataclass
class Row:
    scenario: str
    acked: int
    delivered: int
    lost: int
    duplicates: int
    note: str

    @classmethod
    def of(cls, scenario: str, acked: set[str], taken: Counter[str], note: str) -> Row:
        """The row for events `acked` (202) and the marks the destination took, each as often as it did."""
        return cls(
            scenario,
            len(acked),
            len(set(taken) & acked),
            len(acked - set(taken)),
            sum(count - 1 for count in taken.values()),
            note,
        )


ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    lines = [
        "| scenario | acked | delivered | lost | duplicates | note |",
        "|---|---:|---:|---:|---:|---|",
        *(f"| {r.scenario} | {r.acked} | {r.delivered} | {r.lost} | {r.duplicates} | {r.note} |" for r in ROWS),
    ]
    table = "\n".join(lines)
    print(f"\n\nFault injection\n{table}\n")
    target = os.environ.get("FSBRIDGE_FAULTS_REPORT")
    if target:
        Path(target).write_text(table + "\n")


def append_to_report(r: Row) -> None:
    """Process-level scenarios (other modules) add their row when `make faults` collects a report."""
    target = os.environ.get("FSBRIDGE_FAULTS_REPORT")
    if target:
        with Path(target).open("a") as report_file:
            report_file.write(f"| {r.scenario} | {r.acked} | {r.delivered} | {r.lost} | {r.duplicates} | {r.note} |\n")


class Upstream(FakeUpstream):
    """A fake Segment that also notes which messages it really took in: those of requests it answered
    2xx, and those it processed before its connection died."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accepted: Counter[str] = Counter()

    def _handle(self, request: httpx.Request) -> httpx.Response:
        response = super()._handle(request)  # raises for a scripted exception, after recording
        if response.status_code < 300:
            self._take(request)
        return response

    def _take(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/v1/batch"):
            self.accepted.update(m["properties"]["element_text"] for m in orjson.loads(request.content)["batch"])


class DiesAfterProcessing(Upstream):
    """Processes the first batch, then drops the connection before answering."""

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if not self.requests:
            self.requests.append(request)
            self._take(request)
            raise httpx.RemoteProtocolError("peer closed connection without sending a response")
        return super()._handle(request)


def click(n: int) -> dict[str, Any]:
    return {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"e{n}"}}


async def send(b: Bridge, numbers: range) -> set[str]:
    acked = set()
    for n in numbers:
        if (await b.post_stream(click(n))).status_code == 202:
            acked.add(f"e{n}")
    return acked


def record(scenario: str, acked: set[str], upstream: Upstream, note: str) -> Row:
    row = Row.of(scenario, acked, upstream.accepted, note)
    ROWS.append(row)
    return row


async def settle(b: Bridge, seconds: float, step: float = 30) -> None:
    """Let `seconds` of clock time pass, running the workers at every step."""
    waited = 0.0
    while waited <= seconds:
        await b.drain()
        b.clock.advance(step)
        waited += step
    await b.drain()


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Bridge] = []

    async def factory(upstream: Upstream, **settings: Any) -> Bridge:
        b = await start_bridge(tmp_path / str(len(made)), upstream, **settings)
        made.append(b)
        return b

    yield factory
    for b in made:
        await b.client.aclose()
        await b.runtime.stop()


@pytest.mark.parametrize(
    ("label", "script", "seconds"),
    [
        ("500, 500, 200", [500, 500], 60),
        ("read timeouts x3", [httpx.ReadTimeout("slow")] * 3, 120),
        ("connection refused x5", [httpx.ConnectError("refused")] * 5, 300),
    ],
    ids=["500-500-200", "read-timeouts", "connection-refused"],
)
async def test_scripted_failures_are_retried_until_delivered(
    make: Any, label: str, script: list[Scripted], seconds: float
) -> None:
    """Two 500s, three read timeouts or five refused connections, then success: every event delivered."""
    upstream = Upstream(script=script)
    b = await make(upstream)
    acked = await send(b, range(EVENTS))
    await settle(b, seconds)
    assert 0 == record(label, acked, upstream, "").lost


async def test_429_with_retry_after(make: Any) -> None:
    """429 with Retry-After: 120 waits 120 s, then delivers."""
    upstream = Upstream(script=[(429, {"Retry-After": "120"})])
    b = await make(upstream)
    acked = await send(b, range(EVENTS))
    await b.drain()
    b.clock.advance(119)
    await b.drain()
    assert 1 == len(upstream.requests)
    await settle(b, 60)
    assert 0 == record("429, Retry-After 120 s", acked, upstream, "second attempt after 120 s").lost


async def test_ten_minute_outage(make: Any) -> None:
    """A 10-minute outage (503 throughout, compressed on the frozen clock), then recovery."""
    upstream = Upstream(default=503)
    b = await make(upstream)
    acked = await send(b, range(EVENTS))
    await settle(b, 600)
    failed_attempts = len(upstream.requests)
    upstream.default = 200
    await settle(b, 600)
    row = record("10-minute outage", acked, upstream, f"{failed_attempts} failed attempts, then delivered")
    assert 0 == row.lost


async def test_upstream_dies_before_answering(make: Any) -> None:
    """The upstream takes the batch but the connection drops before the answer: resent, counted as duplicates."""
    upstream = DiesAfterProcessing()
    b = await make(upstream)
    acked = await send(b, range(EVENTS))
    await settle(b, 60)
    row = record("upstream dies before answering", acked, upstream, "same messageIds: Segment drops the resend")
    assert 0 == row.lost
    assert EVENTS == row.duplicates


class StoreFault:
    """Make every connection of a SQLite store refuse writes the way a full or read-only disk does."""

    def __init__(self, b: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
        store = b.runtime.store
        assert isinstance(store, SqlStore)
        self.store, self.monkeypatch = store, monkeypatch
        self.original = store.engine.connect

    def apply(self, pragma: str, undo: str) -> None:
        def connect() -> Any:
            conn = self.original()
            conn.execute(pragma)
            return conn

        self.monkeypatch.setattr(self.store.engine, "connect", connect)
        self.undo = undo
        writer = self.store._writer._conn
        if isinstance(writer, sqlite3.Connection):
            writer.execute(pragma)

    def clear(self) -> None:
        self.monkeypatch.setattr(self.store.engine, "connect", self.original)
        writer = self.store._writer._conn
        if isinstance(writer, sqlite3.Connection):
            writer.execute(self.undo)


async def test_disk_full_during_intake(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database cannot grow (SQLite's 'database or disk is full'): intake answers 503, then recovers."""
    upstream = Upstream()
    b = await make(upstream)
    acked = await send(b, range(10))
    fault = StoreFault(b, monkeypatch)
    pages = fault.store.engine.connect().execute("PRAGMA page_count").fetchone()[0]
    fault.apply(f"PRAGMA max_page_count = {pages}", "PRAGMA max_page_count = 1073741823")
    refused = [n for n in range(10, 200) if (await b.post_stream(click(n))).status_code == 503]
    assert refused, "the full database should refuse some events"
    fault.clear()
    acked |= await send(b, range(10, 200))  # the senders retry what got 503
    await b.drain()
    row = record("disk full during intake", acked, upstream, f"{len(refused)} answered 503, then resent")
    assert 0 == row.lost


async def test_read_only_store(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that turns read-only answers 503 (never 202), and loses nothing acknowledged before."""
    upstream = Upstream()
    b = await make(upstream)
    acked = await send(b, range(20))
    fault = StoreFault(b, monkeypatch)
    fault.apply("PRAGMA query_only = 1", "PRAGMA query_only = 0")
    statuses = [(await b.post_stream(click(n))).status_code for n in range(20, 30)]
    assert {503} == set(statuses)
    fault.clear()
    await b.drain()
    acked |= await send(b, range(20, 30))
    await b.drain()
    assert 0 == record("read-only store", acked, upstream, "10 answered 503, then resent").lost


POISON_TIMES: list[Any] = [1795000000000000, 1e20, "²", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"]


async def test_poison_events_among_good_ones(make: Any) -> None:
    """Good clicks posted around poison ones (odd timestamps, a session id nested 990 deep): every good
    click is delivered, every poison event ends delivered, dead-lettered or quarantined, none waits."""
    upstream = Upstream()
    b = await make(upstream)
    acked = await send(b, range(EVENTS // 2))
    poison_ids = []
    for n, value in enumerate(POISON_TIMES):
        payload = {**click(1000 + n), "event": {**click(1000 + n)["event"], "event_time": value}}
        poison_ids.append((await b.post_stream(payload)).json()["id"])
    deep = orjson.dumps({**click(2000), "session": "DEEP"}).replace(b'"DEEP"', b'{"x":' * 990 + b"1" + b"}" * 990)
    response = await b.client.post(
        "/webhooks/fullstory/streams/frustration",
        content=deep,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {STREAM_TOKEN}"},
    )
    poison_ids.append(response.json()["id"])
    acked |= await send(b, range(EVENTS // 2, EVENTS))
    await settle(b, 60, step=10)
    store = b.runtime.store
    assert 0 == (await store.undispatched()).events
    ended = 0
    for event_id in poison_ids:
        story = await store.event_story(event_id)
        quarantined = story is None and await store.get_quarantined(event_id) is not None
        if quarantined or (story is not None and all(d.status in ("delivered", "dead") for d in story.deliveries)):
            ended += 1
    assert len(poison_ids) == ended
    note = f"{len(POISON_TIMES) + 1} poison events among them: each delivered, dead-lettered or quarantined"
    assert 0 == record("poison events", acked, upstream, note).lost
