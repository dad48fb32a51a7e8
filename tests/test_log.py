"""Logs never carry secrets: sensitive keys and known secret values are redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import structlog

from fsbridge.log import REDACTED, Redactor, configure_logging
from tests.conftest import STREAM_TOKEN, WRITE_KEY, make_settings


def test_sensitive_keys_are_redacted_at_any_depth() -> None:
    """Values under keys such as authorization, signature, write_key or api_key are masked, nested too."""
    clean = Redactor()(
        None,
        "info",
        {
            "event": "x",
            "authorization": "Bearer abc",
            "headers": {"Fullstory-Signature": "o:1,t:2,v:3", "accept": "json"},
            "write_key": "wk",
            "items": [{"api_key": "k"}],
        },
    )
    assert REDACTED == clean["authorization"]
    assert {"Fullstory-Signature": REDACTED, "accept": "json"} == clean["headers"]
    assert REDACTED == clean["write_key"]
    assert [{"api_key": REDACTED}] == clean["items"]


def test_known_secret_values_are_masked_inside_any_text(tmp_path: Path) -> None:
    """A configured secret that appears inside a message is replaced, whatever the key."""
    redactor = Redactor(make_settings(tmp_path).secret_values())
    clean = redactor(None, "info", {"event": "e", "error": f"POST failed for key {WRITE_KEY} and {STREAM_TOKEN}"})
    assert WRITE_KEY not in clean["error"]
    assert STREAM_TOKEN not in clean["error"]
    assert clean["error"].count(REDACTED) == 2


def test_configured_json_logs_are_redacted(tmp_path: Path) -> None:
    """The configured JSON pipeline emits one JSON object per line with secrets masked."""
    out = io.StringIO()
    configure_logging("json", make_settings(tmp_path).secret_values(), level=logging.DEBUG)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    try:
        structlog.get_logger("t").info("delivery.attempted", error=f"401 with {WRITE_KEY}", token="t0ken")
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert "delivery.attempted" == line["event"]
    assert WRITE_KEY not in out.getvalue()
    assert REDACTED == line["token"]
