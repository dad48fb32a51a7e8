"""Fullstory payload rules: signal spellings, where the event type may be, system webhook identity."""

from __future__ import annotations

from typing import Any

import pytest

from fsbridge.sources.fullstory import (
    ShapeError,
    body_dedup_key,
    signal_name,
    stream_kind,
    system_webhook_kind,
)


@pytest.mark.parametrize(
    ("spelling", "signal"),
    [
        ("rage-click", "rage_click"),
        ("rage_click", "rage_click"),
        ("RageClick", "rage_click"),
        ("Rage Click", "rage_click"),
        (" RAGE CLICK ", "rage_click"),
        ("dead-click", "dead_click"),
        ("DeadClick", "dead_click"),
        ("error click", "error_click"),
        ("ERROR_CLICK", "error_click"),
        ("Checkout Abandoned", "checkout_abandoned"),
    ],
)
def test_event_type_spellings_mean_one_signal(spelling: str, signal: str) -> None:
    """Every accepted spelling of an event type normalises to the same snake_case signal."""
    assert signal == signal_name(spelling)


@pytest.mark.parametrize(
    "payload",
    [
        {"event": {"event_type": "RageClick"}},
        {"event.event_type": "Rage Click"},
        {"event": [{"event_type": "rage-click"}]},
        {"event_type": "rage_click"},
        {"name": "Rage Click", "api_version": "v2"},
    ],
)
def test_stream_event_type_nested_dotted_listed_or_top_level(payload: dict[str, Any]) -> None:
    """The event type is found nested, dotted, inside a one-element list, at top level, or as v2 `name`."""
    assert "rage_click" == stream_kind(payload)


@pytest.mark.parametrize("payload", [{"event": {"url": "x"}}, {"event": {"event_type": "  "}}, {"event": []}])
def test_stream_without_event_type_is_a_shape_error(payload: Any) -> None:
    """A Streams payload with no usable event type is a ShapeError (quarantine)."""
    with pytest.raises(ShapeError, match="event type"):
        stream_kind(payload)


@pytest.mark.parametrize("payload", [[], "text", 3])
def test_stream_payload_must_be_an_object(payload: Any) -> None:
    """A Streams payload that is not a JSON object is a ShapeError."""
    with pytest.raises(ShapeError, match="JSON object"):
        stream_kind(payload)


def test_system_webhook_identity_is_event_name_and_data_id() -> None:
    """A system webhook is identified by `eventName` + `data.id`."""
    assert ("note.created", 'json:["note.created","798"]') == system_webhook_kind(
        {"eventName": "note.created", "data": {"id": "798"}}
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [(("a:b", "c"), ("a", "b:c")), (("note.created", 7), ("note.created", "7"))],
)
def test_system_webhook_identities_never_collide(one: tuple[str, Any], other: tuple[str, Any]) -> None:
    """Different eventName and data.id pairs never share a dedup key (colons in either, 7 against "7")."""
    first = system_webhook_kind({"eventName": one[0], "data": {"id": one[1]}})[1]
    second = system_webhook_kind({"eventName": other[0], "data": {"id": other[1]}})[1]
    assert first is not None
    assert first != second


def test_system_webhook_without_id_has_no_provider_identity() -> None:
    """Without `data.id` there is no provider id, so the body hash will identify it."""
    assert ("nativemobile.event.crash", None) == system_webhook_kind(
        {"eventName": "nativemobile.event.crash", "data": {"appName": "x"}}
    )


@pytest.mark.parametrize(
    "payload",
    [{"data": {}}, {"eventName": "x"}, {"eventName": 3, "data": {}}, {"eventName": "x", "data": []}, []],
)
def test_system_webhook_needs_event_name_and_data(payload: Any) -> None:
    """A system webhook without a string `eventName` and an object `data` is a ShapeError."""
    with pytest.raises(ShapeError):
        system_webhook_kind(payload)


def test_body_dedup_key_depends_on_endpoint_and_bytes() -> None:
    """The same body on another stream is another event; the same body on the same stream is not."""
    assert body_dedup_key("s/a", b"{}") == body_dedup_key("s/a", b"{}")
    assert body_dedup_key("s/a", b"{}") != body_dedup_key("s/b", b"{}")
