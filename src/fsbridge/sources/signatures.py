"""Authenticity checks for inbound webhooks, each with the signer beside it so tests sign with the
same code they test (the standard-webhooks shape). Every comparison is constant-time and runs on
the raw bytes as received; nothing is re-serialised."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

FULLSTORY_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The request is not authentic; the message says why without revealing any secret."""


def sign_fullstory(body: bytes, secret: str, org_id: str, timestamp: int) -> str:
    """`Fullstory-Signature` header value: base64 HMAC-SHA256 over `<raw body>:<org>:<ts>`."""
    digest = hmac.new(secret.encode(), body + f":{org_id}:{timestamp}".encode(), hashlib.sha256).digest()
    return f"o:{org_id},t:{timestamp},v:{base64.b64encode(digest).decode()}"


def verify_fullstory(
    body: bytes,
    header: str | None,
    secrets: Sequence[SecretStr],
    now: float,
    tolerance: float = FULLSTORY_TOLERANCE_SECONDS,
) -> None:
    """Raise `SignatureError` unless `header` signs `body` with one of `secrets` within `tolerance`."""
    if not header:
        raise SignatureError("The Fullstory-Signature header is missing.")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition(":")
        if not sep or not value:
            raise SignatureError("The Fullstory-Signature header is malformed; expected o:<org>,t:<ts>,v:<sig>.")
        fields.setdefault(name, []).append(value)
    if not {"o", "t", "v"} <= fields.keys() or len(fields["o"]) != 1 or len(fields["t"]) != 1:
        raise SignatureError("The Fullstory-Signature header is malformed; expected o:<org>,t:<ts>,v:<sig>.")
    org_id, raw_ts = fields["o"][0], fields["t"][0]
    # ASCII digits only ("²".isdigit() is true), and at most 13 of them: Unix milliseconds.
    if not (raw_ts.isascii() and raw_ts.isdigit()) or len(raw_ts) > 13:
        raise SignatureError("The Fullstory-Signature timestamp is not Unix seconds or milliseconds.")
    timestamp = int(raw_ts) / 1000 if len(raw_ts) == 13 else int(raw_ts)
    if abs(now - timestamp) > tolerance:
        raise SignatureError("The Fullstory-Signature timestamp is more than 5 minutes from now.")
    signed = body + f":{org_id}:{raw_ts}".encode()
    expected = [
        base64.b64encode(hmac.new(s.get_secret_value().encode(), signed, hashlib.sha256).digest()) for s in secrets
    ]
    if not _any_equal(expected, [v.encode() for v in fields["v"]]):
        raise SignatureError("The Fullstory-Signature does not match any configured secret.")


def sign_segment(body: bytes, secret: str) -> str:
    """`X-Signature` for a Segment webhook: hex HMAC-SHA1 of the signed bytes (see `segment_signed_bytes`)."""
    return hmac.new(secret.encode(), segment_signed_bytes(body), hashlib.sha1).hexdigest()


def segment_signed_bytes(body: bytes) -> bytes:
    """The bytes Segment signs: the whole body, or for a JSON array the exact bytes of its first element.

    Found by a scan of brackets and strings, not a JSON parser: the body is not authenticated yet, so
    nothing here may recurse on its nesting or convert its numbers. Raises UnicodeDecodeError only."""
    text = body.decode("utf-8", errors="strict")
    stripped = text.lstrip()
    if not stripped.startswith("["):
        return body
    start = len(text) - len(stripped) + 1
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    end = _end_of_value(text, start)
    return body if end is None else text[start:end].encode("utf-8")


def _end_of_value(text: str, start: int) -> int | None:
    """Where the JSON value starting at `start` ends, or None when the text ends first."""
    depth, i, n = 0, start, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                return None
            if depth == 0:
                return i + 1
        elif char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                return i if i > start else None
            depth -= 1
            if depth == 0:
                return i + 1
        elif depth == 0 and char in ", \t\r\n":
            return i if i > start else None
        i += 1
    return None


def verify_segment(body: bytes, header: str | None, secrets: Sequence[SecretStr]) -> None:
    """Raise `SignatureError` unless `header` is the X-Signature of `body` with one of `secrets`."""
    if not header:
        raise SignatureError("The X-Signature header is missing.")
    try:
        signed = segment_signed_bytes(body)
    except UnicodeDecodeError as exc:
        raise SignatureError("The body is not UTF-8, so its X-Signature cannot match.") from exc
    expected = [hmac.new(s.get_secret_value().encode(), signed, hashlib.sha1).hexdigest().encode() for s in secrets]
    if not _any_equal(expected, [header.strip().lower().encode()]):
        raise SignatureError("The X-Signature does not match any configured secret.")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def verify_bearer(authorization: str | None, tokens: Sequence[SecretStr]) -> None:
    """Raise `SignatureError` unless the bearer token is one of `tokens`."""
    token = bearer_token(authorization)
    if token is None:
        raise SignatureError("The Authorization: Bearer token is missing.")
    if not _any_equal([t.get_secret_value().encode() for t in tokens], [token.encode()]):
        raise SignatureError("The bearer token is not one of the configured tokens.")


def _any_equal(expected: Sequence[bytes], given: Sequence[bytes]) -> bool:
    # Every pair is compared, so timing does not reveal which secret (if any) matched.
    matched = False
    for e in expected:
        for g in given:
            matched |= hmac.compare_digest(e, g)
    return matched
