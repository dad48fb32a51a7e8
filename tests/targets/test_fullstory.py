"""Fullstory target: trait-name rules, value limits, date hints, and the /v2/users requests."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import respx
from pydantic import SecretStr

from fsbridge.store import Delivery
from fsbridge.targets.fullstory import FullstoryCreateUser, FullstoryDestination, property_name, user_properties
from tests.fullstory_spec import validate_create_user


@pytest.mark.parametrize(
    ("trait", "name"),
    [
        ("plan", "plan"),
        ("pricingPlan", "pricingPlan"),
        ("pricing_plan", "pricing_plan"),
        ("plan-type", "plan_type"),
        ("plan type", "plan_type"),
        ("plan.type", "plan_type"),
        ("  Plan  ", "Plan"),
        ("total $ spent", "total_spent"),
        ("2fa_enabled", "p2fa_enabled"),
        ("_internal", "internal"),
        ("über", "ber"),
        ("$$$", None),
        ("", None),
    ],
)
def test_trait_names_become_valid_property_names(trait: str, name: str | None) -> None:
    """Invalid characters become underscores, and a name must start with a letter; nothing usable is None."""
    assert name == property_name(trait)


def test_email_and_name_are_not_properties() -> None:
    """Traits mapped to email and display_name are not repeated as properties."""
    result = user_properties({"email": "a@b.co", "name": "Ada", "plan": "pro"}, exclude=frozenset({"email", "name"}))
    assert {"plan": "pro"} == result.properties


def test_nested_objects_are_kept_with_valid_names() -> None:
    """Nested objects stay nested, with their own names made valid."""
    result = user_properties({"company": {"name": "Acme", "employee-count": 40, "address": {"zip code": "1"}}})
    assert {"company": {"name": "Acme", "employee_count": 40, "address": {"zip_code": "1"}}} == result.properties


def test_arrays_of_objects_are_dropped_with_a_reason() -> None:
    """Arrays of objects are dropped and said so; arrays of scalars are kept."""
    result = user_properties({"orders": [{"id": 1}], "tags": ["a", "b"]})
    assert {"tags": ["a", "b"]} == result.properties
    assert ["orders: arrays of objects are not supported by Fullstory"] == result.dropped


def test_values_over_8_kib_are_dropped() -> None:
    """A value larger than 8,192 bytes is dropped with a reason; one just under it is kept."""
    result = user_properties({"big": "x" * 8200, "fits": "y" * 8000})
    assert ["fits"] == list(result.properties)
    assert ["big: value larger than 8192 bytes"] == result.dropped


def test_colliding_names_keep_the_first() -> None:
    """Two traits that sanitise to the same name: the first wins, the second is dropped with a reason."""
    result = user_properties({"plan-type": "a", "plan type": "b"})
    assert {"plan_type": "a"} == result.properties
    assert "which another trait already uses" in result.dropped[0]


def test_at_most_500_properties() -> None:
    """Beyond 500 properties the rest are dropped, each with a reason."""
    result = user_properties({f"t{n}": n for n in range(510)})
    assert 500 == len(result.properties)
    assert 10 == len(result.dropped)


def test_over_long_dotted_names_are_dropped() -> None:
    """A nested property whose dotted name exceeds 512 characters is dropped."""
    result = user_properties({"a" * 300: {"b" * 300: 1}})
    assert {} == result.properties
    assert "longer than 512" in result.dropped[0]


def test_null_values_are_left_out() -> None:
    """A null trait is not sent."""
    assert {} == user_properties({"plan": None}).properties


def test_dates_get_schema_hints() -> None:
    """ISO dates and date-times get `date` hints (dotted for nested), lists of them `dates`; numbers none."""
    result = user_properties(
        {
            "createdAt": "2024-03-01T10:00:00Z",
            "birthday": "1990-04-01",
            "company": {"founded": "2001-01-01T00:00:00+02:00"},
            "renewals": ["2025-01-01", "2026-01-01"],
            "logins": 3,
            "version": "2024.1",
        }
    )
    assert {"createdAt": "date", "birthday": "date", "company.founded": "date", "renewals": "dates"} == result.schema


def test_sanitised_body_validates_against_the_spec() -> None:
    """A user built from awkward traits validates against Fullstory's CreateUserRequest."""
    traits = {"plan-type": "pro", "createdAt": "2024-03-01T10:00:00Z", "nested": {"a b": [1, 2]}, "x" * 600: 1}
    result = user_properties(traits)
    body = FullstoryCreateUser.model_validate(
        {"uid": "u1", "properties": result.properties, "schema": {"properties": result.schema}}
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    validate_create_user(body)
    assert {"properties": {"createdAt": "date"}} == body["schema"]


def delivery(action: str, body: dict[str, Any]) -> Delivery:
    return Delivery(
        "dlv_1", "evt", "flow", "fullstory", "fsb-idem-1", orjson.dumps(body), "pending", 0, 0.0, 0.0, 0.0, 0.0,
        False, None, None, None, action,
    )  # fmt: skip


def destination(client: httpx.AsyncClient) -> FullstoryDestination:
    return FullstoryDestination(
        client, api_url="https://api.fullstory.com", api_key=SecretStr("na1.KEY"), dry_run=False
    )


class TestRequests:
    @respx.mock
    async def test_create_user_request(self) -> None:
        """POST /v2/users with the raw API key as Basic credentials, JSON body and an Idempotency-Key."""
        route = respx.post("https://api.fullstory.com/v2/users").mock(
            return_value=httpx.Response(200, json={"id": "9"})
        )
        async with httpx.AsyncClient() as client:
            result = await destination(client).send([delivery("users.create", {"uid": "u1"})])
        assert 200 == result.status_code
        request = route.calls.last.request
        assert "Basic na1.KEY" == request.headers["Authorization"]
        assert "fsb-idem-1" == request.headers["Idempotency-Key"]
        assert {"uid": "u1"} == orjson.loads(request.content)

    @respx.mock
    async def test_delete_user_request(self) -> None:
        """DELETE /v2/users?uid=<uid>, with the uid URL-encoded."""
        route = respx.delete("https://api.fullstory.com/v2/users").mock(return_value=httpx.Response(200, json={}))
        async with httpx.AsyncClient() as client:
            await destination(client).send([delivery("users.delete", {"uid": "a b&c"})])
        assert "a b&c" == route.calls.last.request.url.params["uid"]

    @respx.mock
    async def test_deleting_a_user_already_gone_is_done(self) -> None:
        """A 404 on delete means the user is already gone: the goal is met."""
        respx.delete("https://api.fullstory.com/v2/users").mock(return_value=httpx.Response(404, json={}))
        async with httpx.AsyncClient() as client:
            result = await destination(client).send([delivery("users.delete", {"uid": "u1"})])
        assert result.already_done

    @respx.mock
    async def test_429_passes_retry_after(self) -> None:
        """Fullstory's 429 Retry-After reaches the worker's retry decision."""
        respx.post("https://api.fullstory.com/v2/users").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "12"}, json={"code": "too_many_requests"})
        )
        async with httpx.AsyncClient() as client:
            result = await destination(client).send([delivery("users.create", {"uid": "u1"})])
        assert (429, "12") == (result.status_code, result.retry_after)
