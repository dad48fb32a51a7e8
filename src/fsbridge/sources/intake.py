"""Receivers for inbound webhooks (Message Endpoint + Idempotent Receiver).

Each request runs the same short path, in this order: the endpoint is configured (else 503), the
body is JSON by content type (415) and within the size limit counted on the bytes received (413),
the signature or token is valid on the raw bytes (401), the body parses (400), the payload has the
source's shape (else it is quarantined: 422), and the raw event is durably stored (else 503).
Only then does it answer 202. Nothing else happens in the request: flows run in the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from fsbridge.clock import Clock
from fsbridge.errors import IntakeError, StoreUnavailableError
from fsbridge.log import get_logger
from fsbridge.settings import Settings
from fsbridge.sources import fullstory
from fsbridge.sources.signatures import SignatureError, verify_bearer, verify_fullstory
from fsbridge.store import NewInboxEvent, NewQuarantined, Store

log = get_logger(__name__)

Identify = Callable[[Any], tuple[str, str | None]]


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": {"code": code, "message": message, **extra}})


class Receiver:
    """Holds what every inbound endpoint needs; one method per endpoint."""

    def __init__(self, settings: Settings, store: Store, clock: Clock, on_stored: Callable[[], None]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.on_stored = on_stored

    async def fullstory_webhook(self, request: Request) -> Response:
        secrets = self.settings.fullstory_webhook_secrets
        if not secrets:
            return _not_configured("FSBRIDGE_FULLSTORY_WEBHOOK_SECRETS", "Fullstory system webhooks")

        def authenticate(body: bytes) -> None:
            verify_fullstory(body, request.headers.get("fullstory-signature"), secrets, self.clock.now())

        return await self._receive(
            request,
            source=fullstory.SYSTEM_SOURCE,
            stream="",
            authenticate=authenticate,
            identify=fullstory.system_webhook_kind,
        )

    async def fullstory_stream(self, request: Request, stream: str) -> Response:
        tokens = self.settings.fullstory_stream_tokens
        secrets = self.settings.fullstory_webhook_secrets
        if not tokens and not secrets:
            return _not_configured("FSBRIDGE_FULLSTORY_STREAM_TOKENS", "Fullstory Streams")

        def authenticate(body: bytes) -> None:
            _either(
                (tokens, lambda: verify_bearer(request.headers.get("authorization"), tokens)),
                (
                    secrets,
                    lambda: verify_fullstory(
                        body, request.headers.get("fullstory-signature"), secrets, self.clock.now()
                    ),
                ),
            )

        def identify(payload: Any) -> tuple[str, str | None]:
            return fullstory.stream_kind(payload), None

        return await self._receive(
            request,
            source=fullstory.STREAM_SOURCE,
            stream=stream,
            authenticate=authenticate,
            identify=identify,
        )

    async def _receive(
        self,
        request: Request,
        *,
        source: str,
        stream: str,
        authenticate: Callable[[bytes], None],
        identify: Identify,
    ) -> Response:
        try:
            _require_json_content_type(request)
            body = await _read_limited(request, self.settings.max_body_bytes)
            try:
                authenticate(body)
            except SignatureError as exc:
                raise IntakeError(401, "unauthenticated", str(exc)) from exc
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise IntakeError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
        except IntakeError as exc:
            log.info("inbox.rejected", source=source, status=exc.status, code=exc.code, reason=exc.message)
            return error_response(exc.status, exc.code, exc.message)

        endpoint = f"{source}/{stream}"
        received_at = self.clock.now()
        try:
            try:
                kind, provider_id = identify(payload)
            except fullstory.ShapeError as exc:
                quarantined = await self.store.quarantine(
                    NewQuarantined(
                        source, stream, fullstory.body_dedup_key(endpoint, body), body, str(exc), received_at
                    )
                )
                log.warning("inbox.quarantined", source=source, id=quarantined.id, reason=str(exc))
                return error_response(422, "unrecognised_payload", str(exc), quarantine_id=quarantined.id)
            dedup_key = provider_id or fullstory.body_dedup_key(endpoint, body)
            accepted = await self.store.accept(NewInboxEvent(source, stream, dedup_key, kind, body, received_at))
        except StoreUnavailableError as exc:
            log.error("inbox.store_unavailable", source=source, error=str(exc))
            return error_response(503, "store_unavailable", "The event could not be stored; retry later.")

        if accepted.duplicate:
            log.info("inbox.duplicate", source=source, id=accepted.id, kind=kind)
            return json_response(202, {"status": "accepted", "id": accepted.id, "duplicate": True})
        log.info("inbox.accepted", source=source, stream=stream, id=accepted.id, kind=kind)
        self.on_stored()
        return json_response(202, {"status": "accepted", "id": accepted.id})


def _not_configured(variable: str, what: str) -> Response:
    return error_response(
        503,
        "not_configured",
        f"{what} are refused until {variable} is set; fsbridge never accepts unauthenticated traffic.",
    )


def _either(*checks: tuple[tuple[SecretStr, ...], Callable[[], None]]) -> None:
    """Pass when any configured check passes; otherwise raise the first failure."""
    failures: list[SignatureError] = []
    for configured, check in checks:
        if not configured:
            continue
        try:
            check()
        except SignatureError as exc:
            failures.append(exc)
        else:
            return
    raise failures[0]


def _require_json_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise IntakeError(415, "unsupported_media_type", "Send the event as Content-Type: application/json.")


async def _read_limited(request: Request, limit: int) -> bytes:
    too_large = IntakeError(413, "payload_too_large", f"The body is larger than the {limit:,}-byte limit.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
