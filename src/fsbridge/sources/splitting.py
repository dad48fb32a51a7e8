"""How one webhook request becomes the events it carries: a Fullstory webhook or stream event is
one; a Segment request is one message or an array of them, each stored alone, and a payload of the
wrong shape becomes an item to quarantine with its reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fsbridge.errors import IntakeError
from fsbridge.sources import fullstory, segment
from fsbridge.sources.fullstory import ShapeError


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


def _stream_identity(payload: Any) -> tuple[str, str | None]:
    return fullstory.stream_kind(payload), None


system_webhook_items = single(fullstory.system_webhook_kind)
stream_event_items = single(_stream_identity)


def segment_messages(max_messages: int) -> Split:
    """A Segment request: one message, or a Webhooks (Actions) array of at most `max_messages`."""

    def split(payload: Any, body: bytes, method: str) -> list[Item]:
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
        if len(messages) > max_messages:
            raise IntakeError(
                413,
                "too_many_messages",
                f"The array holds {len(messages):,} messages; fsbridge takes at most {max_messages:,} a request "
                "(Segment sends at most 2,500 a batch): send smaller batches.",
            )
        return _segment_items(messages, payload, body)

    return split


def _segment_items(messages: list[Any], payload: Any, body: bytes) -> list[Item]:
    items = []
    for message in messages:
        try:
            kind, provider_id = segment.message_kind(message)
        except ShapeError as exc:
            items.append(Item(_element_bytes(message, payload, body), error=str(exc)))
        else:
            items.append(Item(_element_bytes(message, payload, body), kind, provider_id))
    return items


def _element_bytes(message: Any, payload: Any, body: bytes) -> bytes:
    """An element of an array is stored alone, as the message it is (never as the array)."""
    if not isinstance(payload, list):
        return body
    try:
        return orjson.dumps(message)
    except TypeError:  # nested deeper than orjson writes: kept as the request's bytes
        return body
