"""Receivers for inbound webhooks (Message Endpoint + Idempotent Receiver).

Each request runs the same short path, in this order: the endpoint is configured (else 503), the
body is JSON by content type (415) and within the size limit counted on the bytes received (413),
the signature or token is valid on the raw bytes (401), the body parses (400), the payload has the
source's shape (else it is quarantined: 422), and the raw event is durably stored (else 503).
Only then does it answer 202. Nothing else happens in the request: flows run in the worker.

The receiver works on the ASGI request as it arrives (lower-cased headers and the `receive`
callable) and answers a `Reply`, so the webhook fast path never builds a Starlette request or
response: at thousands of requests a second those objects cost more than storing the event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from pydantic import SecretStr
from starlette.types import Receive

from fsbridge.clock import Clock
from fsbridge.errors import IntakeError, StoreUnavailableError
from fsbridge.log import get_logger
from fsbridge.ops.metrics import Metrics
from fsbridge.replies import Reply, error_reply, json_reply
from fsbridge.settings import Settings
from fsbridge.sources import fullstory, segment
from fsbridge.sources.signatures import SignatureError, verify_bearer, verify_fullstory, verify_segment
from fsbridge.sources.splitting import Item, Split, segment_messages, stream_event_items, system_webhook_items
from fsbridge.store import NewInboxEvent, NewQuarantined
from fsbridge.store.intake import IntakeStore

log = get_logger(__name__)

Headers = Mapping[str, str]  # lower-cased names, as ASGI gives them


def headers_of(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI header pairs as a mapping; of repeated headers the first wins, as Starlette's `get` does."""
    headers: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1")
        if name not in headers:
            headers[name] = value.decode("latin-1")
    return headers


MAX_STREAM_NAME_CHARS = 100


class Receiver:
    """Holds what every inbound endpoint needs; one method per endpoint."""

    def __init__(
        self,
        settings: Settings,
        store: IntakeStore,
        clock: Clock,
        on_stored: Callable[[], None],
        metrics: Metrics | None = None,
        max_segment_messages: int = 2500,
    ) -> None:
        self.settings = settings
        self._segment_split = segment_messages(max_segment_messages)
        self.store = store
        self.clock = clock
        self.on_stored = on_stored
        self.metrics = metrics or Metrics()
        self._counters: dict[str, tuple[Any, Any, Any]] = {}

    async def fullstory_webhook(self, headers: Headers, receive: Receive) -> Reply:
        if not self.settings.fullstory_webhook_secrets:
            return _not_configured("FSBRIDGE_FULLSTORY_WEBHOOK_SECRETS", "Fullstory system webhooks")
        return await self._receive(
            headers,
            receive,
            source=fullstory.SYSTEM_SOURCE,
            stream="",
            authenticate=self._fullstory_signature,
            split=system_webhook_items,
        )

    async def fullstory_stream(self, headers: Headers, receive: Receive, stream: str) -> Reply:
        if len(stream) > MAX_STREAM_NAME_CHARS:
            return error_reply(
                400, "invalid_stream", f"A stream name has at most {MAX_STREAM_NAME_CHARS} characters: name it shorter."
            )
        if not self.settings.fullstory_stream_tokens and not self.settings.fullstory_webhook_secrets:
            return _not_configured("FSBRIDGE_FULLSTORY_STREAM_TOKENS", "Fullstory Streams")
        return await self._receive(
            headers,
            receive,
            source=fullstory.STREAM_SOURCE,
            stream=stream,
            authenticate=self._stream_credentials,
            split=stream_event_items,
        )

    async def segment_webhook(self, headers: Headers, receive: Receive) -> Reply:
        if not self.settings.segment_webhook_tokens and not self.settings.segment_webhook_secrets:
            return _not_configured(
                "FSBRIDGE_SEGMENT_WEBHOOK_SECRETS (or FSBRIDGE_SEGMENT_WEBHOOK_TOKENS)", "Segment webhooks"
            )
        return await self._receive(
            headers,
            receive,
            source=segment.SOURCE,
            stream="",
            authenticate=self._segment_credentials,
            split=self._segment_split,
        )

    # -- authentication: each answers the method that passed, or raises SignatureError -------------

    def _fullstory_signature(self, headers: Headers, body: bytes) -> str:
        secrets = self.settings.fullstory_webhook_secrets
        verify_fullstory(body, headers.get("fullstory-signature"), secrets, self.clock.now())
        return "signature"

    def _stream_credentials(self, headers: Headers, body: bytes) -> str:
        tokens = self.settings.fullstory_stream_tokens
        return _either(
            headers,
            ("token", tokens, "authorization", lambda: verify_bearer(headers.get("authorization"), tokens)),
            (
                "signature",
                self.settings.fullstory_webhook_secrets,
                "fullstory-signature",
                lambda: self._fullstory_signature(headers, body),
            ),
        )

    def _segment_credentials(self, headers: Headers, body: bytes) -> str:
        tokens = self.settings.segment_webhook_tokens
        secrets = self.settings.segment_webhook_secrets
        return _either(
            headers,
            ("token", tokens, "authorization", lambda: verify_bearer(headers.get("authorization"), tokens)),
            ("signature", secrets, "x-signature", lambda: verify_segment(body, headers.get("x-signature"), secrets)),
        )

    async def _receive(
        self,
        headers: Headers,
        receive: Receive,
        *,
        source: str,
        stream: str,
        authenticate: Callable[[Headers, bytes], str],
        split: Split,
    ) -> Reply:
        try:
            _require_json_content_type(headers)
            body = await _read_limited(headers, receive, self.settings.max_body_bytes)
            try:
                method = authenticate(headers, body)
            except SignatureError as exc:
                raise IntakeError(401, "unauthenticated", str(exc)) from exc
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise IntakeError(400, "invalid_json", f"The body is not valid JSON: {exc}.") from exc
            items = split(payload, body, method)
        except IntakeError as exc:
            log.info("inbox.rejected", source=source, status=exc.status, code=exc.code, reason=exc.message)
            return error_reply(exc.status, exc.code, exc.message)

        # A signature covers the body, not the URL: a signed event replayed to other stream names is
        # the same event, stored (and counted) once.
        endpoint = f"{source}/" if method == "signature" else f"{source}/{stream}"
        received_at = self.clock.now()
        try:
            if len(items) == 1:
                stored = [await self._store(items[0], source, stream, endpoint, received_at)]
            else:
                stored = await self._store_all(items, source, stream, endpoint, received_at)
        except StoreUnavailableError as exc:
            log.error("inbox.store_unavailable", source=source, error=str(exc))
            return error_reply(503, "store_unavailable", "The event could not be stored; retry later.")
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
            quarantined = await self.store.quarantine(_quarantined(item, source, stream, endpoint, received_at))
            log.warning("inbox.quarantined", source=source, id=quarantined.id, reason=item.error)
            return "quarantined", quarantined.id
        dedup_key = item.provider_id or fullstory.body_dedup_key(endpoint, item.body)
        accepted = await self.store.accept(NewInboxEvent(source, stream, dedup_key, item.kind, item.body, received_at))
        # No log line per stored event: it would cost more than storing it. /ops shows every event,
        # and fsbridge_events_received_total and fsbridge_events_duplicate_total count them.
        return ("duplicate" if accepted.duplicate else "accepted"), accepted.id

    async def _store_all(
        self, items: list[Item], source: str, stream: str, endpoint: str, received_at: float
    ) -> list[tuple[str, str]]:
        """Every message of a batch in one write, and one log line for the request's quarantined ones."""
        events: list[NewInboxEvent | NewQuarantined] = [
            _quarantined(item, source, stream, endpoint, received_at)
            if item.kind is None
            else NewInboxEvent(
                source,
                stream,
                item.provider_id or fullstory.body_dedup_key(endpoint, item.body),
                item.kind,
                item.body,
                received_at,
            )
            for item in items
        ]
        answers = await self.store.accept_all(events)
        stored = [
            ("quarantined" if item.kind is None else "duplicate" if a.duplicate else "accepted", a.id)
            for item, a in zip(items, answers, strict=True)
        ]
        quarantined = [(item, a.id) for item, a in zip(items, answers, strict=True) if item.kind is None]
        if quarantined:
            log.warning(
                "inbox.quarantined",
                source=source,
                messages=len(quarantined),
                of=len(items),
                first_id=quarantined[0][1],
                reason=quarantined[0][0].error,
            )
        return stored


