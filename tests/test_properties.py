"""Property tests (hypothesis): signature parsers, payload normalisers and the trait sanitiser hold
their promises for any input, not just the examples we thought of."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from fsbridge.envelope import MISSING, has_dotted_keys, lookup
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
