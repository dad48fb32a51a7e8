"""Property tests (hypothesis): signature parsers, payload normalisers and the trait sanitiser hold
their promises for any input, not just the examples we thought of."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from fsbridge.config import IdentityConfig
from fsbridge.engine.dispatch import Router
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.language_casts import CASTS
from fsbridge.engine.rendering import DestinationLimits
from fsbridge.envelope import MISSING, Envelope, has_dotted_keys, lookup
from fsbridge.sources.fullstory import ShapeError, signal_name, stream_kind, system_webhook_kind
from fsbridge.sources.segment import message_kind
from fsbridge.sources.signatures import (
    SignatureError,
    segment_signed_bytes,
    sign_fullstory,
    sign_segment,
    verify_bearer,
    verify_fullstory,
    verify_segment,
)
from fsbridge.targets.fullstory import MAX_PROPERTIES, property_name, user_properties
from tests.fullstory_spec import validate_create_user
from tests.test_golden import all_flows

NOW = 1_795_000_000
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FULLSTORY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


ORG_IDS = st.from_regex(r"o-[A-Za-z0-9]{1,8}(-[a-z]{2}[0-9])?", fullmatch=True)


@given(body=st.binary(), org=ORG_IDS, secret=st.text(min_size=1))
def test_fullstory_sign_then_verify(body: bytes, org: str, secret: str) -> None:
    """Whatever the body, org and secret, a fresh signature verifies."""
    verify_fullstory(body, sign_fullstory(body, secret, org, NOW), (SecretStr(secret),), now=NOW)


@given(header=st.text(), body=st.binary(max_size=64))
def test_fullstory_header_parser_only_refuses(header: str, body: bytes) -> None:
    """Any header string is either accepted or refused with SignatureError, never another exception."""
    with contextlib.suppress(SignatureError):
        verify_fullstory(body, header, (SecretStr("s"),), now=NOW)


@given(first=json_values, rest=st.lists(json_values, max_size=3), secret=st.text(min_size=1))
def test_segment_array_signature_covers_exactly_the_first_element(first: Any, rest: list[Any], secret: str) -> None:
    """For any array (serialised the way JavaScript does), the signed bytes are its first element's."""
    element = json.dumps(first, separators=(",", ":"), ensure_ascii=False).encode()
    others = b"".join(b"," + json.dumps(r, separators=(",", ":")).encode() for r in rest)
    body = b"[" + element + others + b"]"
    assert element == segment_signed_bytes(body)
    verify_segment(body, sign_segment(body, secret), (SecretStr(secret),))


@given(body=st.binary(max_size=64), header=st.one_of(st.none(), st.text()))
def test_segment_and_bearer_checks_only_refuse(body: bytes, header: str | None) -> None:
    """Arbitrary bytes and headers are refused with SignatureError, never another exception."""
    with contextlib.suppress(SignatureError):
        verify_segment(body, header, (SecretStr("s"),))
    with contextlib.suppress(SignatureError):
        verify_bearer(header, (SecretStr("s"),))


@given(text=st.text())
def test_signal_name_is_snake_case_and_stable(text: str) -> None:
    """A signal name is lower snake_case, and normalising it again changes nothing."""
    name = signal_name(text)
    assert re.fullmatch(r"[a-z0-9_]*", name) or not name.isascii()
    assert name == signal_name(name)


@given(payload=json_values)
def test_payload_rules_only_quarantine(payload: Any) -> None:
    """Any JSON value is either understood or a ShapeError (quarantine), for every source."""
    for rule in (stream_kind, system_webhook_kind, message_kind):
        with contextlib.suppress(ShapeError):
            rule(payload)


@given(payload=json_values, path=st.text(max_size=20))
def test_lookup_never_raises(payload: Any, path: str) -> None:
    """Reading any path from any payload never raises, and what it finds is a value of the payload."""
    value = lookup(payload, path)
    assert value is MISSING or _holds(payload, value)


