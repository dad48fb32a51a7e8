"""Segment payload rules: what a Spec message must have to be accepted, how it is identified for
de-duplication (messageId), and how a Webhooks (Actions) array splits into messages."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from fsbridge.bounds import quote
from fsbridge.sources.fullstory import ShapeError

SOURCE = "segment"
SPEC_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias", "delete"})
MAX_MESSAGE_ID = 200
MAX_TYPE_CHARS = 32  # the longest Spec type is 8 characters


def messages_of(payload: Any) -> list[Any]:
    """The messages of a request: one object, or each element of a JSON array."""
    if isinstance(payload, list):
        if not payload:
            raise ShapeError("An empty JSON array carries no Segment message.")
        return payload
    return [payload]


def message_kind(message: Any) -> tuple[str, str]:
    """(`type`, identity) of one Spec message, or ShapeError. The identity is its `messageId`, else
    a hash of the message's canonical JSON: the same message sent alone, as `[ msg]` or as
    `[  msg]` is one event."""
    if not isinstance(message, dict):
        raise ShapeError("A Segment message must be a JSON object.")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise ShapeError("A Segment message needs a string `type` (identify, track, page, ...).")
    if len(kind) > MAX_TYPE_CHARS or (kind := kind.strip().lower()) not in SPEC_TYPES:
        raise ShapeError(f"`type` {quote(kind)} is not a Segment Spec type ({', '.join(sorted(SPEC_TYPES))}).")
    message_id = message.get("messageId")
    if isinstance(message_id, str) and 0 < len(message_id) <= MAX_MESSAGE_ID:
        return kind, f"messageId:{message_id}"
    try:
        canonical = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # nested deeper than 254 levels: no Segment message is
        raise ShapeError(
            "The Segment message has no usable messageId and nests too deeply to be identified "
            "(over 254 levels of objects and arrays)."
        ) from exc
    return kind, "canonical:" + hashlib.sha256(canonical).hexdigest()
