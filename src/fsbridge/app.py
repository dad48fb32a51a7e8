"""The FastAPI application: inbound webhook endpoints, health, and the ops API, over a `Runtime`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from fsbridge import __version__
from fsbridge.errors import IntakeError
from fsbridge.ops.access import GuessLimiter
from fsbridge.ops.api import health, ops
from fsbridge.ops.dashboard import router as dashboard
from fsbridge.ops.middleware import RequestContext
from fsbridge.ops.search import search
from fsbridge.replies import error_response
from fsbridge.runtime import Runtime
from fsbridge.sources.fast_path import WebhookFastPath

WEBHOOK_RESPONSES: dict[int | str, dict[str, str]] = {
    202: {"description": "Stored durably (`duplicate: true` when it was stored before)"},
    400: {"description": "The body is not JSON"},
    401: {"description": "Missing, malformed or wrong signature or token, or a stale timestamp"},
    413: {"description": "The body is over FSBRIDGE_MAX_BODY_BYTES"},
    415: {"description": "Content-Type is not application/json"},
    422: {"description": "Authenticated JSON of the wrong shape: kept in quarantine"},
    503: {"description": "Not configured, or the store cannot take the event: retry"},
}
JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}}


def create_app(runtime: Runtime, *, manage_runtime: bool = True, trusted_proxies: str | None = None) -> ASGIApp:
    """The ASGI app. With `manage_runtime`, the app's lifespan starts and stops the runtime. With
    `trusted_proxies` (uvicorn's `FORWARDED_ALLOW_IPS`), the dashboard, ops API and metrics take
    the scheme and client address from those proxies' `X-Forwarded-*` headers; the webhook fast
    path reads neither, so it skips that middleware (uvicorn would put it in front of every
    request; together with the per-request deadlines it cost intake a measured 4 µs a request)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.stop()

    app = FastAPI(
        title="fsbridge",
        version=__version__,
        summary="Fullstory ⇄ Segment bridge: durable webhook intake, declarative flows, retrying delivery.",
        lifespan=lifespan,
        # The interactive docs would be an unauthenticated page; /openapi.json describes everything.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.guesses = GuessLimiter()
    if runtime.role in ("all", "api"):
        _webhooks(app, runtime)
    app.include_router(health)
    app.include_router(ops)
    app.include_router(search)
    app.include_router(dashboard)

    @app.exception_handler(IntakeError)
    async def intake_error(_: Request, exc: IntakeError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return error_response(422, "invalid_request", f"{where}: {first['msg']}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    app.add_middleware(RequestContext)
    served: ASGIApp = app
    if trusted_proxies is not None:
        # uvicorn types an ASGI app more narrowly than Starlette does; it is the same protocol.
        served = cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted_proxies))
    if runtime.role in ("all", "api"):
        return WebhookFastPath(served, runtime.receiver)
    return served


def _webhooks(app: FastAPI, runtime: Runtime) -> None:
    """The inbound endpoints (roles all and api; a worker-only replica takes no webhooks)."""
    receiver = runtime.receiver

    @app.post(
        "/webhooks/fullstory",
        status_code=202,
        responses=WEBHOOK_RESPONSES,
        openapi_extra=JSON_BODY,
        tags=["webhooks"],
        summary="Fullstory system webhooks (Fullstory-Signature)",
    )
    async def fullstory_webhook(request: Request) -> Response:
        return (await receiver.fullstory_webhook(request.headers, request.receive)).response()

    @app.post(
        "/webhooks/fullstory/streams/{stream}",
        status_code=202,
        responses=WEBHOOK_RESPONSES,
        openapi_extra=JSON_BODY,
        tags=["webhooks"],
        summary="Fullstory Streams (Authorization: Bearer, or Fullstory-Signature)",
    )
    async def fullstory_stream(request: Request, stream: str) -> Response:
        return (await receiver.fullstory_stream(request.headers, request.receive, stream)).response()

    @app.post(
        "/webhooks/segment",
        status_code=202,
        responses=WEBHOOK_RESPONSES,
        openapi_extra=JSON_BODY,
        tags=["webhooks"],
        summary="Segment Webhooks destination (classic or Actions) or destination function (X-Signature or Bearer)",
    )
    async def segment_webhook(request: Request) -> Response:
        return (await receiver.segment_webhook(request.headers, request.receive)).response()
