"""A Segment user deletion request (`type: delete`) deletes the user in Fullstory too
(`DELETE /v2/users?uid=`). Nothing personal is logged: only the delivery and event ids."""

from __future__ import annotations

from typing import Any

from fsbridge.config import IdentityConfig
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.mapping import Call
from fsbridge.envelope import MISSING, Envelope
from fsbridge.flows.base import Flow, TargetAction, on
from fsbridge.flows.identify import has_user_id
from fsbridge.sources.segment import SOURCE
from fsbridge.targets.fullstory import FullstoryDeleteUser

NAME = "segment_delete_to_fullstory_user"
DELETE_USER = TargetAction("fullstory", "users.delete", FullstoryDeleteUser)


def segment_delete_to_fullstory_user(identity: IdentityConfig) -> Flow:
    rules = IdentityRules(identity)

    def uid(envelope: Envelope) -> Any:
        user_id = rules.segment_user_id(envelope.payload)
        return MISSING if user_id is None else rules.fullstory_uid(user_id)

    return Flow(
        name=NAME,
        trigger=on(SOURCE, "delete"),
        when=(has_user_id(rules),),
        mapping={"uid": Call(uid)},
        target=DELETE_USER,
    )
