"""Process settings: every `FSBRIDGE_*` environment variable of the contract, read from the
environment and from `.env` in the working directory (real environment variables win, an empty one
included: it means "not set"). `load_settings` checks them all at start-up, as `check-config` checks
the configuration file: each problem is one line naming the variable, what is wrong and the fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fsbridge.errors import ConfigError

DESTINATIONS = ("segment", "fullstory", "slack", "jira")

SecretList = Annotated[tuple[SecretStr, ...], NoDecode]


class Settings(BaseSettings):
    """All settings of one fsbridge process. Secrets are `SecretStr`, so they never print."""

    model_config = SettingsConfigDict(
        env_prefix="FSBRIDGE_",
        env_file=".env",
        env_ignore_empty=False,
        extra="ignore",
    )

    host: str = "127.0.0.1"  # address `fsbridge serve` binds
    port: int = Field(default=8000, ge=1, le=65535)  # port `fsbridge serve` listens on
    database_url: str = "sqlite:///var/fsbridge.db"  # sqlite:///path/to/file.db or postgresql://user:pass@host:port/db
    config: Path = Path("config/fsbridge.yaml")  # the flow configuration file

    segment_write_key: SecretStr | None = None  # Segment source write key for the Tracking API
    segment_api_url: str = "https://api.segment.io"  # Tracking API base URL (EU: https://events.eu1.segmentapis.com)
    fullstory_api_key: SecretStr | None = None  # Fullstory server API key
    fullstory_api_url: str = "https://api.fullstory.com"  # Fullstory API base URL
    slack_webhook_url: SecretStr | None = None  # Slack incoming-webhook URL for alerts
    jira_url: str | None = None  # https://<site>.atlassian.net
    jira_email: str | None = None  # the Jira account's email (Basic auth with the API token)
    jira_api_token: SecretStr | None = None  # the Jira account's API token

    fullstory_webhook_secrets: SecretList = ()  # secrets for Fullstory-Signature (two or more during rotation)
    fullstory_stream_tokens: SecretList = ()  # bearer tokens accepted on the Streams endpoint
    segment_webhook_secrets: SecretList = ()  # shared secrets for Segment X-Signature
    segment_webhook_tokens: SecretList = ()  # bearer tokens; required for batched (array) Segment deliveries
    ops_token: SecretStr | None = None  # bearer token for /ops and /metrics; unset: loopback clients only

    dry_run: bool | None = None  # true: render and record deliveries but send nothing
    log_format: Literal["json", "console"] | None = None  # json or console (json when stdout is not a terminal)

    # First retry delay; later ones grow exponentially, with jitter.
    retry_base_seconds: float = Field(default=1.0, ge=0)
    retry_max_seconds: float = Field(default=3600.0, ge=0)  # the longest single wait between two attempts
    # How long a delivery is retried before it becomes a dead letter.
    retry_horizon_seconds: float = Field(default=86400.0, ge=0)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)  # largest inbound body accepted

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, values: Any) -> Any:
        # An empty variable overrides .env and means "not set": the field's default.
        if not isinstance(values, dict):
            return values
        values = {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}
        # A secret may come from a file (Docker and Kubernetes secrets): FSBRIDGE_<NAME>_FILE.
        for name in SECRET_FIELDS:
            variable = f"FSBRIDGE_{name.upper()}_FILE"
            if (path := os.environ.get(variable, "").strip()) and name not in values:
                try:
                    values[name] = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    msg = f"{variable}: cannot read {path} ({exc.strerror}); point it at a readable file"
                    raise ValueError(msg) from None
        return values

    @field_validator(
        "fullstory_webhook_secrets",
        "fullstory_stream_tokens",
        "segment_webhook_secrets",
        "segment_webhook_tokens",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            if not all(parts):
                msg = "has an empty item (two commas in a row, or one at an end): remove it"
                raise ValueError(msg)
            return tuple(parts)
        return value

    @field_validator("segment_api_url", "fullstory_api_url", "jira_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"must be an http(s) URL with a host, such as https://api.example.com, not {value.strip()[:80]!r}"
            raise ValueError(msg)
        return value.strip().rstrip("/")

    @field_validator("slack_webhook_url")
    @classmethod
    def _slack_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value().strip())
            if parts.scheme != "https" or not parts.hostname:
                msg = "must be the https URL of a Slack incoming webhook (https://hooks.slack.com/services/...)"
                raise ValueError(msg)
        return value

    def credentials_for(self, destination: str) -> SecretStr | None:
        """The credential that lets fsbridge send to `destination`, if configured."""
        return {
            "segment": self.segment_write_key,
            "fullstory": self.fullstory_api_key,
            "slack": self.slack_webhook_url,
            # Jira needs its site and account too: without all three, it stays in dry-run.
            "jira": self.jira_api_token if self.jira_url and self.jira_email else None,
        }[destination]

    def is_dry_run(self, destination: str) -> bool:
        """Dry-run is forced by FSBRIDGE_DRY_RUN=true, and automatic for a destination without credentials."""
        if self.dry_run is True:
            return True
        return self.credentials_for(destination) is None

    def secret_values(self) -> list[str]:
        """Every configured secret in clear, so the log redactor can mask them wherever they appear."""
        singles = (
            self.segment_write_key,
            self.fullstory_api_key,
            self.slack_webhook_url,
            self.jira_api_token,
            self.ops_token,
        )
        lists = (
            self.fullstory_webhook_secrets,
            self.fullstory_stream_tokens,
            self.segment_webhook_secrets,
            self.segment_webhook_tokens,
        )
        values = [s.get_secret_value() for s in singles if s is not None]
        values += [s.get_secret_value() for group in lists for s in group]
        return [v for v in values if len(v) >= 4]


SECRET_FIELDS = tuple(name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation))
ENV_VARIABLES = tuple(f"FSBRIDGE_{name.upper()}" for name in Settings.model_fields)

_HINTS = {
    "bool_parsing": "write true or false",
    "int_parsing": "write a whole number",
    "float_parsing": "write a number",
    "literal_error": "write one of the values named",
}


def load_settings() -> Settings:
    """The settings, or ConfigError with one line per wrong variable (never its value if secret)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if not error["loc"]:  # a check across variables names its variable itself
                problems.append(f"{message}.")
                continue
            variable = f"FSBRIDGE_{str(error['loc'][0]).upper()}"
            hint = _HINTS.get(error["type"])
            problems.append(f"{variable}: {message}" + (f"; {hint}." if hint else "."))
        raise ConfigError(problems) from None
