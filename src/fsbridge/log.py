"""Structured logging (structlog): JSON or console lines with a request id, and a redactor that
masks signatures, tokens, write keys and API keys wherever they would appear."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# The current request's id: one context variable is far cheaper per request than structlog's bind
# and unbind, and `add_request_id` puts it on every line logged meanwhile.
REQUEST_ID: ContextVar[str | None] = ContextVar("fsbridge_request_id", default=None)
_REQUEST_ID_PREFIX = secrets.token_hex(6)
_REQUEST_COUNTER = itertools.count(1)


def request_id_for(given: str | None) -> str:
    """The caller's X-Request-ID (at most 128 characters), else a new id."""
    if given:
        return given[:128]
    # A random per-process prefix and a counter: unique, and far cheaper than a uuid4 per request.
    return f"{_REQUEST_ID_PREFIX}{next(_REQUEST_COUNTER):010x}"


def add_request_id(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


_SENSITIVE_KEY = re.compile(
    r"(secret|token|signature|authorization|write_?key|api_?key|password|cookie)", re.IGNORECASE
)


class Redactor:
    """structlog processor: masks values under sensitive keys, and any known secret inside any string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        return {key: self._clean(key, value) for key, value in event_dict.items()}

    def _clean(self, key: str, value: Any) -> Any:
        if _SENSITIVE_KEY.search(key) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self._mask(value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, v) for v in value]
        return value

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def configure_logging(
    fmt: str | None = None, secrets: Iterable[str] = (), level: int = logging.INFO, *, cache: bool = False
) -> None:
    """Configure structlog once for the process; `fmt` is `json`, `console`, or None for automatic.
    `cache` (the server) binds each module's logger once, instead of on every call."""
    if fmt is None:
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Redactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # The process's own stdout, bound once: not whatever sys.stdout is swapped for later.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=cache,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
