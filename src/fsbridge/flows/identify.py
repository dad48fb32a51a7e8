"""Segment identify calls keep Fullstory users in sync: each identify with a userId becomes one
`POST /v2/users` upsert, unless its mapped content is what was last synced for that uid."""

from __future__ import annotations

from typing import Any

from fsbridge.config import IdentifyFlowConfig, IdentityConfig
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.mapping import Call, First, Path
from fsbridge.envelope import MISSING, Envelope, lookup
from fsbridge.flows.base import Filter, Flow, TargetAction, on
from fsbridge.log import get_logger
from fsbridge.sources.segment import SOURCE
from fsbridge.targets.fullstory import FullstoryCreateUser, user_properties

NAME = "segment_identify_to_fullstory_user"
CREATE_USER = TargetAction("fullstory", "users.create", FullstoryCreateUser, exclude_none=True, scope_field="uid")
# Traits that become uid, email and display_name rather than properties.
MAPPED_TRAITS = frozenset({"email", "name"})

log = get_logger(__name__)


def has_user_id(rules: IdentityRules) -> Filter:
    return Filter(
        name="has_user_id",
        test=lambda e: rules.segment_user_id(e.payload) is not None,
        explain=lambda e: f"{e.kind} without {rules.config.segment_user_id_path}: Fullstory needs a uid",
    )


def full_name(envelope: Envelope) -> Any:
    first = lookup(envelope.payload, "traits.firstName")
    first = first if first is not MISSING else lookup(envelope.payload, "traits.first_name")
    last = lookup(envelope.payload, "traits.lastName")
    last = last if last is not MISSING else lookup(envelope.payload, "traits.last_name")
    parts = [str(p).strip() for p in (first, last) if isinstance(p, str) and p.strip()]
    return " ".join(parts) if parts else MISSING


def _traits(envelope: Envelope) -> dict[str, Any]:
    traits = lookup(envelope.payload, "traits")
    return traits if isinstance(traits, dict) else {}


def properties(envelope: Envelope) -> Any:
    result = user_properties(_traits(envelope), exclude=MAPPED_TRAITS)
    for reason in result.dropped:
        log.warning("fullstory.property_dropped", flow=NAME, event_id=envelope.event_id, reason=reason)
    return result.properties


def schema(envelope: Envelope) -> Any:
    hints = user_properties(_traits(envelope), exclude=MAPPED_TRAITS).schema
    return {"properties": hints} if hints else MISSING


def segment_identify_to_fullstory_user(options: IdentifyFlowConfig, identity: IdentityConfig) -> Flow:
    rules = IdentityRules(identity)

    def uid(envelope: Envelope) -> Any:
        user_id = rules.segment_user_id(envelope.payload)
        return MISSING if user_id is None else rules.fullstory_uid(user_id)

    return Flow(
        name=NAME,
        trigger=on(SOURCE, "identify"),
        when=(has_user_id(rules),),
        mapping={
            "uid": Call(uid),
            "email": Path("traits.email", "context.traits.email", cast="email"),
            "display_name": First(Path("traits.name", cast="string"), Call(full_name)),
            "properties": Call(properties),
            "schema": Call(schema),
        },
        target=CREATE_USER,
        skip_unchanged=options.skip_unchanged,
    )
