"""Identity links: which Segment userId, anonymousIds, normalised email (or its SHA-256), Fullstory
uid and account belong together. Claims come from Segment identify and track calls; Fullstory
events that carry only an email or an anonymous id are resolved to the userId through them."""

from __future__ import annotations

import hashlib
from typing import Any

from fsbridge.bounds import user_id_text
from fsbridge.config import IdentityConfig
from fsbridge.engine.mapping import Path
from fsbridge.envelope import MISSING, Envelope, lookup
from fsbridge.store import GroupMembership, IdentityClaim

CLAIMING_TYPES = frozenset({"identify", "track"})


def normalise_email(value: Any) -> str | None:
    """Trimmed and lower-cased, or None when it is not an email-like string."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    return email if "@" in email else None


def email_sha256(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def _text(value: Any) -> str | None:
    return None if value is MISSING else user_id_text(value)


class IdentityRules:
    """The configured rules, applied to Segment messages and Fullstory payloads."""

    def __init__(self, config: IdentityConfig) -> None:
        self.config = config
        self.fullstory_user_id = Path(*config.fullstory_user_id_paths, cast="string")
        self._last_user: tuple[Envelope | None, Any] = (None, MISSING)

    def fullstory_user(self, envelope: Envelope) -> Any:
        """The Fullstory event's user id, trimmed like every id (MISSING when it has none), read once per envelope: the
        identity look-up, the signal stage and the feature-usage stage each ask for it of every
        click. The last envelope's answer is kept (envelopes are immutable; one tuple, replaced whole)."""
        last, user = self._last_user
        if last is not envelope:
            user = _text(self.fullstory_user_id.resolve(envelope)) or MISSING
            self._last_user = (envelope, user)
        return user

    def named_user(self, envelope: Envelope) -> str | None:
        """The userId an event is about, as far as the event itself (and its identity links) says:
        what a deletion's tombstone is checked against."""
        if envelope.source == "segment":
            return self.segment_user_id(envelope.payload)
        if envelope.source == "fullstory_api":
            return _text(lookup(envelope.payload, "user_id"))
        user = self.fullstory_user(envelope)
        return user if isinstance(user, str) else envelope.resolved_user_id

    def segment_user_id(self, message: Any) -> str | None:
        return _text(lookup(message, self.config.segment_user_id_path))

    def fullstory_uid(self, user_id: str) -> str:
        return f"{self.config.fullstory_uid_prefix}{user_id}"

    def email_keys(self, email: str) -> list[tuple[str, str]]:
        """How an email is kept in (and looked up from) the links: plain and hashed, or hashed only."""
        hashed = ("email_sha256", email_sha256(email))
        return [hashed] if self.config.hash_emails else [("email", email), hashed]

    def claims(self, envelope: Envelope) -> list[IdentityClaim]:
        """What a Segment identify or track says about who is who."""
        message = envelope.payload
        if envelope.kind not in CLAIMING_TYPES or not isinstance(message, dict):
            return []
        user_id = self.segment_user_id(message)
        if user_id is None:
            return []
        keys: list[tuple[str, str]] = [("fullstory_uid", self.fullstory_uid(user_id))]
        anonymous_id = _text(message.get("anonymousId"))
        if anonymous_id:
            keys.append(("anonymous_id", anonymous_id))
        email = normalise_email(lookup(message, "traits.email")) or normalise_email(
            lookup(message, "context.traits.email")
        )
        if email:
            keys += self.email_keys(email)
        return [IdentityClaim(kind, value, user_id) for kind, value in keys]

    def groups(self, envelope: Envelope) -> list[GroupMembership]:
        message = envelope.payload
        if not isinstance(message, dict):
            return []
        user_id = self.segment_user_id(message)
        group_id = _text(message.get("groupId")) if envelope.kind == "group" else None
        group_id = group_id or _text(lookup(message, "context.groupId"))
        return [GroupMembership(group_id, user_id)] if user_id and group_id else []

    def user_id_for_uid(self, uid: str) -> str | None:
        """The Segment userId behind a Fullstory uid (None when the uid lacks the configured prefix)."""
        prefix = self.config.fullstory_uid_prefix
        if not uid.startswith(prefix) or len(uid) == len(prefix):
            return None
        return uid[len(prefix) :]

    def fullstory_email(self, envelope: Envelope) -> str | None:
        """The normalised email a Fullstory payload carries, if any."""
        for path in self.config.fullstory_email_paths:
            email = normalise_email(envelope.get(path))
            if email:
                return email
        return None

    def lookup_keys(self, envelope: Envelope) -> list[tuple[str, str]]:
        """For a Fullstory event without a user id: the identifiers that may resolve it, best first."""
        if self.fullstory_user(envelope) is not MISSING:
            return []
        keys: list[tuple[str, str]] = []
        for path in self.config.fullstory_anonymous_id_paths:
            anonymous_id = _text(envelope.get(path))
            if anonymous_id:
                keys.append(("anonymous_id", anonymous_id))
        email = self.fullstory_email(envelope)
        if email:
            keys += self.email_keys(email)
        return keys
