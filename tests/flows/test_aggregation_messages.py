"""The per-user aggregations build their Segment messages directly: each equals what the request
model (validated, with the library context) renders for the same content."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from fsbridge.flows.aggregations.outbox import Outbox, iso
from fsbridge.flows.aggregations.state import UserState
from fsbridge.flows.targets import TARGETS

AT = 1_795_000_000.25


@pytest.mark.parametrize(
    ("kind", "key", "body"),
    [
        ("identify", "u:u_1", {"traits": {"fullstory_health_score": 85, "fullstory_health_band": "good"}}),
        ("identify", "a:0b8e7c1e-5d4f-5b8a-9c3d-2e1f0a9b8c7d", {"traits": {"experience_at_risk": True}}),
        ("track", "u:u_1", {"event": "Experience At Risk", "properties": {"session_id": "1:2", "signal_count": 3,
                                                                          "session_url": None, "source": "fullstory"}}),
    ],
)  # fmt: skip
def test_direct_messages_equal_the_models(kind: str, key: str, body: dict[str, Any]) -> None:
    """Field by field and value by value, the direct message is the model's."""
    out, state = Outbox(segment_dry_run=False), UserState(key)
    direct = orjson.loads(out.render("flow", kind, state, body, "fsb-1", AT))
    model = {"userId": state.user_id, "anonymousId": state.anonymous_id, "timestamp": iso(AT), **body}
    checked = orjson.loads(TARGETS[f"segment.{kind}"].render(model, "fsb-1"))
    assert checked == direct


def test_times_read_as_datetime_writes_them() -> None:
    """`iso`, which keeps the last whole second's text, writes every time as datetime does: microseconds
    rounded half to even and cut to milliseconds, a carry into the next second, times before the epoch."""

    def reference(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    rng = random.Random(7)
    edges = [0.0, 1.9999995, 1.0000005, AT - 0.25 + 0.9999996, AT + 0.0005, AT + 0.0015, -1.5, -0.0000004]
    spread = [rng.uniform(1.7e9, 1.8e9) for _ in range(20_000)]
    times = [*edges, *spread, *(round(AT + rng.random(), 3) for _ in range(5000))]
    for seconds in sorted(times) + times:  # in order (the kept second is reused) and in no order
        assert iso(seconds) == reference(seconds), seconds


def test_a_message_over_segments_limit_is_a_dead_letter_not_sent() -> None:
    """An aggregation message over 32 KiB is queued dead with the reason, as any flow's would be."""
    out = Outbox(segment_dry_run=False)
    state = UserState("u:" + "u" * 40_000)
    out.identify("health_score", state, {"fullstory_health_score": 80}, AT, "x")
    out.identify("health_score", UserState("u:u_1"), {"fullstory_health_score": 80}, AT, "y")
    big, small = out.deliveries
    assert ("dead", "pending") == (big.status, small.status)
    assert "over segment's limit of 32,768 bytes" in (big.last_error or "")
