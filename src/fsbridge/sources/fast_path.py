"""The webhook fast path: POSTs to /webhooks/... go straight to the receiver on the raw ASGI
request, skipping FastAPI's routing, dependency and middleware stack and Starlette's request and
response objects, which together would cost more than storing the event. Everything else (and
/openapi.json, which still documents these routes) goes to the FastAPI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from fsbridge.log import REQUEST_ID, get_logger, request_id_for
from fsbridge.replies import Reply, error_reply
from fsbridge.sources.intake import Headers, Receiver, headers_of

STREAMS = "/webhooks/fullstory/streams/"
CONTENT_TYPE = (b"content-type", b"application/json")

log = get_logger("fsbridge.http")


class WebhookFastPath:
    def __init__(self, app: ASGIApp, receiver: Receiver) -> None:
        self.app = app
        self.receiver = receiver
        self.exact: dict[str, Callable[[Headers, Receive], Awaitable[Reply]]] = {
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
        headers = headers_of(scope["headers"])
        request_id = request_id_for(headers.get("x-request-id"))
        token = REQUEST_ID.set(request_id)
        try:
            reply = await (
                handler(headers, receive) if handler else self.receiver.fullstory_stream(headers, receive, stream or "")
            )
        except Exception:  # never a bare 500 without the contract's error body
            log.exception("http.unhandled", path=path)
            reply = error_reply(500, "internal_error", "fsbridge failed on this request; it is logged.")
        finally:
            REQUEST_ID.reset(token)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    CONTENT_TYPE,
                    (b"content-length", b"%d" % len(reply.body)),
                    (b"x-request-id", request_id.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})
