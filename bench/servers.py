"""ASGI apps the benchmark runs beside fsbridge, each under uvicorn on 127.0.0.1:

- `fake_segment`: answers `/v1/batch` (and Fullstory's `/v2/users`) with 200 at once and records each
  message's arrival time (`GET /stats`), so delivered counts and latency are measured where they land;
  it also plays Fullstory's `GET /sessions/v2`, answering after `BENCH_LOOKUP_DELAY_MS` (default 50)
  with one recent session, and counts those look-ups; and Fullstory's segment export (create, an
  operation pending for `BENCH_EXPORT_PENDING_S` seconds, results, and the gzip NDJSON file
  `BENCH_EXPORT_FILE`, streamed in 64 KiB chunks);
- `bare`: the Python ceiling, a raw ASGI app that reads the body and answers 202;
- `fastapi_parse`: the framework floor, FastAPI parsing the same payload with pydantic, then 202;
- `bare_durable`: the ceiling of any durable intake on fsbridge's store, the bare app plus one
  `SQLiteStore.accept` per request (a body hash as dedup key, group commit, WAL, synchronous=FULL),
  with no authentication, no parsing and no checks. Its file is `BENCH_DURABLE_DB`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel

from fsbridge.store import NewInboxEvent


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class FakeSegment:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.messages = 0
        self.requests = 0  # Tracking API batch requests: how many messages each carries is messages / requests
        self.first: float | None = None
        self.last: float | None = None
        self.lookups = 0
        self.export_created: float | None = None
        self.download_started: float | None = None
        self.delay = float(os.environ.get("BENCH_LOOKUP_DELAY_MS", "50")) / 1000

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await _body(receive)
        if scope["path"] == "/stats":
            stats = {"messages": self.messages, "first": self.first, "last": self.last, "arrivals": self.arrivals,
                     "lookups": self.lookups, "download_started": self.download_started,
                     "requests": self.requests}  # fmt: skip
            await _send(send, 200, orjson.dumps(stats))
            return
        if scope["path"] == "/reset":
            self.__init__()  # type: ignore[misc]
            await _send(send, 200, b"{}")
            return
        if scope["path"].startswith(("/segments/v1/", "/operations/v1/", "/search/v1/", "/files/")):
            await self._export(scope, send)
            return
        if scope["path"] == "/sessions/v2":  # a Fullstory look-up: slow, like a real API call
            self.lookups += 1
            await asyncio.sleep(self.delay)
            created = int(time.time()) - 60
            sessions = [{"userId": "1", "sessionId": f"1:{created}", "createdTime": str(created),
                         "fsUrl": f"https://app.fullstory.com/ui/o/session/1:{created}"}]  # fmt: skip
            await _send(send, 200, orjson.dumps({"sessions": sessions}))
            return
        now = time.time()
        if scope["path"] == "/v2/users":  # a Fullstory upsert: one user per request
            self.messages += 1
            self.first = self.first or now
            self.last = now
            await _send(send, 200, b'{"id":"1"}')
            return
        batch = orjson.loads(body)["batch"]
        self.requests += 1
        self.messages += len(batch)
        self.first = self.first or now
        self.last = now
        for message in batch:
            properties = message.get("properties", {})
            mark = properties.get("element_text") or properties.get("trigger_message_id") or ""
            if mark.startswith("lat-"):
                self.arrivals[mark] = now
        await _send(send, 200, b'{"success":true}')

    async def _export(self, scope: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/segments/v1/exports":
            self.export_created = time.time()
            await _send(send, 200, b'{"operationId":"op-1"}')
        elif path.startswith("/operations/v1/"):
            pending = float(os.environ.get("BENCH_EXPORT_PENDING_S", "0"))
            done = self.export_created is not None and time.time() - self.export_created >= pending
            answer = {"state": "COMPLETED", "results": {"searchExportId": "exp-1"}} if done else {"state": "PENDING"}
            await _send(send, 200, orjson.dumps(answer))
        elif path.startswith("/search/v1/"):
            host = dict(scope["headers"]).get(b"host", b"127.0.0.1").decode()
            await _send(send, 200, orjson.dumps({"location": f"http://{host}/files/export.ndjson.gz"}))
        else:
            self.download_started = time.time()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/gzip")]})  # fmt: skip
            with open(os.environ["BENCH_EXPORT_FILE"], "rb") as file:  # noqa: ASYNC230 - a local file, 64 KiB reads
                while chunk := file.read(65536):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


fake_segment = FakeSegment()


async def bare(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await _body(receive)
    await _send(send, 202, b'{"status":"accepted","id":"x"}')


class BareDurable:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            from fsbridge.store.sqlite import SQLiteStore

            path = os.environ.get("BENCH_DURABLE_DB") or os.path.join(tempfile.mkdtemp(), "durable.db")
            self.store = SQLiteStore(path)
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.store.open()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await self.store.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await _body(receive)
        if scope["method"] != "POST":  # the readiness probe
            await _send(send, 200, b"{}")
            return
        key = hashlib.sha256(body).hexdigest()
        accepted = await self.store.accept(NewInboxEvent("bench", "", key, "bench", body, time.time()))
        await _send(send, 202, b'{"status":"accepted","id":"%s"}' % accepted.id.encode())


bare_durable = BareDurable()


class Event(BaseModel):
    event_type: str
    event_time: str | None = None
    url: str | None = None
    target_text: str | None = None
    element_name: str | None = None
    page_name: str | None = None


class Session(BaseModel):
    session_id: str


class User(BaseModel):
    user_id: str | None = None
    user_email: str | None = None
    user_display_name: str | None = None


class StreamPayload(BaseModel):
    event: Event
    session: Session
    user: User
    session_url: str | None = None


fastapi_parse = FastAPI()


@fastapi_parse.post("/webhooks/fullstory/streams/{stream}", status_code=202)
async def receive(stream: str, payload: StreamPayload) -> dict[str, str]:
    return {"status": "accepted", "id": "x"}
