"""Signature and token checks on raw bytes: Fullstory-Signature, Segment X-Signature, bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from pydantic import SecretStr

from fsbridge.sources.signatures import (
    SignatureError,
    segment_signed_bytes,
    sign_fullstory,
    sign_segment,
    verify_bearer,
    verify_fullstory,
    verify_segment,
)

NOW = 1_795_000_000
BODY = b'{"eventName":"note.created","version":1,"data":{"id":"798ith22928347"}}'
SECRETS = (SecretStr("new-secret"), SecretStr("old-secret"))


class TestFullstorySignature:
    def test_known_vector(self) -> None:
        """The header is base64 HMAC-SHA256 over `<raw body>:<org>:<ts>`, computed independently here."""
        digest = hmac.new(b"new-secret", BODY + b":o-1ABC:1795000000", hashlib.sha256).digest()
        expected = f"o:o-1ABC,t:1795000000,v:{base64.b64encode(digest).decode()}"
        assert expected == sign_fullstory(BODY, "new-secret", "o-1ABC", NOW)

    @pytest.mark.parametrize("secret", ["new-secret", "old-secret"])
    def test_any_configured_secret_verifies(self, secret: str) -> None:
        """During rotation a signature made with either secret is accepted."""
        verify_fullstory(BODY, sign_fullstory(BODY, secret, "o-1ABC", NOW), SECRETS, now=NOW)

    def test_millisecond_timestamp(self) -> None:
        """A 13-digit `t` is read as milliseconds."""
        header = sign_fullstory(BODY, "new-secret", "o-1ABC", NOW * 1000 + 250)
        verify_fullstory(BODY, header, SECRETS, now=NOW + 10)

    @pytest.mark.parametrize("skew", [301, -301, 3600])
    def test_stale_or_future_timestamp_is_refused(self, skew: int) -> None:
        """A timestamp more than 5 minutes away from now is refused even when the MAC is right."""
        header = sign_fullstory(BODY, "new-secret", "o-1ABC", NOW - skew)
        with pytest.raises(SignatureError, match="5 minutes"):
            verify_fullstory(BODY, header, SECRETS, now=NOW)

    def test_within_window_is_accepted(self) -> None:
        """A timestamp 299 s old is still inside the window."""
        verify_fullstory(BODY, sign_fullstory(BODY, "new-secret", "o-1ABC", NOW - 299), SECRETS, now=NOW)

    def test_unknown_secret_is_refused(self) -> None:
        """A signature made with a secret that is not configured does not verify."""
        with pytest.raises(SignatureError, match="does not match"):
            verify_fullstory(BODY, sign_fullstory(BODY, "other", "o-1ABC", NOW), SECRETS, now=NOW)

    def test_tampered_body_is_refused(self) -> None:
        """One changed byte in the body breaks the signature."""
        header = sign_fullstory(BODY, "new-secret", "o-1ABC", NOW)
        with pytest.raises(SignatureError):
            verify_fullstory(BODY.replace(b"798", b"799"), header, SECRETS, now=NOW)

    def test_org_is_part_of_the_signature(self) -> None:
        """Changing the org in the header breaks the signature."""
        header = sign_fullstory(BODY, "new-secret", "o-1ABC", NOW).replace("o:o-1ABC", "o:o-EVIL")
        with pytest.raises(SignatureError):
            verify_fullstory(BODY, header, SECRETS, now=NOW)

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "garbage",
            "o:x,t:1795000000",
            "o:x,v:abc",
            "o:x,t:soon,v:abc",
            "o:x,t:1,t:2,v:a",
            "o:,t:1,v:a",
        ],
    )
    def test_missing_or_malformed_header_is_refused(self, header: str | None) -> None:
        """Missing, incomplete or garbled headers are refused with a SignatureError."""
        with pytest.raises(SignatureError):
            verify_fullstory(BODY, header, SECRETS, now=NOW)


class TestSegmentSignature:
    def test_single_message_signs_the_raw_body(self) -> None:
        """For one message the signature is hex HMAC-SHA1 of the exact body bytes."""
        body = b'{"type":"track","event":"Order Completed","messageId":"m-1"}'
        assert hmac.new(b"s", body, hashlib.sha1).hexdigest() == sign_segment(body, "s")
        verify_segment(body, sign_segment(body, "s"), (SecretStr("s"),))

    def test_array_signs_the_exact_bytes_of_its_first_element(self) -> None:
        """For a JSON array only the first element's bytes are signed, whitespace and key order kept."""
        first = b'{"type":"identify","userId":"u1","traits":{"b":1,"a":"\\u00e9"}}'
        body = b" [ " + first + b' ,{"type":"track"}]'
        assert first == segment_signed_bytes(body)
        verify_segment(body, hmac.new(b"s", first, hashlib.sha1).hexdigest(), (SecretStr("s"),))

    def test_rotation_and_case_insensitive_hex(self) -> None:
        """Any configured secret verifies, and an upper-case hex digest is accepted."""
        body = b'{"type":"page"}'
        verify_segment(body, sign_segment(body, "old").upper(), (SecretStr("new"), SecretStr("old")))

    @pytest.mark.parametrize("header", [None, "", "00" * 20])
    def test_missing_or_wrong_signature_is_refused(self, header: str | None) -> None:
        """No header, or a digest from another secret, is refused."""
        with pytest.raises(SignatureError):
            verify_segment(b'{"type":"page"}', header, (SecretStr("s"),))


class TestBearer:
    @pytest.mark.parametrize("header", ["Bearer tok-2", "bearer tok-2", "Bearer  tok-1 "])
    def test_configured_token_passes(self, header: str) -> None:
        """Any configured token passes, whatever the scheme's case or surrounding spaces."""
        verify_bearer(header, (SecretStr("tok-1"), SecretStr("tok-2")))

    @pytest.mark.parametrize("header", [None, "", "Bearer", "Basic tok-1", "Bearer tok-3", "tok-1"])
    def test_other_headers_are_refused(self, header: str | None) -> None:
        """Missing, non-bearer or unknown tokens are refused."""
        with pytest.raises(SignatureError):
            verify_bearer(header, (SecretStr("tok-1"), SecretStr("tok-2")))
