"""Sample webhooks that `fsbridge send-sample` posts, correctly signed, so a new user sees the
whole path work: Streams frustration clicks (bearer token), system webhooks (signature) and a
Segment identify (X-Signature)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from fsbridge.settings import Settings
from fsbridge.sources.signatures import sign_fullstory, sign_segment

SAMPLE_ORG = "o-1ABC-na1"


@dataclass(frozen=True)
class SampleRequest:
    path: str
    body: bytes
    headers: dict[str, str]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _click(event_type: str) -> dict[str, Any]:
    session = f"5557778531805533:{secrets.randbelow(10**16):016d}"
    return {
        "event": {
            "event_type": event_type,
            "event_time": _now_iso(),
            "url": "https://shop.example.com/checkout",
            "target_text": "Pay now",
            "element_name": "checkout-pay-button",
            "page_name": "Checkout",
        },
        "session": {"session_id": session},
        "user": {
            "user_id": "u_1842",
            "user_email": "Ada.Lovelace@Example.com ",
            "user_display_name": "Ada Lovelace",
        },
        "session_url": f"https://app.fullstory.com/ui/{SAMPLE_ORG}/session/{session.replace(':', '%3A')}",
        "stream": {"name": "frustration"},
    }


def _note_created() -> dict[str, Any]:
    return {
        "eventName": "note.created",
        "version": 1,
        "data": {
            "id": secrets.token_hex(7),
            "created": _now_iso(),
            "author": "ada@example.com",
            "text": "Customer rage-clicked on Pay now; see this session.",
            "sessionUrl": f"https://app.fullstory.com/ui/{SAMPLE_ORG}/session/6915774531905556:5557778531805533",
            "notedTime": _now_iso(),
        },
    }


def _stream(event_type: str) -> Callable[[Settings, float], SampleRequest]:
    def build(settings: Settings, now: float) -> SampleRequest:
        body = orjson.dumps(_click(event_type))
        headers = {"Content-Type": "application/json"}
        if settings.fullstory_stream_tokens:
            headers["Authorization"] = f"Bearer {settings.fullstory_stream_tokens[0].get_secret_value()}"
        elif settings.fullstory_webhook_secrets:
            secret = settings.fullstory_webhook_secrets[0].get_secret_value()
            headers["Fullstory-Signature"] = sign_fullstory(body, secret, SAMPLE_ORG, int(now))
        return SampleRequest("/webhooks/fullstory/streams/frustration", body, headers)

    return build


def _system(payload: Callable[[], dict[str, Any]]) -> Callable[[Settings, float], SampleRequest]:
    def build(settings: Settings, now: float) -> SampleRequest:
        body = orjson.dumps(payload())
        headers = {"Content-Type": "application/json"}
        if settings.fullstory_webhook_secrets:
            secret = settings.fullstory_webhook_secrets[0].get_secret_value()
            headers["Fullstory-Signature"] = sign_fullstory(body, secret, SAMPLE_ORG, int(now))
        return SampleRequest("/webhooks/fullstory", body, headers)

    return build


def _identify(settings: Settings, now: float) -> SampleRequest:
    body = orjson.dumps(
        {
            "type": "identify",
            "messageId": f"sample-{secrets.token_hex(8)}",
            "userId": "u_1842",
            "anonymousId": "9f1f3c2e-6d3a-4b7e-9b1a-0f4c2d7e8a11",
            "traits": {
                "email": "Ada.Lovelace@Example.com",
                "firstName": "Ada",
                "lastName": "Lovelace",
                "plan": "enterprise",
                "createdAt": "2024-03-01T10:00:00Z",
            },
            "timestamp": _now_iso(),
        }
    )
    headers = {"Content-Type": "application/json"}
    if settings.segment_webhook_secrets:
        headers["X-Signature"] = sign_segment(body, settings.segment_webhook_secrets[0].get_secret_value())
    elif settings.segment_webhook_tokens:
        headers["Authorization"] = f"Bearer {settings.segment_webhook_tokens[0].get_secret_value()}"
    return SampleRequest("/webhooks/segment", body, headers)


SAMPLES: dict[str, Callable[[Settings, float], SampleRequest]] = {
    "rage_click": _stream("rage-click"),
    "dead_click": _stream("dead_click"),
    "error_click": _stream("ErrorClick"),
    "note_created": _system(_note_created),
    "identify": _identify,
}
