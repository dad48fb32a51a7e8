"""Fullstory server API target: request models for `POST /v2/users`, `DELETE /v2/users` and
`POST /v2/events`, the
trait sanitiser that makes Segment traits valid Fullstory properties, and the client.

Property rules (Fullstory's v2 Users spec): names of letters, digits and underscores starting
with a letter, at most 512 characters including the dotted path of nested objects; values at most
8 KiB; nested objects allowed, arrays of objects not; at most 500 properties. Authentication is
`Authorization: Basic <API key>` (the raw key), and every POST carries an Idempotency-Key.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from fsbridge import __version__
from fsbridge.bounds import quote
from fsbridge.engine.mapping import as_iso_timestamp
from fsbridge.envelope import MISSING
from fsbridge.store import Delivery
from fsbridge.targets import SendResult, response_result, transport_failure

NAME = "fullstory"
POST_PATHS = {"users.create": "/v2/users", "events.create": "/v2/events"}
MAX_PROPERTIES = 500
MAX_NAME_LENGTH = 512
MAX_VALUE_BYTES = 8192
_INVALID = re.compile(r"[^A-Za-z0-9_]+")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


class FullstoryCreateUser(BaseModel):
    """`fullstory.v2.users.CreateUserRequest` (an upsert on uid)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uid: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    email: str | None = Field(default=None, max_length=128)
    properties: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PROPERTIES)
    type_schema: dict[str, dict[str, str]] | None = Field(default=None, alias="schema")


class FullstoryEventUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uid: str | None = Field(default=None, max_length=256)
    id: str | None = None


class FullstoryEventSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    use_most_recent: bool | None = None


class FullstoryCreateEvent(BaseModel):
    """`fullstory.v2.events.CreateEventRequest`: a server-side custom event."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    timestamp: str | None = None
    user: FullstoryEventUser | None = None
    session: FullstoryEventSession | None = None
    context: dict[str, Any] | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    type_schema: dict[str, dict[str, str]] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _identify_the_event_once(self) -> FullstoryCreateEvent:
        # Fullstory answers 400 when an event carries more than one form of identification.
        if self.session is not None and self.session.id and self.user is not None:
            msg = "with session.id Fullstory does not accept user; send one or the other"
            raise ValueError(msg)
        if self.session is not None and self.session.use_most_recent and self.user is None:
            msg = "session.use_most_recent needs a user (uid or id)"
            raise ValueError(msg)
        if self.user is not None and bool(self.user.uid) == bool(self.user.id):
            msg = "user needs exactly one of uid or id"
            raise ValueError(msg)
        return self


class FullstoryDeleteUser(BaseModel):
    """The uid of `DELETE /v2/users?uid=`."""

    model_config = ConfigDict(extra="forbid")

    uid: str = Field(min_length=1, max_length=256)


def property_name(name: str) -> str | None:
    """`plan-type` → `plan_type`, `2fa` → `p2fa`; None when nothing usable is left."""
    cleaned = _INVALID.sub("_", name.strip()).strip("_")
    if not cleaned:
        return None
    return cleaned if cleaned[0].isalpha() else f"p{cleaned}"


@dataclass
class UserProperties:
    """Traits made valid for Fullstory, the schema hints for dates, and what was dropped and why."""

    properties: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def user_properties(traits: dict[str, Any], exclude: frozenset[str] = frozenset()) -> UserProperties:
    result = UserProperties()
    result.properties = _sanitise(traits, "", result, exclude)
    if len(result.properties) > MAX_PROPERTIES:
        for name in list(result.properties)[MAX_PROPERTIES:]:
            del result.properties[name]
            result.schema.pop(name, None)
            result.dropped.append(f"{name}: over Fullstory's limit of {MAX_PROPERTIES} properties")
    return result


def _sanitise(values: dict[str, Any], prefix: str, result: UserProperties, exclude: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_name, value in values.items():
        if not prefix and raw_name in exclude:
            continue
        name = property_name(str(raw_name))
        where = quote(f"{prefix}{raw_name}")
        if name is None:
            result.dropped.append(f"{where}: no letters or digits to make a property name from")
            continue
        path = f"{prefix}{name}"
        if name in out:
            result.dropped.append(f"{where}: becomes {quote(path)}, which another trait already uses")
            continue
        if len(path) > MAX_NAME_LENGTH:
            result.dropped.append(f"{path[:40]}...: name longer than {MAX_NAME_LENGTH} characters")
            continue
        if value is None:
            continue
        if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            result.dropped.append(f"{path}: arrays of objects are not supported by Fullstory")
            continue
        if _json_size(value) > MAX_VALUE_BYTES:
            result.dropped.append(f"{path}: value larger than {MAX_VALUE_BYTES} bytes")
            continue
        if isinstance(value, dict):
            nested = _sanitise(value, f"{path}.", result, exclude)
            if nested:
                out[name] = nested
            continue
        out[name] = value
        hint = _date_hint(value)
        if hint:
            result.schema[path] = hint
    return out


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except TypeError:  # an integer beyond 64 bits, which only the standard library serialises
        return len(json.dumps(value).encode())


def _date_hint(value: Any) -> str | None:
    def is_date(v: Any) -> bool:
        return isinstance(v, str) and bool(_ISO_DATE.match(v.strip())) and as_iso_timestamp(v) is not MISSING

    if is_date(value):
        return "date"
    if isinstance(value, list) and value and all(is_date(v) for v in value):
        return "dates"
    return None


class FullstoryDestination:
    """Sends one request per delivery to the Fullstory server API."""

    name = NAME
    max_message_bytes: int | None = None

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        api_key: SecretStr | None,
        dry_run: bool,
        concurrency: int = 4,
    ) -> None:
        self._client = client
        self._base = api_url.rstrip("/")
        self._auth = f"Basic {api_key.get_secret_value()}" if api_key is not None else None
        self.dry_run = dry_run
        self.concurrency = concurrency
        self.messages_per_request = 1
        self.claim_limit = concurrency * 8

    def plan(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        return [[d] for d in deliveries]

    async def send(self, batch: Sequence[Delivery]) -> SendResult:
        [delivery] = batch
        headers = {"User-Agent": f"fsbridge/{__version__}", "Integration-Source": "fsbridge"}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        started = time.perf_counter()
        try:
            if delivery.action == "users.delete":
                uid = orjson.loads(delivery.body)["uid"]
                response = await self._client.delete(
                    f"{self._base}/v2/users?{urlencode({'uid': uid})}", headers=headers
                )
            elif delivery.action in POST_PATHS:
                headers |= {"Content-Type": "application/json", "Idempotency-Key": delivery.message_id}
                url = f"{self._base}{POST_PATHS[delivery.action]}"
                response = await self._client.post(url, content=delivery.body, headers=headers)
            else:
                return SendResult(400, 0.0, error=f"fsbridge cannot send Fullstory action {delivery.action!r}")
        except httpx.HTTPError as exc:
            return transport_failure(exc, started)
        # A user that is already gone has been deleted, which is what was asked.
        already_done = delivery.action == "users.delete" and response.status_code == 404
        return response_result(response, started, "Fullstory", already_done=already_done)

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = [
    "FullstoryCreateEvent",
    "FullstoryCreateUser",
    "FullstoryDeleteUser",
    "FullstoryDestination",
    "UserProperties",
    "property_name",
    "user_properties",
]
