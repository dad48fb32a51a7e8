"""Message endpoints for outbound traffic: one module per vendor API. A destination turns claimed
deliveries into HTTP calls and reports what came back; the worker decides what that means."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from fsbridge.store import Delivery

RESPONSE_EXCERPT_CHARS = 2048


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one HTTP call that carried one or more deliveries."""

    status_code: int | None
    duration_ms: float
    error: str | None = None
    response_excerpt: str | None = None
    retry_after: str | None = None
    already_done: bool = False  # the status says failure, but the goal is met (deleting a user already gone)


class Destination(Protocol):
    name: str
    dry_run: bool
    concurrency: int
    claim_limit: int
    messages_per_request: int
    max_message_bytes: int | None

    def plan(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        """Group claimed deliveries into the requests that will carry them."""
        ...

    async def send(self, batch: Sequence[Delivery]) -> SendResult:
        """Make one request; never raises for HTTP or network failures."""
        ...

    async def aclose(self) -> None: ...


def excerpt(text: str) -> str:
    return text if len(text) <= RESPONSE_EXCERPT_CHARS else text[:RESPONSE_EXCERPT_CHARS] + "…"


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading)."""
    return round((time.perf_counter() - started) * 1000, 3)


def response_result(response: httpx.Response, started: float, vendor: str, *, already_done: bool = False) -> SendResult:
    """What one HTTP response means, in the shape the worker records."""
    return SendResult(
        response.status_code,
        elapsed_ms(started),
        error=None if response.is_success or already_done else f"{vendor} answered {response.status_code}",
        response_excerpt=excerpt(response.text),
        retry_after=response.headers.get("Retry-After"),
        already_done=already_done,
    )


def transport_failure(exc: httpx.HTTPError, started: float, *, detail: bool = True) -> SendResult:
    """A request that got no response. Without `detail`, only the error type is kept (the URL is secret)."""
    error = f"{type(exc).__name__}: {exc}".rstrip(": ") if detail else type(exc).__name__
    return SendResult(None, elapsed_ms(started), error=error)
