"""The default flow: Fullstory Streams rage/dead/error clicks become the Segment track of the contract."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from fsbridge import __version__
from fsbridge.config import FsbridgeConfig
from fsbridge.engine.flow import stable_message_id
from fsbridge.envelope import Envelope
from fsbridge.sources.fullstory import stream_kind
from tests.conftest import RAGE_CLICK, Bridge, flow_named

NAME = "frustration_to_segment_track"
FLOW = flow_named(NAME)
RECEIVED_AT = 1_795_000_000.5


def envelope(payload: dict[str, Any], dedup_key: str = "k1") -> Envelope:
    return Envelope("evt_1", "fullstory_stream", "frustration", stream_kind(payload), dedup_key, RECEIVED_AT, payload)


def render(payload: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(FLOW.render(envelope(payload)))
    return message


def flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


EXPECTED = {
    "type": "track",
    "event": "Rage Click Detected",
    "userId": "u_1842",
    "anonymousId": None,
    "timestamp": "2026-11-26T10:15:02.120+00:00",
    "properties": {
        "signal_type": "rage_click",
        "session_url": "https://app.fullstory.com/ui/o-1ABC/session/5557778531805533%3A6915774531905556",
        "session_id": "5557778531805533:6915774531905556",
        "page_url": "https://shop.example.com/checkout",
        "page_name": "Checkout",
        "element_text": "Pay now",
        "element_name": "checkout-pay-button",
        "source": "fullstory",
    },
    "context": {
        "traits": {"email": "ada.lovelace@example.com"},
        "library": {"name": "fsbridge", "version": __version__},
    },
    "integrations": {},
    "messageId": stable_message_id(envelope(RAGE_CLICK), NAME),
}


def test_rage_click_becomes_the_contract_track() -> None:
    """The contract's sample payload becomes exactly the contract's track message."""
    assert EXPECTED == render(RAGE_CLICK)


def test_dotted_payload_gives_the_same_message() -> None:
    """The same fields flattened with dots produce the same message."""
    assert EXPECTED == render(flatten(RAGE_CLICK))


@pytest.mark.parametrize(
    ("spelling", "event", "signal"),
    [
        ("rage-click", "Rage Click Detected", "rage_click"),
        ("rage_click", "Rage Click Detected", "rage_click"),
        ("RageClick", "Rage Click Detected", "rage_click"),
        ("Rage Click", "Rage Click Detected", "rage_click"),
        ("dead-click", "Dead Click Detected", "dead_click"),
        ("DeadClick", "Dead Click Detected", "dead_click"),
        ("Dead Click", "Dead Click Detected", "dead_click"),
        ("error_click", "Error Click Detected", "error_click"),
        ("ErrorClick", "Error Click Detected", "error_click"),
        ("Error Click", "Error Click Detected", "error_click"),
    ],
)
@pytest.mark.parametrize("shape", ["nested", "dotted"])
def test_every_spelling_nested_and_dotted(spelling: str, event: str, signal: str, shape: str) -> None:
    """Each accepted spelling, nested or dotted, maps to its Segment event and signal_type."""
    payload = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "event_type": spelling}}
    message = render(payload if shape == "nested" else flatten(payload))
    assert (event, signal) == (message["event"], message["properties"]["signal_type"])


def test_unknown_user_gets_a_stable_anonymous_id_from_the_session() -> None:
    """Without user_id the track carries an anonymousId derived from the session, the same every time."""
    payload = {**RAGE_CLICK, "user": {"user_email": "x@example.com"}}
    first, again = render(payload), render(payload)
    assert first["userId"] is None
    assert uuid.UUID(first["anonymousId"])
    assert first["anonymousId"] == again["anonymousId"]
    other_session = {**payload, "session": {"session_id": "1:2"}}
    assert render(other_session)["anonymousId"] != first["anonymousId"]


def test_email_is_trimmed_and_lower_cased() -> None:
    """context.traits.email is the normalised email."""
    payload = {**RAGE_CLICK, "user": {"user_id": "u", "user_email": "  MiXeD@Example.COM\t"}}
    assert "mixed@example.com" == render(payload)["context"]["traits"]["email"]


def test_missing_optional_fields_are_left_out() -> None:
    """Fields the stream does not send are omitted, not sent as null; the time falls back to receipt."""
    message = render({"event": {"event_type": "dead-click"}, "user": {"user_id": "u9"}})
    assert {"signal_type": "dead_click", "source": "fullstory"} == message["properties"]
    assert "traits" not in message["context"]
    assert "2026-11-18T11:06:40.500+00:00" == message["timestamp"]


def test_epoch_millisecond_event_time_is_converted() -> None:
    """An event_time in epoch milliseconds becomes ISO-8601 UTC."""
    payload = {**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "event_time": 1795000000123}}
    assert "2026-11-18T11:06:40.123+00:00" == render(payload)["timestamp"]


def test_other_event_types_are_filtered_with_a_reason() -> None:
    """A Streams event that is not a frustration signal is held back by the kind filter."""
    reason = FLOW.held_back_by(envelope({"event": {"event_type": "Checkout Abandoned"}}))
    assert reason is not None
    assert "checkout_abandoned" in reason


def test_signals_and_names_come_from_config() -> None:
    """The config chooses which signals the flow sends and under which event names."""
    config = FsbridgeConfig.model_validate(
        {"flows": {NAME: {"signals": ["rage_click"], "event_names": {"rage_click": "Rage Click"}}}}
    )
    flow = flow_named(NAME, config)
    assert flow.held_back_by(envelope({"event": {"event_type": "dead-click"}})) is not None
    assert "Rage Click" == orjson.loads(flow.render(envelope(RAGE_CLICK)))["event"]


async def test_end_to_end_through_the_service(bridge: Bridge) -> None:
    """Posted to the Streams endpoint, a rage click reaches Segment as the contract's message."""
    assert 202 == (await bridge.post_stream(RAGE_CLICK)).status_code
    await bridge.drain()
    [message] = bridge.upstream.messages()
    assert {**EXPECTED, "messageId": message["messageId"]} == message
    assert message["messageId"].startswith("fsb-")


async def test_other_stream_events_are_stored_counted_and_filtered(bridge: Bridge) -> None:
    """A page view on the stream is 202, stored, counted as filtered by the flow, and sends nothing."""
    assert 202 == (await bridge.post_stream({"event": {"event_type": "Page View"}})).status_code
    await bridge.drain()
    stats = await bridge.runtime.store.stats()
    assert 1 == stats["by_flow"][NAME]["filtered"]
    assert [] == bridge.upstream.requests
