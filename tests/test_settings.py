"""Settings from the environment are checked at start-up like the configuration file: one line per
wrong variable naming it, exit 2, no traceback; an empty variable overrides .env."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsbridge.cli import app
from fsbridge.errors import ConfigError
from fsbridge.settings import ENV_VARIABLES, load_settings

runner = CliRunner()


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("FSBRIDGE_DRY_RUN", "maybe", "FSBRIDGE_DRY_RUN: Input should be a valid boolean"),
        ("FSBRIDGE_SEGMENT_API_URL", "api.segment.io", "FSBRIDGE_SEGMENT_API_URL: must be an http(s) URL with a host"),
        ("FSBRIDGE_FULLSTORY_API_URL", "ftp://x", "FSBRIDGE_FULLSTORY_API_URL: must be an http(s) URL"),
        ("FSBRIDGE_FULLSTORY_STREAM_TOKENS", "abc,,def", "FSBRIDGE_FULLSTORY_STREAM_TOKENS: has an empty item"),
        ("FSBRIDGE_SEGMENT_WEBHOOK_SECRETS", "abc, ", "FSBRIDGE_SEGMENT_WEBHOOK_SECRETS: has an empty item"),
        ("FSBRIDGE_SLACK_WEBHOOK_URL", "hooks.slack.com/x", "FSBRIDGE_SLACK_WEBHOOK_URL: must be the https URL"),
        ("FSBRIDGE_PORT", "http", "FSBRIDGE_PORT: Input should be a valid integer"),
        ("FSBRIDGE_LOG_FORMAT", "xml", "FSBRIDGE_LOG_FORMAT: Input should be 'json' or 'console'"),
    ],
)
def test_a_wrong_variable_is_one_line_naming_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    """The command stops with exit 2 and one line per problem, naming the variable; no traceback."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    [line] = caught.value.problems
    assert line.startswith(says)
    result = runner.invoke(app, ["check-config"])
    assert 2 == result.exit_code
    assert says in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_secret_is_never_quoted(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong Slack URL (a secret) is named, not printed."""
    monkeypatch.setenv("FSBRIDGE_SLACK_WEBHOOK_URL", "http://hooks.example/T000/SECRETPART")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "SECRETPART" not in str(caught.value)


def test_an_empty_variable_overrides_dot_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FSBRIDGE_OPS_TOKEN= (empty) in the environment unsets the .env token; unset, .env's applies."""
    (clean_env / ".env").write_text("FSBRIDGE_OPS_TOKEN=from-dot-env-123\nFSBRIDGE_PORT=9001\n")
    settings = load_settings()
    assert settings.ops_token is not None
    assert 9001 == settings.port
    monkeypatch.setenv("FSBRIDGE_OPS_TOKEN", "")
    monkeypatch.setenv("FSBRIDGE_PORT", " ")
    settings = load_settings()
    assert settings.ops_token is None
    assert 8000 == settings.port


def test_an_unreachable_postgresql_is_one_line_and_exit_3(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that needs the store names the server (never the password) in one line, and exits 3."""
    (clean_env / "config").mkdir()
    (clean_env / "config" / "fsbridge.yaml").write_text("{}\n")
    monkeypatch.setenv("FSBRIDGE_DATABASE_URL", "postgresql://fsb:hunter2-secret@127.0.0.1:1/fsbridge")
    result = runner.invoke(app, ["jobs", "list"])
    assert 3 == result.exit_code
    [line] = result.output.strip().splitlines()
    assert line.startswith("FSBRIDGE_DATABASE_URL: cannot reach PostgreSQL at 127.0.0.1:1/fsbridge")
    assert "hunter2" not in result.output


def test_a_secret_may_come_from_a_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FSBRIDGE_<NAME>_FILE reads a secret from a file (Docker or Kubernetes secrets), trimmed; the variable
    itself wins; an unreadable file is one line naming the variable."""
    secret = clean_env / "ops_token"
    secret.write_text("from-a-file-0123456789\n")
    monkeypatch.setenv("FSBRIDGE_OPS_TOKEN_FILE", str(secret))
    tokens = clean_env / "tokens"
    tokens.write_text("a-token-1,a-token-2")
    monkeypatch.setenv("FSBRIDGE_FULLSTORY_STREAM_TOKENS_FILE", str(tokens))
    settings = load_settings()
    assert settings.ops_token is not None
    assert "from-a-file-0123456789" == settings.ops_token.get_secret_value()
    assert ["a-token-1", "a-token-2"] == [t.get_secret_value() for t in settings.fullstory_stream_tokens]
    monkeypatch.setenv("FSBRIDGE_OPS_TOKEN", "direct-0123456789")
    assert "direct-0123456789" == load_settings().ops_token.get_secret_value()  # type: ignore[union-attr]
    monkeypatch.setenv("FSBRIDGE_SEGMENT_WRITE_KEY_FILE", str(clean_env / "missing"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    [line] = caught.value.problems
    assert line.startswith("FSBRIDGE_SEGMENT_WRITE_KEY_FILE: cannot read")
