"""Jira Cloud target (Part 2): an alert becomes `POST {FSBRIDGE_JIRA_URL}/rest/api/3/issue` with
Basic auth (email and API token), a `summary`, a `description` in Atlassian Document Format, and
the labels `fsbridge` and `fsb-<hash of the delivery's messageId>`. The project and issue type come
from `destinations.jira`. Jira answers 201 with the issue key, which stays on the delivery (its
last response): the alert's issue.

Jira has no idempotency key, so a repeated alert (the same messageId) is one delivery, and before
a retry the destination asks Jira whether an issue with the alert's label exists already
(`/rest/api/3/search/jql`; eventually consistent, so the local delivery is the primary check): a
create that timed out after Jira made the issue is not made twice."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from fsbridge import __version__
from fsbridge.store import Delivery
from fsbridge.targets import SendResult, elapsed_ms, response_result, transport_failure

NAME = "jira"
SUMMARY_CHARS = 255  # Jira refuses a longer summary
DESCRIPTION_CHARS = 30_000


def adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document: one paragraph per paragraph of the text."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()] or [" "]
    return {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": p.strip()}]} for p in paragraphs],
    }


def alert_label(message_id: str) -> str:
    """The label that names one alert's issue (labels cannot hold spaces)."""
    return "fsb-" + hashlib.sha256(message_id.encode()).hexdigest()[:16]


class JiraIssue(BaseModel):
    """What a flow maps for `jira.issue`: the summary and the description as text, and labels."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(min_length=1)
    description: str = ""
    labels: list[str] = Field(default_factory=list)
    messageId: str = Field(min_length=1, max_length=100)  # noqa: N815 - the alert's stable id, like Segment's

    @field_validator("summary")
    @classmethod
    def _one_line(cls, value: str) -> str:
        line = " ".join(value.split())
        return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"

    @field_validator("labels")
    @classmethod
    def _no_spaces(cls, value: list[str]) -> list[str]:
        return ["-".join(label.split()) for label in value if label.strip()]


class JiraDestination:
    name = NAME
    max_message_bytes: int | None = 64 * 1024

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        site_url: str | None,
        email: str | None,
        api_token: SecretStr | None,
        project_key: str | None,
        issue_type: str,
        dry_run: bool,
    ) -> None:
        self._client = client
        self._base = (site_url or "").rstrip("/")
        self._auth = (
            "Basic " + base64.b64encode(f"{email}:{api_token.get_secret_value()}".encode()).decode()
            if email and api_token
            else None
        )
        self.project_key = project_key
        self.issue_type = issue_type
        self.dry_run = dry_run
        self.concurrency = 1
        self.messages_per_request = 1
        self.claim_limit = 5

    def plan(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        return [[d] for d in deliveries]

    def request_body(self, delivery: Delivery) -> dict[str, Any]:
        """The `POST /rest/api/3/issue` body for a stored alert."""
        issue = orjson.loads(delivery.body)
        description = str(issue.get("description", ""))[:DESCRIPTION_CHARS]
        labels = ["fsbridge", alert_label(delivery.message_id), *issue.get("labels", [])]
        return {
            "fields": {
                "project": {"key": self.project_key},
                "issuetype": {"name": self.issue_type},
                "summary": issue["summary"],
                "description": adf(description),
                "labels": list(dict.fromkeys(labels)),
            }
        }

    async def send(self, batch: Sequence[Delivery]) -> SendResult:
        [delivery] = batch
        started = time.perf_counter()
        if self._auth is None or not self._base:
            return SendResult(
                401, 0.0, error="FSBRIDGE_JIRA_URL, FSBRIDGE_JIRA_EMAIL or FSBRIDGE_JIRA_API_TOKEN is not set"
            )
        if not self.project_key:
            return SendResult(400, 0.0, error="destinations.jira.project_key is not set in config/fsbridge.yaml")
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "User-Agent": f"fsbridge/{__version__}",
        }
        try:
            if delivery.attempts > 0 and (found := await self._existing(delivery, headers)) is not None:
                return SendResult(
                    200, elapsed_ms(started), response_excerpt=orjson.dumps(found).decode(), already_done=True
                )
            response = await self._client.post(
                f"{self._base}/rest/api/3/issue", content=orjson.dumps(self.request_body(delivery)), headers=headers
            )
        except httpx.HTTPError as exc:
            return transport_failure(exc, started, detail=False)
        return response_result(response, started, "Jira")

    async def _existing(self, delivery: Delivery, headers: dict[str, str]) -> dict[str, Any] | None:
        """The issue an earlier attempt of this alert created, if Jira already shows it."""
        jql = f'labels = "{alert_label(delivery.message_id)}"'
        response = await self._client.get(
            f"{self._base}/rest/api/3/search/jql", params={"jql": jql, "fields": "key", "maxResults": "1"},
            headers=headers,
        )  # fmt: skip
        if response.status_code != 200:
            return None
        issues = response.json().get("issues") or []
        return {"key": issues[0].get("key"), "found_by": "label"} if issues else None

    async def aclose(self) -> None:
        await self._client.aclose()
