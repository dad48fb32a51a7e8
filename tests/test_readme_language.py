"""The README's mapping-language table: each documented example gives the documented output."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
import yaml

from fsbridge.config import IdentityConfig
from fsbridge.engine.language import compile_mapping
from fsbridge.engine.mapping import resolve
from fsbridge.envelope import Envelope
from fsbridge.flows.functions import functions

INPUT = {
    "type": "track",
    "event": "Order Completed",
    "userId": 42,
    "timestamp": "2026-11-26T10:20:00Z",
    "properties": {
        "order_id": 50314,
        "revenue": "25.00",
        "currency": "eur",
        "coupon": "  SPRING ",
        "buyer": {"email": " Ada@Example.com ", "internal_note": "vip"},
    },
}
MISSING = object()

# (mapping line as written in the README, expected output field value, or MISSING when left out)
ROWS: list[tuple[str, Any]] = [
    ("name: Order Completed", "Order Completed"),
    ("session: {use_most_recent: true}", {"use_most_recent": True}),
    ("order: {path: properties.order_id}", 50314),
    ("value: {path: [properties.total, properties.revenue]}", "25.00"),
    ("kind: {path: $kind}", "track"),
    ("extra: {const: {path: literally}}", {"path": "literally"}),
    ('title: {template: "Order {properties.order_id} by {userId}"}', "Order 50314 by 42"),
    ("tier: {lookup: properties.currency, table: {eur: europe, usd: americas}, default: other}", "europe"),
    ("who: {first: [{path: user.email}, {path: userId}, anonymous]}", 42),
    ("uid: {function: fullstory_uid}", "42"),
    ("revenue: {path: properties.revenue, cast: number}", 25.0),
    ("coupon: {path: properties.coupon, cast: [trim, lowercase]}", "spring"),
    ("email: {path: properties.buyer.email, cast: email}", "ada@example.com"),
    ("email: {path: properties.buyer.email, cast: email_sha256}", hashlib.sha256(b"ada@example.com").hexdigest()),
    ("currency: {path: properties.currencyCode, default: USD}", "USD"),
    ("anonymousId: {stable_id: properties.order_id, unless: userId}", MISSING),
    (
        "buyer: {path: properties.buyer, rename: {email: contact}, drop: [internal_note]}",
        {"contact": " Ada@Example.com "},
    ),
]


@pytest.mark.parametrize(("line", "expected"), ROWS, ids=[row[0].split(":")[0] for row in ROWS])
def test_documented_example(line: str, expected: Any) -> None:
    """The README row's mapping gives the README row's output for the README's input."""
    mapping = yaml.safe_load(line)
    envelope = Envelope("evt", "segment", "", "track", "k", 1_795_000_000.0, INPUT)
    output = resolve(compile_mapping(mapping, functions(IdentityConfig())), envelope)
    [field] = mapping
    assert expected == output.get(field, MISSING)


def test_stable_id_example_is_stable() -> None:
    """The stable_id row: the same UUID for order 50314 every time."""
    mapping = yaml.safe_load("anonymousId: {stable_id: properties.order_id, namespace: orders}")
    envelope = Envelope("evt", "segment", "", "track", "k", 0.0, INPUT)
    first = resolve(compile_mapping(mapping, {}), envelope)["anonymousId"]
    assert uuid.UUID(first)
    assert first == resolve(compile_mapping(mapping, {}), envelope)["anonymousId"]
