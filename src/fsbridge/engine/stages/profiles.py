"""Profile stage (Part 2): per Segment userId, the last traits seen in identify calls and the
groupId of group calls, kept beside the identity links for flows and operators; and forgetting a
user a deletion request names. Both are written in the dispatch transaction (`store/profiles.py`)."""

from __future__ import annotations

from fsbridge.engine.identity import IdentityRules
from fsbridge.envelope import Envelope, lookup
from fsbridge.sources import segment
from fsbridge.store import DispatchResult, ForgetUser, ProfileUpdate


class Profiles:
    name = "profiles"
    sources = frozenset({segment.SOURCE})

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        result.profiles.extend(profile_updates(envelope, self.rules))
        result.forget.extend(forgotten(envelope, self.rules))
        return True


def profile_updates(envelope: Envelope, rules: IdentityRules) -> list[ProfileUpdate]:
    message = envelope.payload
    if not isinstance(message, dict):
        return []
    user_id = rules.segment_user_id(message)
    if user_id is None:
        return []
    if envelope.kind == "identify" and isinstance(traits := message.get("traits"), dict) and traits:
        return [ProfileUpdate(user_id, traits, None)]
    if envelope.kind == "group" and isinstance(group_id := lookup(message, "groupId"), str | int):
        return [ProfileUpdate(user_id, {}, str(group_id))]
    return []


def forgotten(envelope: Envelope, rules: IdentityRules) -> list[ForgetUser]:
    """A Segment `delete` names a user whose profile, links, memberships and sync state all go."""
    if envelope.kind != "delete" or not isinstance(envelope.payload, dict):
        return []
    user_id = rules.segment_user_id(envelope.payload)
    return [] if user_id is None else [forget_request(user_id, rules)]


def forget_request(user_id: str, rules: IdentityRules) -> ForgetUser:
    """What deleting `user_id` covers besides the id itself: its Fullstory uid, and the sync state of
    the upserts that would re-create it."""
    uid = rules.fullstory_uid(user_id.strip())
    return ForgetUser(user_id.strip(), sync_scopes=(f"fullstory.users.create:{uid}",), identifiers=(uid,))
