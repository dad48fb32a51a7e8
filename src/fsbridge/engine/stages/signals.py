"""Signal stage (Part 2 aggregations): a Fullstory Streams frustration signal (rage, dead or error
click) becomes a `Signal` of its user, which the per-user aggregations (at-risk sessions,
frustration traits, the health score, NPS follow-up) fold into that user's state in the dispatch
transaction. A user is named by the Segment userId (the Streams user id, or what the identity
links resolved), else by the anonymousId the frustration flow derives from the session."""

from __future__ import annotations

from typing import Any

from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.mapping import stable_uuid
from fsbridge.envelope import MISSING, Envelope
from fsbridge.sources.fullstory import SESSION_PATHS, SESSION_URL_PATHS, STREAM_SOURCE
from fsbridge.store import DispatchResult, Signal


def _first(envelope: Envelope, paths: tuple[str, ...]) -> Any:
    """The first present value, as a mapping's `{path: [...]}` reads it."""
    for path in paths:
        value = envelope.get(path)
        if value is not MISSING and value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, dict | list) else str(value)


class Signals:
    name = "signals"
    sources = frozenset({STREAM_SOURCE})

    def __init__(self, rules: IdentityRules, kinds: frozenset[str]) -> None:
        self.rules = rules
        self.kinds = kinds  # the signals some enabled aggregation counts

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        if envelope.kind not in self.kinds:
            return True
        user = self.rules.fullstory_user_id.resolve(envelope)
        user_id = str(user) if user is not MISSING else envelope.resolved_user_id
        session = _first(envelope, SESSION_PATHS)
        if user_id:
            key = f"u:{user_id}"
        elif session is not None:
            key = f"a:{stable_uuid('session', session)}"  # the anonymousId the frustration flow sends
        else:
            return True
        session_id = _text(_first(envelope, SESSION_PATHS[:3]))
        url = _text(_first(envelope, SESSION_URL_PATHS))
        result.signals.append(Signal(key, envelope.kind, envelope.received_at, session_id, url, envelope.event_id))
        return True