# Keys and paths from a few names, so that paths often hit keys, dotted ones included.
KEYS = ["a", "b", "a.b", "b.a", "0"]
dotted_payloads = st.recursive(
    st.integers(0, 9) | st.sampled_from(["x", "a.b"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=12,
)
paths = st.lists(st.sampled_from(["a", "b", "0"]), min_size=1, max_size=4).map(".".join)


@settings(max_examples=300)
@given(payload=dotted_payloads, path=paths)
def test_skipping_the_dotted_key_search_changes_no_answer(payload: Any, path: str) -> None:
    """A lookup told the payload has no dotted keys (when `has_dotted_keys` says so) finds exactly what
    the full search finds."""
    assert lookup(payload, path) == lookup(payload, path, dotted=has_dotted_keys(payload))


def test_dotted_keys_are_found_at_any_depth() -> None:
    """`has_dotted_keys` sees a dotted key nested in objects and lists, and nothing in a flat payload."""
    assert has_dotted_keys({"a": [{"b": 1}, {"c": {"d.e": 2}}]})
    assert has_dotted_keys([{"x.y": None}])
    assert not has_dotted_keys({"a": [{"b": "c.d"}, 1, "e.f"], "g": {"h": 1.5}})
    assert not has_dotted_keys("a.b")


def _holds(node: Any, value: Any) -> bool:
    if node is value:
        return True
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return any(_holds(child, value) for child in children)


@given(name=st.text())
def test_property_names_are_valid_for_fullstory(name: str) -> None:
    """A sanitised name matches Fullstory's rule, or is None when nothing usable remains."""
    cleaned = property_name(name)
    assert cleaned is None or FULLSTORY_NAME.match(cleaned)


@settings(max_examples=60)
@given(traits=st.dictionaries(st.text(max_size=30), json_values, max_size=20))
def test_sanitised_traits_always_make_a_valid_user(traits: dict[str, Any]) -> None:
    """Any traits become properties Fullstory's CreateUserRequest accepts, with valid names at every depth."""
    result = user_properties(traits)
    validate_create_user({"uid": "u1", "properties": result.properties, "schema": {"properties": result.schema}})
    assert len(result.properties) <= MAX_PROPERTIES

    def names_valid(value: Any) -> bool:
        if isinstance(value, dict):
            return all(FULLSTORY_NAME.match(k) and names_valid(v) for k, v in value.items())
        if isinstance(value, list):
            return not any(isinstance(v, dict | list) for v in value)
        return True

    assert names_valid(result.properties)


TIMESTAMP_TEXT = st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=400)


@given(org=st.text(max_size=8), ts=TIMESTAMP_TEXT | st.integers(min_value=0).map(str), sig=st.text(max_size=8))
def test_fullstory_header_with_any_timestamp_only_refuses(org: str, ts: str, sig: str) -> None:
    """Any digits in `t` (superscripts, other scripts, 400 of them) are refused with SignatureError only."""
    with contextlib.suppress(SignatureError):
        verify_fullstory(b"{}", f"o:{org or 'x'},t:{ts},v:{sig or 'x'}", (SecretStr("s"),), now=NOW)


SEGMENT_BODIES = (
    st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n)
    | st.integers(min_value=1, max_value=6000).map(lambda n: b"[" + b"9" * n + b"]")
    | st.text(alphabet='[]{}",:\\ 0123456789a', max_size=200).map(str.encode)
)


@given(body=SEGMENT_BODIES, header=st.text(max_size=8))
def test_segment_signature_check_on_any_bracket_soup_only_refuses(body: bytes, header: str) -> None:
    """Deep nesting, 6,000-digit numbers and unbalanced brackets: SignatureError, never another exception."""
    assert isinstance(segment_signed_bytes(body), bytes)
    with contextlib.suppress(SignatureError):
        verify_segment(body, header or "x", (SecretStr("s"),))


ODD_TIMES = (
    json_values
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.datetimes().map(lambda d: d.isoformat())
    | st.builds(
        lambda d, h, m: f"{d.isoformat()}{'+' if h >= 0 else '-'}{abs(h):02d}:{m:02d}",
        st.datetimes(),
        st.integers(min_value=-23, max_value=23),
        st.integers(min_value=0, max_value=59),
    )
    | TIMESTAMP_TEXT
)


@given(value=ODD_TIMES)
def test_every_cast_returns_a_value_or_missing(value: Any) -> None:
    """Every cast of the mapping language answers a value or MISSING for any input, never raises."""
    for cast in CASTS.values():
        cast(value)
    result = CASTS["timestamp"](value)
    assert result is MISSING or datetime.fromisoformat(result).tzinfo is not None


ALL_FLOWS = list(all_flows().values())
ROUTER = Router(
    ALL_FLOWS,
    {
        name: DestinationLimits(dry_run=False, max_message_bytes=32 * 1024)
        for name in ("segment", "fullstory", "slack", "jira")
    },
    IdentityRules(IdentityConfig()),
)
SOURCES = {flow.trigger.source for flow in ALL_FLOWS}
PAYLOADS = st.dictionaries(
    st.sampled_from(["event", "user", "session", "data", "properties", "traits", "userId", "type", "event.event_type"])
    | st.text(max_size=8),
    # JSON as orjson parses it: integers within 64 bits (larger ones arrive as floats).
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
        | ODD_TIMES.filter(lambda v: isinstance(v, str)),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=20,
    ),
    max_size=6,
)


@given(payload=PAYLOADS, source=st.sampled_from(sorted(SOURCES)), data=st.data())
@settings(max_examples=300, deadline=None)
def test_routing_returns_for_any_json_through_every_flow(payload: dict[str, Any], source: str, data: Any) -> None:
    """Any JSON, as any kind a flow triggers on, through every shipped and example flow: routing returns."""
    kinds = sorted({k for f in ALL_FLOWS if f.trigger.source == source for k in f.trigger.kinds} | {"other"})
    envelope = Envelope(
        "evt_property", source, "example", data.draw(st.sampled_from(kinds)), "key", NOW, payload,
        dotted_keys=has_dotted_keys(payload),
    )  # fmt: skip
    result = ROUTER.route(envelope, orjson.dumps(payload))
    for delivery in result.deliveries:
        assert delivery.status in ("pending", "dead")
        assert delivery.status == "pending" or delivery.last_error
