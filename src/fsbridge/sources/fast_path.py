"""The webhook fast path: POSTs to /webhooks/... go straight to the receiver, skipping FastAPI's
routing, dependency and middleware stack, which would otherwise cost more than storing the event.
Everything else (and /openapi.json, which still documents these routes) goes to the FastAPI app."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fsbridge.sources.intake import Receiver, error_response

STREAMS = "/webhooks/fullstory/streams/"


class WebhookFastPath:
    def __init__(self, app: ASGIApp, receiver: Receiver) -> None:
        self.app = app
        self.receiver = receiver
        self.exact: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "/webhooks/fullstory": receiver.fullstory_webhook,
            "/webhooks/segment": receiver.segment_webhook,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/webhooks/") or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        handler = self.exact.get(path)
        stream = path[len(STREAMS) :] if path.startswith(STREAMS) else None
        if handler is None and (not stream or "/" in stream):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            request = Request(scope, receive)
            try:
                response = await (
                    handler(request) if handler else self.receiver.fullstory_stream(request, stream or "")
                )
            except Exception:  # never a bare 500 without the contract's error body
                structlog.get_logger("fsbridge.http").exception("http.unhandled", path=path)
                response = error_response(500, "internal_error", "fsbridge failed on this request; it is logged.")
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        # Sent straight to the server: no Response.__call__ and no wrapped send.
        headers = [*response.raw_headers, (b"x-request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


_PREFIX = secrets.token_hex(6)
_COUNTER = itertools.count(1)


def _request_id(scope: Scope) -> str:
    # A random per-process prefix and a counter: unique, and far cheaper than a uuid4 per request.
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            text: str = value.decode("latin-1")[:128]
            return text
    return f"{_PREFIX}{next(_COUNTER):010x}"
