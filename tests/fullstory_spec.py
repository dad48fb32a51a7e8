"""Fullstory's own Swagger 2 specs (../shared/specs), loaded once, to validate what fsbridge sends."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"
USERS_SPEC = SPECS / "fullstory-server-api-v2-users.swagger2.json"
EVENTS_SPEC = SPECS / "fullstory-server-api-v2-events.swagger2.json"


@cache
def _spec(path: Path) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(path.read_text())
    return spec


def definition_validator(path: Path, name: str) -> jsonschema.Draft4Validator:
    """A validator for one `definitions` entry, its $refs resolved within the same spec."""
    spec = _spec(path)
    schema = {**spec["definitions"][name], "definitions": spec["definitions"]}
    return jsonschema.Draft4Validator(schema)


def validate_create_user(body: Any) -> None:
    definition_validator(USERS_SPEC, "fullstory.v2.users.CreateUserRequest").validate(body)


def validate_create_event(body: Any) -> None:
    definition_validator(EVENTS_SPEC, "fullstory.v2.events.CreateEventRequest").validate(body)


def validate_fullstory_requests(requests: list[httpx.Request]) -> None:
    """Every POST /v2/users and /v2/events body validates against Fullstory's spec; DELETE carries ?uid=."""
    for request in requests:
        if request.url.path == "/v2/users" and request.method == "POST":
            validate_create_user(json.loads(request.content))
        elif request.url.path == "/v2/events" and request.method == "POST":
            validate_create_event(json.loads(request.content))
        elif request.url.path == "/v2/users" and request.method == "DELETE":
            assert request.url.params.get("uid"), "DELETE /v2/users needs ?uid="
