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
import ipaddress
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from fsbridge.bounds import quote
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
        max_export_bytes: int = 2 * 1024**3,
    ) -> None:
        self.api = api
        self.download = download
        self.wait_turn = wait_turn  # a token of the fullstory destination's rate limit per call
        self.poll_every = poll_every
        self.max_wait = max_wait
        self.max_export_bytes = max_export_bytes

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
        """Every row of the export's file, read as it arrives. Anything but a whole gzip NDJSON file,
        read within `max_wait`, fails the run: a file cut short, not gzip, with a line over 1 MiB or
        that is not a JSON object, inflating past `max_export_bytes`, or at a location that is not
        https (or http to a loopback address)."""
        await self.wait_turn()
        answer = await self._call(self.api.get(f"/search/v1/exports/{export}/results"))
        location = answer.get("location") if isinstance(answer, dict) else None
        if not isinstance(location, str) or not location:
            raise ExportFailedError(f"export {export} has no location")
        if (problem := location_problem(location)) is not None:
            raise ExportFailedError(f"export {export}'s location {problem}")
        deadline = asyncio.get_running_loop().time() + self.max_wait
        reader = NdjsonGzip(self.max_export_bytes)
        try:
            async with self.download.stream("GET", location) as response:
                if response.status_code != 200:
                    raise ExportFailedError(f"downloading export {export} answered {response.status_code}")
                chunks = response.aiter_bytes()
                while True:
                    remaining = deadline - asyncio.get_running_loop().time()
                    try:
                        chunk = await asyncio.wait_for(anext(chunks), max(remaining, 0.001))
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise ExportFailedError(
                            f"downloading export {export} took longer than max_wait ({self.max_wait:g} s)"
                        ) from None
                    for row in reader.feed(chunk):
                        yield row
                    await asyncio.sleep(0)  # a chunk that inflates to many rows never holds the loop
        except httpx.HTTPError as exc:
            raise ExportFailedError(f"downloading export {export} failed: {type(exc).__name__}") from exc
        for row in reader.end():
            yield row

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


def location_problem(location: str) -> str | None:
    """Why a results `location` is not fetched (None: it may be): only https, or http to a
    loopback address (tests, a local proxy), and never with credentials in it."""
    parts = urlsplit(location)
    host = parts.hostname or ""
    if parts.username or parts.password:
        return "carries credentials"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and _is_loopback(host):
        return None
    return f"is not https (or http to a loopback address): {quote(location)}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


MAX_LINE_BYTES = 1024 * 1024
INFLATE_STEP = 256 * 1024  # inflated at most this much at a time: a bomb never lands in memory whole


class NdjsonGzip:
    """A gzip NDJSON file read incrementally and strictly: rows as whole lines arrive; the gzip
    trailer (its CRC and length) must end the file; at most `max_bytes` inflated in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._inflate: Any = None
        self._started = False
        self._pending = b""
        self._inflated = 0
        self._line = 0

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if not chunk:
            return []
        if not self._started:
            self._started = True
            if chunk[:2] != b"\x1f\x8b":
                raise ExportFailedError("the export file is not gzip (gzip NDJSON is expected)")
            self._inflate = zlib.decompressobj(wbits=31)
        rows: list[dict[str, Any]] = []
        data = chunk
        while True:
            if data and self._inflate.eof:  # another gzip member follows: concatenated members are one file
                self._inflate = zlib.decompressobj(wbits=31)
            try:
                out = self._inflate.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                raise ExportFailedError(f"the export file is not valid gzip ({exc})") from None
            data = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
            self._inflated += len(out)
            if self._inflated > self.max_bytes:
                raise ExportFailedError(f"the export file inflates past max_export_bytes ({self.max_bytes:,} bytes)")
            rows += self._lines(out)
            if not data and (not out or self._inflate.eof):  # all input read and nothing held back
                return rows

    def end(self) -> list[dict[str, Any]]:
        if not self._started:
            raise ExportFailedError("the export file is empty (gzip NDJSON is expected)")
        if not self._inflate.eof:
            raise ExportFailedError("the export file ends before its gzip stream does (cut short)")
        return self._lines(b"\n")

    def _lines(self, data: bytes) -> list[dict[str, Any]]:
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_LINE_BYTES:
            raise ExportFailedError(f"line {self._line + 1} of the export file is longer than 1 MiB")
        rows = []
        for line in lines:
            self._line += 1
            if len(line) > MAX_LINE_BYTES:
                raise ExportFailedError(f"line {self._line} of the export file is longer than 1 MiB")
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                raise ExportFailedError(f"line {self._line} of the export file is not a JSON object")
            rows.append(value)
        return rows