def _quarantined(item: Item, source: str, stream: str, endpoint: str, received_at: float) -> NewQuarantined:
    key = fullstory.body_dedup_key(endpoint, item.body)
    return NewQuarantined(source, stream, key, item.body, item.error or "unrecognised", received_at)


def _response(items: list[Item], stored: list[tuple[str, str]]) -> Reply:
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
        return error_reply(422, "unrecognised_payload", first_error, **extra)
    body: dict[str, Any] = {"status": "accepted", "id": kept[0]}
    if len(items) > 1:
        body |= {"ids": kept, "duplicates": duplicates}
    if duplicates == len(items):
        body["duplicate"] = True
    return json_reply(202, body)


def _not_configured(variable: str, what: str) -> Reply:
    return error_reply(
        503,
        "not_configured",
        f"{what} are refused until {variable} is set; fsbridge never accepts unauthenticated traffic.",
    )


def _either(headers: Headers, *checks: tuple[str, tuple[SecretStr, ...], str, Callable[[], object]]) -> str:
    """The name of the first configured check that passes; otherwise raise the failure of a
    credential the request presented (a wrong signature is not a "missing bearer token")."""
    failures: list[tuple[bool, SignatureError]] = []
    for name, configured, header, check in checks:
        if not configured:
            continue
        try:
            check()
        except SignatureError as exc:
            failures.append((header in headers, exc))
        else:
            return name
    raise next((exc for presented, exc in failures if presented), failures[0][1])


def _require_json_content_type(headers: Headers) -> None:
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise IntakeError(415, "unsupported_media_type", "Send the event as Content-Type: application/json.")


async def _read_limited(headers: Headers, receive: Receive, limit: int) -> bytes:
    too_large = f"The body is larger than the {limit:,}-byte limit."
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise IntakeError(413, "payload_too_large", too_large)
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body") and message["type"] == "http.request":
        if len(body) > limit:
            raise IntakeError(413, "payload_too_large", too_large)
        return body  # one chunk: the usual case, with nothing to join
    chunks = [body]
    size = len(body)
    while message["type"] == "http.request" and message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise IntakeError(413, "payload_too_large", too_large)
        chunks.append(chunk)
    if message["type"] != "http.request":
        raise IntakeError(400, "incomplete_body", "The connection closed before the whole body arrived.")
    return b"".join(chunks)
