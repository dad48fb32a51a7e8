"""A fake Fullstory for enrichment and job tests: answers GET /sessions/v2 and GET /v2/users/{id}
from what a test stored, runs segment exports (create, operation, results, the gzip NDJSON file at a
pre-signed location), fails on demand (scripted per path), and records every request; anything else
(Segment's /v1/batch, Fullstory's POSTs) is answered by the scripted `FakeUpstream` behaviour."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from fsbridge.testing import FakeUpstream

FILES_HOST = "files.fullstory.test"


def session(n: int, created: Any, device: str = "5557778531805533") -> dict[str, Any]:
    return {
        "userId": device,
        "sessionId": f"{device}:{n}",
        "createdTime": created,
        "fsUrl": f"https://app.fullstory.com/ui/o-1ABC/session/{device}:{n}",
    }


@dataclass
class FakeFullstory(FakeUpstream):
    sessions_by_uid: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sessions_by_email: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    users_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Outcomes (status, or (status, headers), or an exception) served first, per path prefix.
    failures: dict[str, list[Any]] = field(default_factory=dict)
    down: Any = None  # while set, every look-up is answered with this outcome (an outage)
    exports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # segment id: rows
    operation_states: list[str] = field(default_factory=list)  # served first, then COMPLETED
    cut_files: bool = False  # serve each export file cut in half
    raw_files: dict[str, bytes] = field(default_factory=dict)  # segment id: the file's exact bytes
    location: str | None = None  # the results' location, instead of the files host
    stall_files: bool = False  # send the first bytes of each file, then nothing more (a trickle that stops)
    started: list[dict[str, Any]] = field(default_factory=list)  # bodies of POST /segments/v1/exports

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith(("/segments/v1/", "/operations/v1/", "/search/v1/")) or request.url.host == FILES_HOST:
            self.requests.append(request)
            return self._export(request)
        if request.method != "GET" or not (path == "/sessions/v2" or path.startswith("/v2/users/")):
            return super()._handle(request)
        self.requests.append(request)
        queued = next((q for prefix, q in self.failures.items() if path.startswith(prefix) and q), None)
        if queued or self.down is not None:
            outcome = queued.pop(0) if queued else self.down
            if isinstance(outcome, Exception):
                raise outcome
            status, headers = outcome if isinstance(outcome, tuple) else (outcome, {})
            return httpx.Response(status, json={"code": "error"}, headers=headers)
        if path == "/sessions/v2":
            params = request.url.params
            rows = self.sessions_by_uid.get(params.get("uid", ""), []) or self.sessions_by_email.get(
                params.get("email", ""), []
            )
            return httpx.Response(200, json={"sessions": rows})
        user = self.users_by_id.get(path.rsplit("/", 1)[-1])
        if user is None:
            return httpx.Response(404, json={"code": "user_not_found", "message": "user not found"})
        return httpx.Response(200, json=user)

    def _export(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/segments/v1/exports":
            body = orjson.loads(request.content)
            self.started.append(body)
            return httpx.Response(200, json={"operationId": f"op-{len(self.started)}-{body['segmentId']}"})
        if path.startswith("/operations/v1/"):
            operation = path.rsplit("/", 1)[-1]
            state = self.operation_states.pop(0) if self.operation_states else "COMPLETED"
            answer: dict[str, Any] = {"id": operation, "type": "SEARCH_EXPORT", "state": state}
            if state == "COMPLETED":
                answer["results"] = {"searchExportId": f"exp-{operation.removeprefix('op-')}", "expires": "later"}
            if state == "FAILED":
                answer["errorDetails"] = "segment too large"
            return httpx.Response(200, json=answer)
        if path.startswith("/search/v1/exports/"):
            export = path.split("/")[4]
            location = self.location or f"https://{FILES_HOST}/{export}.ndjson.gz"
            return httpx.Response(200, json={"location": location, "expires": "x"})
        segment = path.strip("/").removesuffix(".ndjson.gz").split("-", 2)[2]
        data = (
            self.raw_files[segment]
            if segment in self.raw_files
            else gzip.compress(b"".join(orjson.dumps(row) + b"\n" for row in self.exports.get(segment, [])))
        )
        if self.stall_files:
            return httpx.Response(200, content=_stalled(data[:10]))
        return httpx.Response(200, content=data[: len(data) // 2] if self.cut_files else data)

    def lookups(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET" and r.url.path.startswith(path)]


async def _stalled(first: bytes) -> AsyncIterator[bytes]:
    yield first
    await asyncio.Event().wait()  # never set: the rest never comes
    yield b""
