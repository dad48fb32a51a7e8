"""Envelopes built outside intake (golden examples, `fsbridge test-mapping`): the same kind and
identity rules as the receivers, applied to a payload given directly."""

from __future__ import annotations

from typing import Any

import orjson

from fsbridge.envelope import Envelope, has_dotted_keys
from fsbridge.sources import fullstory, fullstory_api, segment

EXAMPLE_RECEIVED_AT = 1_795_000_000.0


def envelope_for(
    source: str,
    payload: Any,
    *,
    stream: str = "example",
    received_at: float = EXAMPLE_RECEIVED_AT,
    event_id: str = "evt_example",
) -> Envelope:
    """The envelope intake would build for `payload` on `source`; ShapeError if it would quarantine it."""
    provider_id: str | None
    if source == fullstory.SYSTEM_SOURCE:
        kind, provider_id, stream = *fullstory.system_webhook_kind(payload), ""
    elif source == fullstory.STREAM_SOURCE:
        kind, provider_id = fullstory.stream_kind(payload), None
    elif source == segment.SOURCE:
        kind, provider_id, stream = *segment.message_kind(payload), ""
    elif source == fullstory_api.SOURCE:
        kind, provider_id, stream = fullstory_api.kind_of(payload), None, ""
    else:
        msg = f"unknown source {source!r}"
        raise ValueError(msg)
    key = provider_id or fullstory.body_dedup_key(f"{source}/{stream}", orjson.dumps(payload))
    return Envelope(event_id, source, stream, kind, key, received_at, payload, dotted_keys=has_dotted_keys(payload))
