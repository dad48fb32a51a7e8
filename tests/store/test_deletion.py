"""Deletion is final (Part 3): after a Segment deletion request, or `fsbridge users forget`, nothing
that names the user is left in any table, raw body, freed page or the WAL; a tombstone keeps the
audience job and every flow from sending anything more about them."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from fsbridge.cli import app
from fsbridge.config import FsbridgeConfig
from fsbridge.user_keys import anonymous_key
from tests.conftest import OPS_TOKEN, Bridge, start_bridge
from tests.fake_fullstory import FakeFullstory

USER = "u_secret_7"
EMAIL = "Ada.Secret@Example.com "
ANONYMOUS_ID = "anon-secret-9"
SESSION = "5557778531805533:9999000011112222"
OTHER = "u_other_3"
JOB = "fullstory_segment_audiences"


def config() -> FsbridgeConfig:
    job = {"enabled": True, "poll_every": 0.001, "segments": [{"id": "seg_vip", "key": "vip"}]}
    return FsbridgeConfig.model_validate({"jobs": {JOB: job}})


def click(n: int, user: str | None, email: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": {"event_type": "rage-click", "target_text": f"pay {n}"},
        "session": {"session_id": SESSION if user != OTHER else "1:2"},
        "session_url": f"https://app.fullstory.com/ui/o/session/{SESSION}",
    }
    if user is not None:
        payload["user"] = {"user_id": user, **({"user_email": email} if email else {})}
    return payload


def needles() -> list[bytes]:
    email = EMAIL.strip().lower()
    return [
        USER.encode(),
        email.encode(),
        EMAIL.strip().encode(),
        hashlib.sha256(email.encode()).hexdigest().encode(),
        ANONYMOUS_ID.encode(),
        anonymous_key(SESSION).encode(),
    ]


async def user_everywhere(b: Bridge, fullstory: FakeFullstory) -> None:
    """The user as a deletion finds them: anonymous clicks before identification, Segment calls,
    untrimmed Streams ids, an email in another case, a quarantined message, an audience membership,
    and messages still waiting to be sent."""
    for n in range(2):
        assert 202 == (await b.post_stream(click(n, None))).status_code
    identify = {"type": "identify", "userId": USER, "anonymousId": ANONYMOUS_ID, "messageId": "i-1",
                "traits": {"email": EMAIL, "plan": "pro"}}  # fmt: skip
    await b.post_segment(identify)
    await b.post_segment({"type": "identify", "userId": OTHER, "messageId": "i-2", "traits": {"plan": "free"}})
    await b.post_segment({"type": "nonsense", "userId": USER, "messageId": "q-1"})  # quarantined
    await b.drain()
    fullstory.exports["seg_vip"] = [{"Uid": USER}, {"Uid": OTHER}]
    assert "ok" == (await b.runtime.scheduler.run_now(JOB)).outcome
    await b.drain()
    await b.runtime.pause_destination("segment")  # what follows waits to be sent
    for n in range(2, 6):
        await b.post_stream(click(n, f" {USER} ", email=EMAIL.upper()))
    await b.post_stream(click(9, OTHER))
    await b.drain()


def sqlite_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def postgres_rows(url: str) -> str:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return "\n".join(repr(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))  # noqa: S608


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_a_deletion_request_leaves_nothing_that_names_the_user(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str
) -> None:
    """After a Segment deletion, no table, raw body, freed page or WAL frame holds the userId, the email
    (any case), its SHA-256, the anonymousId or the anonymous session's key; the other user is intact; the
    user's page is 404; an export that still lists the user and a new click send nothing about them."""
    fullstory = FakeFullstory()
    url = request.getfixturevalue("postgres_url") if engine == "postgresql" else f"sqlite:///{tmp_path / 'fs.db'}"
    b = await start_bridge(tmp_path, fullstory, config=config(), aggregations=True, database_url=url)
    try:
        await user_everywhere(b, fullstory)
        await b.runtime.resume_destination("segment")
        await b.runtime.pause_destination("segment")
        await b.post_segment({"type": "delete", "userId": f" {USER}", "messageId": "del-1"})
        await b.drain()
        assert [("DELETE", USER)] == [(r.method, r.url.params.get("uid")) for r in fullstory.fullstory("DELETE")]
        if engine == "sqlite":
            stored = sqlite_bytes(tmp_path / "fs.db").lower()
            assert [] == [n for n in needles() if n.lower() in stored]
            assert OTHER.encode() in stored
        else:
            rows = postgres_rows(url).lower()
            assert [] == [n for n in needles() if n.decode().lower() in rows]
            assert OTHER in rows
        page = await b.client.get(f"/ops/api/users/{USER}", headers={"Authorization": f"Bearer {OPS_TOKEN}"})
        assert 404 == page.status_code

        await b.runtime.resume_destination("segment")
        await b.drain()
        before = [m for m in b.upstream.messages() if USER in str(m)]
        assert "ok" == (await b.runtime.scheduler.run_now(JOB)).outcome  # the export still lists the user
        await b.post_stream(click(20, USER))
        await b.drain()
        assert before == [m for m in b.upstream.messages() if USER in str(m)]
        assert 404 == (await b.client.get(f"/ops/api/users/{USER}", headers=b.ops_headers())).status_code
    finally:
        await b.client.aclose()
        await b.runtime.stop()


def test_users_forget_removes_the_user_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fsbridge users forget USER_ID` removes what names the user at once and says what it removed."""
    import asyncio

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "cli.db"
    monkeypatch.setenv("FSBRIDGE_DATABASE_URL", f"sqlite:///{db}")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "fsbridge.yaml").write_text("{}\n")

    async def receive() -> None:
        b = await start_bridge(tmp_path, database_url=f"sqlite:///{db}")
        try:
            await b.post_segment({"type": "identify", "userId": USER, "messageId": "i-9", "traits": {"email": EMAIL}})
            await b.drain()
        finally:
            await b.client.aclose()
            await b.runtime.stop()

    asyncio.run(receive())
    result = CliRunner().invoke(app, ["users", "forget", f"  {USER} "])
    assert 0 == result.exit_code, result.output
    assert "Forgotten: events=1" in result.output
    with sqlite3.connect(db) as conn:
        assert 0 == conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        assert 1 == conn.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]
    assert [] == [n for n in needles() if n.lower() in sqlite_bytes(db).lower()]
