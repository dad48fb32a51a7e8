"""`GET /ops/api/events` (Part 3): stored events by the person they are about (userId, email or
anonymousId, through the identity links), a Segment messageId, source and time, newest first, with
a cursor for the next page; served by the store's search role, which reads no body."""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from fsbridge.bounds import MAX_ID_CHARS, user_id_text
from fsbridge.engine.identity import normalise_email
from fsbridge.ops.access import require_ops_access, runtime_of
from fsbridge.ops.requests import moment
from fsbridge.replies import error_response, json_response
from fsbridge.runtime import Runtime
from fsbridge.store.search import MAX_PAGE, EventQuery, FoundEvent

search = APIRouter(prefix="/ops/api", tags=["ops"], dependencies=[Depends(require_ops_access)])
Text = Annotated[str | None, Query(max_length=MAX_ID_CHARS)]


@search.get("/events", summary="Stored events by user, email, anonymousId, messageId, source and time")
async def events(
    request: Request,
    user_id: Text = None,
    email: Text = None,
    anonymous_id: Text = None,
    message_id: Text = None,
    source: Text = None,
    since: Text = None,
    until: Text = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    runtime = runtime_of(request)
    try:
        window = [None if v is None else moment(v) for v in (since, until)]
    except ValueError as exc:
        return error_response(422, "invalid_time", f"since and until take ISO 8601 or Unix seconds: {exc}.")
    after = _cursor(cursor) if cursor else None
    if cursor and after is None:
        return error_response(422, "invalid_cursor", "The cursor is not one this API gave; start from the first page.")
    query = EventQuery(
        user_ids=await _people(runtime, user_id, email, anonymous_id),
        message_id=message_id,
        source=source,
        since=window[0],
        until=window[1],
        limit=limit,
        after=after,
    )
    found = await runtime.store.search_events(query)
    last = found[-1] if len(found) == limit else None
    return json_response(
        200,
        {
            "items": [asdict(event) for event in found],
            "next_cursor": _encode(last.received_at, last.id) if last else None,
        },
    )


async def find(runtime: Runtime, text: str, limit: int = 50) -> list[FoundEvent]:
    """What the dashboard's search box finds for one string: an email's person, else a userId's,
    an anonymousId's or a Segment messageId's events, newest first."""
    text = text.strip()[:MAX_ID_CHARS]
    if not text:
        return []
    if "@" in text:
        return await runtime.store.search_events(EventQuery(await _people(runtime, None, text, None), limit=limit))
    for people in (await _people(runtime, text, None, None), await _people(runtime, None, None, text)):
        if found := await runtime.store.search_events(EventQuery(people, limit=limit)):
            return found
    return await runtime.store.search_events(EventQuery(message_id=text, limit=limit))


async def _people(
    runtime: Runtime, user_id: str | None, email: str | None, anonymous_id: str | None
) -> tuple[str, ...] | None:
    """The userIds every identity given names (the intersection); None when none is given."""
    rules = runtime.router.identity
    sets: list[set[str]] = []
    if user_id is not None:
        sets.append({u} if (u := user_id_text(user_id)) else set())
    keys: list[list[tuple[str, str]]] = []
    if email is not None:
        keys.append(rules.email_keys(e) if (e := normalise_email(email)) else [])
    if anonymous_id is not None:
        keys.append([("anonymous_id", a)] if (a := user_id_text(anonymous_id)) else [])
    if keys:
        found = await runtime.store.resolve_identities([k for group in keys for k in group])
        sets += [{found[k] for k in group if k in found} for group in keys]
    if not sets:
        return None
    return tuple(sorted(set.intersection(*sets)))


def _encode(received_at: float, event_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([received_at, event_id])).decode()


def _cursor(text: str) -> tuple[float, str] | None:
    try:
        received_at, event_id = orjson.loads(base64.urlsafe_b64decode(text.encode()))
        return float(received_at), str(event_id)
    except (ValueError, TypeError, orjson.JSONDecodeError, ValidationError):
        return None
