"""The JSON bodies the ops API takes, validated where they enter: what a bulk replay is narrowed by,
and the moments (ISO 8601 or Unix seconds) its filters are written in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from fsbridge.bounds import quote
from fsbridge.store.deliveries import ReplayFilter


class ReplayRequest(BaseModel):
    """Which deliveries to send again: every filter narrows the set."""

    status: Literal["dead", "parked", "dry_run", "delivered"] = "dead"
    flow: str | None = Field(default=None, max_length=200)
    destination: str | None = Field(default=None, max_length=200)
    since: str | float | None = Field(default=None, description="created at or after: ISO 8601 or Unix seconds")
    until: str | float | None = Field(default=None, description="created at or before: ISO 8601 or Unix seconds")
    status_code: int | None = Field(default=None, ge=100, le=599, description="the last status code it got")

    @field_validator("since", "until")
    @classmethod
    def _moment(cls, value: str | float | None) -> float | None:
        return None if value is None else moment(value)

    def narrower(self) -> ReplayFilter:
        return ReplayFilter(self.destination, _seconds(self.since), _seconds(self.until), self.status_code)


def _seconds(value: str | float | None) -> float | None:
    return None if value is None else float(value)


def moment(value: str | float) -> float:
    """Unix seconds from ISO 8601 (UTC unless it says otherwise) or from a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        msg = f"{quote(text)} is not ISO 8601 or Unix seconds"
        raise ValueError(msg) from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
