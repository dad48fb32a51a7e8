"""Receivers for inbound webhooks (Message Endpoint + Idempotent Receiver).

Each request runs the same short path, in this order: the endpoint is configured (else 503), the
body is JSON by content type (415) and within the size limit counted on the bytes received (413),
the signature or token is valid on the raw bytes (401), the body parses (400), the payload has the
source's shape (else it is quarantined: 422), and the raw event is durably stored (else 503).
Only then does it answer 202. Nothing else happens in the request: flows run in the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from fsbridge.clock import Clock
from fsbridge.errors import IntakeError, StoreUnavailableError
from fsbridge.log import get_logger
from fsbridge.ops.metrics import Metrics
from fsbridge.settings import Settings
from fsbridge.sources import fullstory, segment
from fsbridge.sources.fullstory import ShapeError
from fsbridge.sources.signatures import SignatureError, verify_bearer, verify_fullstory, verify_segment
from fsbridge.store import NewInboxEvent, NewQuarantined, Store

log = get_logger(__name__)


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": {"code": code, "message": message, **extra}})


@dataclass(frozen=True, slots=True)
class Item:
    """One event of a request: its stored bytes and identity, or why it is quarantined."""

    body: bytes
    kind: str | None = None
    provider_id: str | None = None
    error: str | None = None


# (parsed payload, raw body, authentication method that passed) -> the request's events
Split = Callable[[Any, bytes, str], list[Item]]


def single(identify: Callable[[Any], tuple[str, str | None]]) -> Split:
    """A request that carries exactly one event."""

    def split(payload: Any, body: bytes, _method: str) -> list[Item]:
        try:
            kind, provider_id = identify(payload)
        except ShapeError as exc:
            return [Item(body, error=str(exc))]
        return [Item(body, kind, provider_id)]

    return split


def segment_messages(payload: Any, body: bytes, method: str) -> list[Item]:
    """A Segment request: one message, or a Webhooks (Actions) array of them."""
    try:
        messages = segment.messages_of(payload)
    except ShapeError as exc:
        return [Item(body, error=str(exc))]
    if len(messages) > 1 and method != "token":
        raise IntakeError(
            401,
            "unauthenticated",
            "Segment signs only the first message of a batch, so the others cannot be verified; "
            "send batches with Authorization: Bearer <one of FSBRIDGE_SEGMENT_WEBHOOK_TOKENS>.",
        )
    items = []
    for message in messages:
        raw = body if len(messages) == 1 else orjson.dumps(message)
        try:
            kind, provider_id = segment.message_kind(message)
        except ShapeError as exc:
            items.append(Item(raw, error=str(exc)))
        else:
            items.append(Item(raw, kind, provider_id))
    return items


class Receiver:
    """Holds what every inbound endpoint needs; one method per endpoint."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        on_stored: Callable[[], None],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.on_stored = on_stored
        self.metrics = metrics or Metrics()
        self._counters: dict[str, tuple[Any, Any, Any]] = {}

    async def fullstory_webhook(self, request: Request) -> Response:
        secrets = self.settings.fullstory_webhook_secrets
        if not secrets:
            return _not_configured("FSBRIDGE_FULLSTORY_WEBHOOK_SECRETS", "Fullstory system webhooks")

        def authenticate(body: bytes) -> str:
            verify_fullstory(body, request.headers.get("fullstory-signature"), secrets, self.clock.now())
            return "signature"

        return await self._receive(
            request,
            source=fullstory.SYSTEM_SOURCE,
            stream="",
            authenticate=authenticate,
            split=single(fullstory.system_webhook_kind),
        )

    async def fullstory_stream(self, request: Request, stream: str) -> Response:
        tokens = self.settings.fullstory_stream_tokens
        secrets = self.settings.fullstory_webhook_secrets
        if not tokens and not secrets:
            return _not_configured("FSBRIDGE_FULLSTORY_STREAM_TOKENS", "Fullstory Streams")

        def authenticate(body: bytes) -> str:
            return _either(
                ("token", tokens, lambda: verify_bearer(request.headers.get("authorization"), tokens)),
                (
                    "signature",
                    secrets,
                    lambda: verify_fullstory(
                        body, request.headers.get("fullstory-signature"), secrets, self.clock.now()
                    ),
                ),
            )

        def identify(payload: Any) -> tuple[str, str | None]:
            return fullstory.stream_kind(payload), None

        return await self._receive(
            request, source=fullstory.STREAM_SOURCE, stream=stream, authenticate=authenticate, split=single(identify)
        )

    async def segment_webhook(self, request: Request) -> Response:
        tokens = self.settings.segment_webhook_tokens
        secrets = self.settings.segment_webhook_secrets
        if not tokens and not secrets:
            return _not_configured(
                "FSBRIDGE_SEGMENT_WEBHOOK_SECRETS (or FSBRIDGE_SEGMENT_WEBHOOK_TOKENS)", "Segment webhooks"
            )

        def authenticate(body: bytes) -> str:
            return _either(
                ("token", tokens, lambda: verify_bearer(request.headers.get("authorization"), tokens)),
                ("signature", secrets, lambda: verify_segment(body, request.headers.get("x-signature"), secrets)),
            )

        return await self._receive(
            request, source=segment.SOURCE, stream="", authenticate=authenticate, split=segment_messages
        )

    async def _receive(
        self,
        request: Request,
        *,
        source: str,
        stream: str,
        authenticate: Callable[[bytes], str],
        split: Split,
    ) -> Response:
        try:
            _require_json_content_type(request)
            body = await _read_limited(request, self.settings.max_body_bytes)
            try:
                method = authenticate(body)
            except SignatureError as exc:
                raise IntakeError(401, "unauthenticated", str(exc)) from exc
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise IntakeError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
            items = split(payload, body, method)
        except IntakeError as exc:
            log.info("inbox.rejected", source=source, status=exc.status, code=exc.code, reason=exc.message)
            return error_response(exc.status, exc.code, exc.message)

        endpoint = f"{source}/{stream}"
        received_at = self.clock.now()
        try:
            if len(items) == 1:
                stored = [await self._store(items[0], source, stream, endpoint, received_at)]
            else:
                stored = await asyncio.gather(
                    *(self._store(item, source, stream, endpoint, received_at) for item in items)
                )
        except StoreUnavailableError as exc:
            log.error("inbox.store_unavailable", source=source, error=str(exc))
            return error_response(503, "store_unavailable", "The event could not be stored; retry later.")
        counters = self._counters.get(source)
        if counters is None:
            metrics = self.metrics
            counters = self._counters[source] = (
                metrics.received.labels(source),
                metrics.duplicates.labels(source),
                metrics.quarantined.labels(source),
            )
        received, duplicates, quarantined = counters
        for outcome, _ in stored:
            received.inc()
            if outcome == "duplicate":
                duplicates.inc()
            elif outcome == "quarantined":
                quarantined.inc()
        if any(outcome == "accepted" for outcome, _ in stored):
            self.on_stored()
        return _response(items, stored)

    async def _store(self, item: Item, source: str, stream: str, endpoint: str, received_at: float) -> tuple[str, str]:
        if item.kind is None:
            key = fullstory.body_dedup_key(endpoint, item.body)
            quarantined = await self.store.quarantine(
                NewQuarantined(source, stream, key, item.body, item.error or "unrecognised", received_at)
            )
            log.warning("inbox.quarantined", source=source, id=quarantined.id, reason=item.error)
            return "quarantined", quarantined.id
        dedup_key = item.provider_id or fullstory.body_dedup_key(endpoint, item.body)
        accepted = await self.store.accept(NewInboxEvent(source, stream, dedup_key, item.kind, item.body, received_at))
        outcome = "duplicate" if accepted.duplicate else "accepted"
        # One line per event would cost more than storing it; /ops and the metrics count every one.
        log.debug(f"inbox.{outcome}", source=source, stream=stream, id=accepted.id, kind=item.kind)
        return outcome, accepted.id


