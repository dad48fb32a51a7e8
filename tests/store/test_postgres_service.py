"""The service on PostgreSQL: flows end to end, and a database outage that loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsbridge.errors import StoreUnavailableError
from tests.conftest import RAGE_CLICK, start_bridge
from tests.postgres_server import PostgresServer, throwaway_server


async def test_flows_end_to_end_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """A rage click and an identify travel through a PostgreSQL-backed fsbridge like through SQLite."""
    b = await start_bridge(tmp_path, database_url=postgres_url)
    try:
        assert 202 == (await b.post_stream(RAGE_CLICK)).status_code
        assert (await b.post_stream(RAGE_CLICK)).json()["duplicate"] is True
        await b.post_segment({"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"plan": "pro"}})
        await b.drain()
        assert "Rage Click Detected" == b.upstream.messages()[0]["event"]
        assert 1 == len(b.upstream.fullstory("POST"))
        stats = await b.runtime.store.stats()
        assert 2 == stats["by_destination"]["segment"]["delivered"] + stats["by_destination"]["fullstory"]["delivered"]
    finally:
        await b.client.aclose()
        await b.runtime.stop()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL this test may stop and start."""
    with throwaway_server() as server:
        yield server


async def test_postgres_outage_answers_503_and_loses_nothing(tmp_path: Path, own_server: PostgresServer) -> None:
    """While PostgreSQL is down intake answers 503 (the sender retries) and the worker fails softly;
    once it is back, intake accepts again and everything accepted before is delivered."""
    url = own_server.create_database()
    b = await start_bridge(tmp_path, database_url=url)
    try:
        before = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": "before"}}
        assert 202 == (await b.post_stream(before)).status_code

        await asyncio.to_thread(own_server._run, "pg_ctl", "-D", str(own_server.data), "-m", "fast", "-w", "stop")
        during = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": "during"}}
        response = await b.post_stream(during)
        assert 503 == response.status_code
        assert "store_unavailable" == response.json()["error"]["code"]
        with pytest.raises(StoreUnavailableError):
            await b.runtime.worker.dispatch_once()
        assert 503 == (await b.client.get("/readyz")).status_code

        await asyncio.to_thread(
            own_server._run,
            "pg_ctl", "-D", str(own_server.data), "-l", str(own_server.root / "server.log"),
            "-o", f"-p {own_server.port} -k {own_server.root} -c listen_addresses=127.0.0.1", "-w", "start",
        )  # fmt: skip
        assert 202 == (await b.post_stream(during)).status_code
        await b.drain()
        sent = sorted(m["properties"]["element_text"] for m in b.upstream.messages())
        assert ["before", "during"] == sent
    finally:
        await b.client.aclose()
        await b.runtime.stop()
