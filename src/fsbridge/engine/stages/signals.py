"""Signal stage (Part 2 aggregations): a Fullstory Streams frustration signal (rage, dead or error
click) becomes a `Signal` of its user, which the per-user aggregations (at-risk sessions,
frustration traits, the health score, NPS follow-up) fold into that user's state in the dispatch
transaction. A user is named by the Segment userId (the Streams user id, or what the identity
links resolved), else by the anonymousId the frustration flow derives from the session."""

from __future__ import annotations

from typing import Any

from fsbridge.bounds import MAX_URL_CHARS, short_key
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.language_nodes import PathsRead
from fsbridge.envelope import MISSING, Envelope
from fsbridge.sources.fullstory import SESSION_PATHS, SESSION_URL_PATHS, STREAM_SOURCE
from fsbridge.store import DispatchResult, Signal
from fsbridge.user_keys import anonymous_key, user_key

# Read as a mapping's `{path: [...]}` reads them, so the key matches the frustration flow's anonymousId.
SESSION = PathsRead(SESSION_PATHS)
SESSION_ID = PathsRead(SESSION_PATHS[:3])
SESSION_URL = PathsRead(SESSION_URL_PATHS)


def _text(value: Any) -> str | None:
    return None if value is MISSING or isinstance(value, (dict, list)) else str(value)


class Signals:
    name = "signals"
    sources = frozenset({STREAM_SOURCE})

    def __init__(self, rules: IdentityRules, kinds: frozenset[str]) -> None:
        self.rules = rules
        self.kinds = kinds  # the signals some enabled aggregation counts

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        if envelope.kind not in self.kinds:
            return True
        user = self.rules.fullstory_user(envelope)
        user_id = user if user is not MISSING else envelope.resolved_user_id
        if user_id:
            key = user_key(user_id)
        elif (session := SESSION.resolve(envelope)) is not MISSING:
            key = anonymous_key(session)  # the anonymousId the frustration flow sends
        else:
            return True
        # Kept in the user's state and sent in messages: a long session id is kept as its digest, and
        # a URL longer than any replay link is left out.
        session_id = _text(SESSION_ID.resolve(envelope))
        session_id = short_key(session_id) if session_id is not None else None
        url = _text(SESSION_URL.resolve(envelope))
        url = url if url is not None and len(url) <= MAX_URL_CHARS else None
        result.signals.append(Signal(key, envelope.kind, envelope.received_at, session_id, url, envelope.event_id))
        return True
