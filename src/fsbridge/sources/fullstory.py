"""Fullstory payload rules: what makes a system webhook or a Streams payload well-formed, how
each is identified for de-duplication, and how `event_type` spellings become one signal name."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from fsbridge.bounds import memo_of_short, quote
from fsbridge.envelope import MISSING, lookup

SYSTEM_SOURCE = "fullstory"
# Where a Streams payload names its session (the frustration flow's anonymousId is derived from it).
SESSION_PATHS = ("session.session_id", "session_id", "session.id", "session_url")
SESSION_URL_PATHS = ("session_url", "session.session_url", "session.url")
STREAM_SOURCE = "fullstory_stream"

# Where a Streams payload may carry its event type: the documented field, nested or dotted, and
# the older fixed v2 schema's top-level `name`.
EVENT_TYPE_PATHS = ("event.event_type", "event_type", "event.type", "name")


class ShapeError(Exception):
    """Authenticated JSON that is not this source's shape: it goes to quarantine (422)."""


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


# Fullstory's own are a word or two; a longer value is no event type (and never reaches a cache,
# a stored kind or a metric label).
MAX_EVENT_TYPE_CHARS = 100


@memo_of_short(max_chars=MAX_EVENT_TYPE_CHARS, maxsize=4096)  # a handful of event types arrive over and over
def signal_name(event_type: str) -> str:
    """`rage-click`, `rage_click`, `RageClick` and `Rage Click` all become `rage_click`."""
    spaced = _CAMEL_BOUNDARY.sub("_", event_type.strip())
    return _SEPARATORS.sub("_", spaced).strip("_").lower()


def system_webhook_kind(payload: Any) -> tuple[str, str | None]:
    """(`eventName`, provider id or None) of a system webhook, or ShapeError."""
    if not isinstance(payload, dict):
        raise ShapeError("A Fullstory system webhook must be a JSON object.")
    name = payload.get("eventName")
    data = payload.get("data")
    if not isinstance(name, str) or not name.strip():
        raise ShapeError("A Fullstory system webhook needs a string `eventName`.")
    if not isinstance(data, dict):
        raise ShapeError("A Fullstory system webhook needs a `data` object.")
    provider_id = data.get("id")
    if isinstance(provider_id, bool) or not isinstance(provider_id, str | int):
        return name.strip(), None
    # A JSON pair, not "name:id": ("a:b", "c") and ("a", "b:c"), or 7 and "7", stay different events.
    return name.strip(), "json:" + orjson.dumps([name.strip(), provider_id]).decode()


def stream_kind(payload: Any) -> str:
    """The normalised signal name of a Streams payload, or ShapeError."""
    if not isinstance(payload, dict):
        raise ShapeError("A Fullstory Streams payload must be a JSON object.")
    for path in EVENT_TYPE_PATHS:
        value = lookup(payload, path)
        if isinstance(value, str) and len(value) > MAX_EVENT_TYPE_CHARS:
            raise ShapeError(
                f"The Streams payload's event type ({path}) is {len(value):,} characters long, over the "
                f"{MAX_EVENT_TYPE_CHARS} an event type may have: {quote(value)}."
            )
        if isinstance(value, str) and signal_name(value):
            return signal_name(value)
    raise ShapeError(
        "A Fullstory Streams payload needs an event type (`event.event_type`, dotted or nested); "
        "add it to the stream's field mapping."
    )


def body_dedup_key(endpoint: str, body: bytes) -> str:
    """Identity of an event whose provider gives no id: the same body on the same endpoint."""
    digest = hashlib.sha256(endpoint.encode() + b"\n")
    digest.update(body)  # not concatenated: no copy of the body
    return "sha256:" + digest.hexdigest()


__all__ = [
    "EVENT_TYPE_PATHS",
    "MISSING",
    "STREAM_SOURCE",
    "SYSTEM_SOURCE",
    "ShapeError",
    "body_dedup_key",
    "signal_name",
    "stream_kind",
    "system_webhook_kind",
]
