"""Test helpers shipped with the package: a scripted fake upstream (an `httpx.MockTransport`) that
records what fsbridge sends, builders for signed inbound requests, and a free local port for servers
started by end-to-end tests and benchmarks."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from fsbridge.sources.signatures import sign_fullstory


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


Scripted = int | tuple[int, dict[str, str]] | Exception | httpx.Response


@dataclass
class FakeUpstream:
    """Answers each request with the next scripted outcome (then `default`), recording every request."""

    script: list[Scripted] = field(default_factory=list)
    default: Scripted = 200
    requests: list[httpx.Request] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.script.pop(0) if self.script else self.default
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, httpx.Response):
            return outcome
        status, headers = outcome if isinstance(outcome, tuple) else (outcome, {})
        body = {"success": True} if status < 300 else {"code": "error", "message": f"scripted {status}"}
        return httpx.Response(status, json=body, headers=headers)

    def batches(self) -> list[list[dict[str, Any]]]:
        """The `batch` arrays of every Segment /v1/batch request, in order."""
        return [orjson.loads(r.content)["batch"] for r in self.requests if r.url.path.endswith("/v1/batch")]

    def fullstory(self, method: str | None = None) -> list[httpx.Request]:
        """The requests sent to Fullstory's /v2/users, in order."""
        return [r for r in self.requests if r.url.path == "/v2/users" and method in (None, r.method)]

    def messages(self) -> list[dict[str, Any]]:
        return [message for batch in self.batches() for message in batch]

    def script_next(self, outcomes: Iterable[Scripted]) -> None:
        self.script.extend(outcomes)


def fullstory_signed_headers(body: bytes, secret: str, timestamp: int, org_id: str = "o-TEST") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Fullstory-Signature": sign_fullstory(body, secret, org_id, timestamp),
    }


def bearer_headers(token: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
