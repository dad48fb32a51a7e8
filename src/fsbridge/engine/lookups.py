"""The look-up registry: every look-up an enrich step can name. Fullstory's are calls in its API
(`targets/fullstory_lookups.py`, made through the `fullstory` guard and cached); fsbridge's own
read the store (`fsbridge.profile`: what fsbridge knows of a Segment user, and whether the user is
in a key account). A look-up is added by writing its class and listing it in LOOKUP_TYPES."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from fsbridge.engine.identity import IdentityRules
from fsbridge.store import IdentityClaim
from fsbridge.store.profiles import UserRecord
from fsbridge.targets.fullstory_lookups import (
    Answer,
    FullstoryApi,
    FullstoryUser,
    LatestSession,
    Lookup,
    UserByEmail,
    text_of,
)


class UserRecords(Protocol):
    async def user_record(self, user_id: str) -> UserRecord | None: ...


class ProfileLookup:
    """What fsbridge holds about a Segment user (profile traits, groupId, groups, audiences), read
    from the store. With `key_accounts` (audiences, group_ids, traits: any of them), a user outside
    them is answered as nothing found; with none set, every user is."""

    name: ClassVar[str] = "fsbridge.profile"
    parameters: ClassVar[frozenset[str]] = frozenset({"user_id"})
    remote: ClassVar[bool] = False
    NOT_KEY_ACCOUNT = "the user is not in a key account"

    def __init__(self, rules: IdentityRules, store: UserRecords) -> None:
        self.rules = rules
        self.store = store

    def subject(self, arguments: dict[str, Any], answer: Answer) -> str:
        return text_of(arguments.get("user_id")) or ""

    async def ask(self, api: FullstoryApi | None, arguments: dict[str, Any]) -> Answer:
        user_id = text_of(arguments.get("user_id"))
        if user_id is None:
            return Answer(None, "no Segment userId to read a profile for")
        record = await self.store.user_record(user_id)
        groups = set(record.groups) if record else set()
        if record is not None and record.group_id:
            groups.add(record.group_id)
        return Answer(
            {
                "user_id": user_id,
                "traits": record.traits if record else {},
                "group_id": record.group_id if record else None,
                "groups": sorted(groups),
                "audiences": sorted(k for k, member in (record.audiences if record else {}).items() if member),
            }
        )

    def judge(self, answer: Answer, options: dict[str, Any], now: float) -> Answer:
        accounts = options.get("key_accounts")
        if answer.value is None or not accounts:
            return answer
        audiences, group_ids, traits = accounts["audiences"], accounts["group_ids"], accounts["traits"]
        if not (audiences or group_ids or traits):
            return answer
        value = answer.value
        if set(audiences) & set(value["audiences"]) or {str(g) for g in group_ids} & set(value["groups"]):
            return answer
        if any(value["traits"].get(trait) in accepted for trait, accepted in traits.items()):
            return answer
        return Answer(None, self.NOT_KEY_ACCOUNT)

    def claims(self, arguments: dict[str, Any], answer: Answer) -> list[IdentityClaim]:
        return []


LOOKUP_TYPES: dict[str, type[Any]] = {
    kind.name: kind for kind in (LatestSession, FullstoryUser, UserByEmail, ProfileLookup)
}


def lookups(rules: IdentityRules, store: UserRecords) -> dict[str, Lookup]:
    """Every look-up by name, ready to ask."""
    built: dict[str, Lookup] = {}
    for name, kind in LOOKUP_TYPES.items():
        built[name] = kind(rules, store) if kind is ProfileLookup else kind(rules)
    return built
