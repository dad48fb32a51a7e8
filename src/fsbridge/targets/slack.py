"""Slack target: a message to an incoming webhook (`FSBRIDGE_SLACK_WEBHOOK_URL`), text with
optional Block Kit blocks. Slack answers 200 `ok`; 400 invalid_payload, 403, 404 no_service,
410 channel_is_archived and 429 are classified like any other destination's statuses."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fsbridge import __version__
from fsbridge.store import Delivery
from fsbridge.targets import SendResult, response_result, transport_failure

NAME = "slack"


def escape_mrkdwn(text: str) -> str:
    """Text from outside, safe in Slack's text and mrkdwn: `<!channel>`, `<@U123>` and
    `<https://evil.example|Click here>` stay text, not mentions or disguised links (Slack's rule:
    escape `&`, `<` and `>`, nothing else)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=40_000)
    blocks: list[dict[str, Any]] | None = None
    unfurl_links: bool | None = None


class SlackDestination:
    name = NAME
    max_message_bytes: int | None = None

    def __init__(self, client: httpx.AsyncClient, *, webhook_url: SecretStr | None, dry_run: bool) -> None:
        self._client = client
        self._url = webhook_url
        self.dry_run = dry_run
        self.concurrency = 1  # Slack allows about one message a second per webhook
        self.messages_per_request = 1
        self.claim_limit = 5

    def plan(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        return [[d] for d in deliveries]

    async def send(self, batch: Sequence[Delivery]) -> SendResult:
        [delivery] = batch
        if self._url is None:
            return SendResult(401, 0.0, error="FSBRIDGE_SLACK_WEBHOOK_URL is not set")
        started = time.perf_counter()
        try:
            response = await self._client.post(
                self._url.get_secret_value(),
                content=delivery.body,
                headers={"Content-Type": "application/json", "User-Agent": f"fsbridge/{__version__}"},
            )
        except httpx.HTTPError as exc:
            return transport_failure(exc, started, detail=False)
        return response_result(response, started, "Slack")

    async def aclose(self) -> None:
        await self._client.aclose()
