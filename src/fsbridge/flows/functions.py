"""Named functions a mapping can call (`{function: full_name}`): the few rules that are computation,
not data. Each takes the envelope and returns a value or MISSING."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from fsbridge.config import IdentityConfig
from fsbridge.engine.identity import IdentityRules
from fsbridge.envelope import MISSING, Envelope, lookup
from fsbridge.log import get_logger
from fsbridge.targets.fullstory import user_properties
from fsbridge.targets.slack import escape_mrkdwn

log = get_logger(__name__)

# Traits that become a Fullstory user's email and display_name rather than properties.
MAPPED_TRAITS = frozenset({"email", "name"})


def full_name(envelope: Envelope) -> Any:
    """`traits.firstName` + `traits.lastName` (or the snake_case spellings)."""
    parts = []
    for spellings in (("traits.firstName", "traits.first_name"), ("traits.lastName", "traits.last_name")):
        value = next((v for p in spellings if (v := lookup(envelope.payload, p)) is not MISSING), MISSING)
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
    return " ".join(parts) if parts else MISSING


def _traits(envelope: Envelope) -> dict[str, Any]:
    traits = lookup(envelope.payload, "traits")
    return traits if isinstance(traits, dict) else {}


def fullstory_user_properties(envelope: Envelope) -> Any:
    """The identify's other traits, made valid Fullstory properties. Drops are logged in one line per
    message (how many, and the first reasons), never one per trait: a sender can send thousands."""
    result = user_properties(_traits(envelope), exclude=MAPPED_TRAITS)
    if result.dropped:
        log.warning(
            "fullstory.property_dropped",
            event_id=envelope.event_id,
            dropped=len(result.dropped),
            reasons=result.dropped[:5],
        )
    return result.properties


def fullstory_user_schema(envelope: Envelope) -> Any:
    """Schema hints for the traits that are dates."""
    hints = user_properties(_traits(envelope), exclude=MAPPED_TRAITS).schema
    return {"properties": hints} if hints else MISSING


NOTE_TEXT_CHARS = 500


def fullstory_user_from_urls(envelope: Envelope) -> Any:
    """The Fullstory user id of a note: the last path segment of `data.userUrl`, else the first
    `:`-part of the last segment of `data.sessionUrl` (the device id, which Fullstory's own example
    shows to be the same user)."""
    user_url = lookup(envelope.payload, "data.userUrl")
    if isinstance(user_url, str) and (segment := urlsplit(user_url).path.rstrip("/").rsplit("/", 1)[-1]):
        return unquote(segment)
    session_url = lookup(envelope.payload, "data.sessionUrl")
    if isinstance(session_url, str):
        last = unquote(urlsplit(session_url).path.rstrip("/").rsplit("/", 1)[-1])
        first = last.split(":", 1)[0].split("!", 1)[0]
        if ":" in last and first:
            return first
    return MISSING


def note_text(envelope: Envelope) -> Any:
    """The note's text, at most 500 characters (cut with an ellipsis)."""
    text = lookup(envelope.payload, "data.text")
    if not isinstance(text, str) or not text.strip():
        return MISSING
    text = text.strip()
    return text if len(text) <= NOTE_TEXT_CHARS else text[: NOTE_TEXT_CHARS - 1] + "…"


def audience_trait(envelope: Envelope) -> Any:
    """`{fs_<key>: true|false}` for a `segment.membership` event: the trait a Segment audience is built on."""
    key, member = lookup(envelope.payload, "audience_key"), lookup(envelope.payload, "member")
    return {key: member} if isinstance(key, str) and key and isinstance(member, bool) else MISSING


HEADER_CHARS, FIELD_CHARS, BUTTON_URL_CHARS = 150, 2000, 3000  # Slack's Block Kit limits


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _safe(value: Any, limit: int) -> str:
    """A value from outside in Slack mrkdwn: escaped, then cut to Slack's limit (an entity the cut
    would split is left out whole)."""
    text = escape_mrkdwn(str(value))
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    entity = cut.rfind("&")
    if entity != -1 and ";" not in cut[entity:]:
        cut = cut[:entity]
    return cut + "…"


def high_value_session_blocks(envelope: Envelope) -> Any:
    """The Block Kit message for a new session of a high-value user: who (name, email, company,
    plan, when known), when it started, and a button to the replay; within Slack's limits, with
    every value from the profile escaped (the flow marks this function `trusted`: it escapes itself)."""
    payload = envelope.payload if isinstance(envelope.payload, dict) else {}
    who = str(payload.get("name") or payload.get("email") or payload.get("user_id") or "A high-value user")
    fields = [
        {"type": "mrkdwn", "text": f"*{label}*\n" + _safe(payload[key], FIELD_CHARS - len(label) - 3)}
        for label, key in (("Email", "email"), ("Company", "company"), ("Plan", "plan"), ("User", "user_id"),
                           ("Started", "started_at"))
        if payload.get(key)
    ]  # fmt: skip
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "New session: " + _safe(who, HEADER_CHARS - 13)}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    url = payload.get("session_url")
    if isinstance(url, str) and url and len(url) <= BUTTON_URL_CHARS:
        button = {"type": "button", "text": {"type": "plain_text", "text": "Watch the replay"}, "url": url}
        blocks.append({"type": "actions", "elements": [button]})
    return blocks


def functions(identity: IdentityConfig) -> dict[str, Callable[[Envelope], Any]]:
    rules = IdentityRules(identity)

    def segment_user_id(envelope: Envelope) -> Any:
        user_id = rules.segment_user_id(envelope.payload)
        return MISSING if user_id is None else user_id

    def fullstory_uid(envelope: Envelope) -> Any:
        user_id = rules.segment_user_id(envelope.payload)
        return MISSING if user_id is None else rules.fullstory_uid(user_id)

    return {
        "audience_trait": audience_trait,
        "full_name": full_name,
        "high_value_session_blocks": high_value_session_blocks,
        "fullstory_user_from_urls": fullstory_user_from_urls,
        "note_text": note_text,
        "fullstory_uid": fullstory_uid,
        "fullstory_user_properties": fullstory_user_properties,
        "fullstory_user_schema": fullstory_user_schema,
        "segment_user_id": segment_user_id,
    }
