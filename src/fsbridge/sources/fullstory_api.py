"""The `fullstory_api` source: what scheduled jobs fetch from Fullstory's API enters the inbox as
events of this source, so dedup, flows, replay and event stories apply to it as to webhooks.

- `segment.membership`: a user entered or left a Fullstory segment exported as an audience
  (`{"audience_key", "audience_name", "segment_id", "user_id", "member", "event", "run"}`).
- `session.started`: a new session of a high-value user (`{"user_id", "session_id",
  "session_url", "started_at", "name", "email", "company", "plan"}`).

It also holds the poller the segment job uses: a segment export created, its operation polled, and
the gzip NDJSON file it produced read as a stream (memory does not grow with the segment)."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson

from fsbridge.targets.fullstory_lookups import FullstoryApi, LookupRefusedError, LookupUnavailableError

SOURCE = "fullstory_api"
MEMBERSHIP = "segment.membership"
SESSION_STARTED = "session.started"
KINDS = (MEMBERSHIP, SESSION_STARTED)


class ExportFailedError(Exception):
    """The export could not be made or read; the run changes nothing."""


def kind_of(payload: Any) -> str:
    """A stored `fullstory_api` event's kind (golden examples and `test-mapping` rebuild it)."""
    if isinstance(payload, dict) and "audience_key" in payload:
        return MEMBERSHIP
    return SESSION_STARTED


class SegmentExports:
    """Fullstory's segment export: `POST /segments/v1/exports`, `GET /operations/v1/{id}` until
    COMPLETED (FAILED fails the run), `GET /search/v1/exports/{id}/results` for the file's
    location, and the file itself (pre-signed: no Authorization header goes with it)."""

    def __init__(
        self,
        api: FullstoryApi,
        download: httpx.AsyncClient,
        *,
        wait_turn: Callable[[], Awaitable[None]],
        poll_every: float,
        max_wait: float,
    ) -> None:
        self.api = api
        self.download = download
        self.wait_turn = wait_turn  # a token of the fullstory destination's rate limit per call
        self.poll_every = poll_every
        self.max_wait = max_wait

    async def start(self, segment_id: str) -> str:
        await self.wait_turn()
        body = {"segmentId": segment_id, "type": "TYPE_INDIVIDUAL", "format": "FORMAT_NDJSON", "timeRange": {}}
        answer = await self._call(self.api.post("/segments/v1/exports", body))
        operation = answer.get("operationId") if isinstance(answer, dict) else None
        if not isinstance(operation, str) or not operation:
            raise ExportFailedError(f"the export of segment {segment_id} did not start (no operationId)")
        return operation

    async def wait_for(self, operation: str) -> str:
        """The searchExportId of a completed export operation."""
        deadline = time.monotonic() + self.max_wait
        while True:
            await self.wait_turn()
            answer = await self._call(self.api.get(f"/operations/v1/{operation}"))
            state = answer.get("state") if isinstance(answer, dict) else None
            if state == "COMPLETED":
                export = (answer.get("results") or {}).get("searchExportId")
                if not isinstance(export, str) or not export:
                    raise ExportFailedError(f"operation {operation} completed without a searchExportId")
                return export
            if state == "FAILED":
                details = answer.get("errorDetails") or "no details"
                raise ExportFailedError(f"operation {operation} FAILED: {str(details)[:200]}")
            if time.monotonic() >= deadline:
                raise ExportFailedError(f"operation {operation} was not done after {self.max_wait:g} s")
            await asyncio.sleep(self.poll_every)

    async def rows(self, export: str) -> AsyncIterator[dict[str, Any]]:
        """Every row of the export's file, read as it arrives. A file cut short fails the run."""
        await self.wait_turn()
        answer = await self._call(self.api.get(f"/search/v1/exports/{export}/results"))
        location = answer.get("location") if isinstance(answer, dict) else None
        if not isinstance(location, str) or not location:
            raise ExportFailedError(f"export {export} has no location")
        try:
            async with self.download.stream("GET", location) as response:
                if response.status_code != 200:
                    raise ExportFailedError(f"downloading export {export} answered {response.status_code}")
                async for row in _ndjson(response.aiter_bytes()):
                    yield row
        except httpx.HTTPError as exc:
            raise ExportFailedError(f"downloading export {export} failed: {type(exc).__name__}") from exc

    @staticmethod
    async def _call(request: Awaitable[Any]) -> Any:
        try:
            answer = await request
        except LookupUnavailableError as exc:
            raise ExportFailedError(f"Fullstory did not answer: {exc}") from exc
        except LookupRefusedError as exc:
            raise ExportFailedError(str(exc)) from exc
        if answer is None:
            raise ExportFailedError("Fullstory refused the request (404)")
        return answer


async def _ndjson(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Rows of a gzip (or plain) NDJSON stream; lines that are not JSON objects are skipped."""
    inflate: Any = None
    pending = b""
    started = False
    async for chunk in chunks:
        if not started:
            started = True
            if chunk[:2] == b"\x1f\x8b":
                inflate = zlib.decompressobj(wbits=31)
        data = inflate.decompress(chunk) if inflate is not None else chunk
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if (row := _row(line)) is not None:
                yield row
    if inflate is not None:
        pending += inflate.flush()
        if not inflate.eof:
            raise ExportFailedError("the export file ends before its gzip stream does (cut short)")
    if (row := _row(pending)) is not None:
        yield row


def _row(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
