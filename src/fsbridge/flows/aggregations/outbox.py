"""What the per-user aggregations decide in one transaction: the Segment messages to queue (each
with a stable messageId from the flow and what it is about), and how many identifies coalescing
saved per flow."""

from __future__ import annotations

import collections
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from fsbridge.flows.aggregations.state import UserState
from fsbridge.store import NewDelivery
from fsbridge.store.records import DeliveryStatus
from fsbridge.targets.segment import LIBRARY, MAX_MESSAGE_BYTES


def _iso_keeping_the_second() -> Callable[[float], str]:
    """ISO 8601 in UTC to the millisecond, exactly as `datetime.fromtimestamp(seconds, UTC)` and
    `isoformat(timespec="milliseconds")` write it (microseconds rounded half to even, then cut),
    with the date and time of the last whole second kept: a flow formats a time for every user it
    decides, and a batch's signals share their second, so the datetime is built once a second."""
    last: tuple[float, str] = (math.nan, "")

    def iso(seconds: float) -> str:
        nonlocal last
        fraction, whole = math.modf(seconds)
        micro = round(fraction * 1e6)
        if micro >= 1_000_000:
            whole, micro = whole + 1, micro - 1_000_000
        elif micro < 0:
            whole, micro = whole - 1, micro + 1_000_000
        second, text = last  # one tuple, read and replaced whole: safe from any thread
        if whole != second:
            text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            last = (whole, text)
        return f"{text}.{micro // 1000:03d}Z"

    return iso


iso = _iso_keeping_the_second()


def message_id(flow: str, *about: Any) -> str:
    digest = hashlib.sha256("\n".join([flow, *map(str, about)]).encode()).hexdigest()
    return f"fsb-{digest[:40]}"


@dataclass
class Outbox:
    segment_dry_run: bool
    deliveries: list[NewDelivery] = field(default_factory=list)
    coalesced: collections.Counter[str] = field(default_factory=collections.Counter)
    event_id: str | None = None  # the inbound event being folded in (None: a job's tick)

    def render(self, flow: str, kind: str, state: UserState, body: dict[str, Any], mid: str, at: float) -> bytes:
        """The Segment message, as the target's request model renders it (a test checks they are
        equal): built directly, since everything in it is fsbridge's own, already valid, data."""
        message = {
            "userId": state.user_id,
            "anonymousId": state.anonymous_id,
            "timestamp": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
            "context": {"library": LIBRARY},
            "integrations": {},
            "messageId": mid,
            "type": kind,
            **body,
        }
        return orjson.dumps(message)

    def delivery(
        self, flow: str, kind: str, body: bytes, mid: str, not_before: float | None = None, awaiting: str | None = None
    ) -> NewDelivery:
        status: DeliveryStatus = "dry_run" if self.segment_dry_run else "pending"
        error = None
        if len(body) > MAX_MESSAGE_BYTES:  # Segment would refuse it: a dead letter, as any flow's would be
            status = "dead"
            error = f"the message is {len(body):,} bytes, over segment's limit of {MAX_MESSAGE_BYTES:,} bytes a message"
        return NewDelivery(
            flow, "segment", mid, body, status, last_error=error, action=kind, not_before=not_before,
            event_id=self.event_id, awaiting=awaiting,
        )  # fmt: skip

    def track(
        self, flow: str, state: UserState, event: str, properties: dict[str, Any], at: float, *about: Any
    ) -> None:
        mid = message_id(flow, state.user_key, "track", event, *about)
        body = self.render(
            flow, "track", state, {"event": event, "properties": {**properties, "source": "fullstory"}}, mid, at
        )
        self.deliveries.append(self.delivery(flow, "track", body, mid))

    def identify(self, flow: str, state: UserState, traits: dict[str, Any], at: float, *about: Any) -> None:
        mid = message_id(flow, state.user_key, "identify", *about)
        body = self.render(flow, "identify", state, {"traits": traits}, mid, at)
        self.deliveries.append(self.delivery(flow, "identify", body, mid))
