"""How a user is named where the engine and the store must agree: the per-user state's keys
(`u:<userId>`, or `a:<anonymousId>` for a user Segment does not know yet, the anonymousId derived
from the session as the frustration flow derives it), and the stable UUIDs such ids are made from."""

from __future__ import annotations

import uuid
from typing import Any

_NAMESPACE = uuid.UUID("4f1c5d0e-8a57-4a3b-9c1e-6f7b2d9e0a11")


def stable_uuid(namespace: str, value: Any) -> str:
    """The UUID `{stable_id: ..., namespace: ...}` derives from a value."""
    return str(uuid.uuid5(_NAMESPACE, f"{namespace}:{value}"))


def user_key(user_id: str) -> str:
    return f"u:{user_id}"


def anonymous_key(session: Any) -> str:
    """The key of a user known only by a session: the anonymousId the frustration track carries."""
    return f"a:{stable_uuid('session', session)}"
