"""Segment Tracking API target: the request models fsbridge sends, and the `/v1/batch` client.

Messages are rendered once at dispatch (with a stable messageId) and stored as JSON bytes; this
client only concatenates them into batches within Segment's limits: 32 KiB a message, 500 KiB
and 2,500 messages a request. Authentication is HTTP Basic with the write key as user name.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from fsbridge import __version__
from fsbridge.bounds import quote
from fsbridge.engine.mapping import as_iso_timestamp
from fsbridge.envelope import MISSING
from fsbridge.store import Delivery
from fsbridge.targets import SendResult, response_result, transport_failure

NAME = "segment"
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
LIBRARY_NAME = "fsbridge"
LIBRARY = {"name": LIBRARY_NAME, "version": __version__}


class _SegmentMessage(BaseModel):
    """Fields every Spec message carries, in the shape segment-analytics-python produces."""

    model_config = ConfigDict(extra="forbid")

    userId: str | None = None  # noqa: N815 - Segment's field names
    anonymousId: str | None = None  # noqa: N815
    timestamp: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    messageId: str = Field(min_length=1, max_length=100)  # noqa: N815

    @field_validator("userId", "anonymousId", mode="before")
    @classmethod
    def _stringify_ids(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("timestamp")
    @classmethod
    def _iso_timestamp(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normalised = as_iso_timestamp(value)
        if normalised is MISSING:
            msg = f"timestamp {quote(value)} is not an ISO-8601 date-time"
            raise ValueError(msg)
        return str(normalised)

    @model_validator(mode="after")
    def _needs_an_identity(self) -> _SegmentMessage:
        if not self.userId and not self.anonymousId:
            msg = "Segment drops a message without userId or anonymousId; the mapping produced neither"
            raise ValueError(msg)
        self.context = {**self.context, "library": LIBRARY}
        return self


class SegmentTrack(_SegmentMessage):
    type: Literal["track"] = "track"
    event: str = Field(min_length=1)
    properties: dict[str, Any] = Field(default_factory=dict)


class SegmentIdentify(_SegmentMessage):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class SegmentDestination:
    """Sends rendered Segment messages to `POST {api_url}/v1/batch`."""

    name = NAME
    max_message_bytes: int | None = MAX_MESSAGE_BYTES

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        write_key: SecretStr | None,
        dry_run: bool,
        max_batch_messages: int = MAX_BATCH_MESSAGES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        concurrency: int = 2,
    ) -> None:
        self._client = client
        self._url = f"{api_url.rstrip('/')}/v1/batch"
        self._auth = (
            "Basic " + base64.b64encode(f"{write_key.get_secret_value()}:".encode()).decode()
            if write_key is not None
            else None
        )
        self.dry_run = dry_run
        self.max_batch_messages = min(max_batch_messages, MAX_BATCH_MESSAGES)
        self.max_batch_bytes = min(max_batch_bytes, MAX_BATCH_BYTES)
        self.concurrency = concurrency
        self.messages_per_request = self.max_batch_messages
        self.claim_limit = self.max_batch_messages * concurrency

    def plan(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        """Pack deliveries into batches under both limits; `send_alone` ones travel by themselves."""
        batches: list[list[Delivery]] = []
        current: list[Delivery] = []
        size = len(_envelope_bytes([]))
        for delivery in deliveries:
            if delivery.send_alone:
                batches.append([delivery])
                continue
            extra = len(delivery.body) + (1 if current else 0)
            if current and (len(current) >= self.max_batch_messages or size + extra > self.max_batch_bytes):
                batches.append(current)
                current, size = [], len(_envelope_bytes([]))
                extra = len(delivery.body)
            current.append(delivery)
            size += extra
        if current:
            batches.append(current)
        return batches

    async def send(self, batch: Sequence[Delivery]) -> SendResult:
        headers = {"Content-Type": "application/json", "User-Agent": f"fsbridge/{__version__}"}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        started = time.perf_counter()
        try:
            response = await self._client.post(self._url, content=_envelope_bytes(batch), headers=headers)
        except httpx.HTTPError as exc:
            return transport_failure(exc, started)
        return response_result(response, started, "Segment")

    async def aclose(self) -> None:
        await self._client.aclose()


def _envelope_bytes(batch: Sequence[Delivery]) -> bytes:
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    return b'{"batch":[' + b",".join(d.body for d in batch) + b'],"sentAt":"' + sent_at.encode() + b'"}'