def _response(items: list[Item], stored: list[tuple[str, str]]) -> Response:
    quarantined = [
        (item, event_id) for item, (outcome, event_id) in zip(items, stored, strict=True) if outcome == "quarantined"
    ]
    kept = [event_id for outcome, event_id in stored if outcome != "quarantined"]
    duplicates = sum(1 for outcome, _ in stored if outcome == "duplicate")
    if quarantined:
        first_error = quarantined[0][0].error or "unrecognised payload"
        extra: dict[str, Any] = {"quarantine_id": quarantined[0][1]}
        if len(items) > 1:
            extra |= {"quarantine_ids": [q for _, q in quarantined], "accepted_ids": kept}
            first_error = f"{len(quarantined)} of {len(items)} messages were kept in quarantine: {first_error}"
        return error_response(422, "unrecognised_payload", first_error, **extra)
    body: dict[str, Any] = {"status": "accepted", "id": kept[0]}
    if len(items) > 1:
        body |= {"ids": kept, "duplicates": duplicates}
    if duplicates == len(items):
        body["duplicate"] = True
    return json_response(202, body)


def _not_configured(variable: str, what: str) -> Response:
    return error_response(
        503,
        "not_configured",
        f"{what} are refused until {variable} is set; fsbridge never accepts unauthenticated traffic.",
    )


def _either(*checks: tuple[str, tuple[SecretStr, ...], Callable[[], None]]) -> str:
    """The name of the first configured check that passes; otherwise raise the first failure."""
    failures: list[SignatureError] = []
    for name, configured, check in checks:
        if not configured:
            continue
        try:
            check()
        except SignatureError as exc:
            failures.append(exc)
        else:
            return name
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
