"""Deployment files, checked without a Docker engine: the compose file's services, healthchecks and
settings; .env.example against the real settings; the Dockerfile's install step against the README."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fsbridge.settings import ENV_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
CONTRACT_VARIABLES = {
    "FSBRIDGE_DATABASE_URL", "FSBRIDGE_CONFIG", "FSBRIDGE_SEGMENT_WRITE_KEY", "FSBRIDGE_SEGMENT_API_URL",
    "FSBRIDGE_FULLSTORY_API_KEY", "FSBRIDGE_FULLSTORY_API_URL", "FSBRIDGE_FULLSTORY_WEBHOOK_SECRETS",
    "FSBRIDGE_FULLSTORY_STREAM_TOKENS", "FSBRIDGE_SEGMENT_WEBHOOK_SECRETS", "FSBRIDGE_SEGMENT_WEBHOOK_TOKENS",
    "FSBRIDGE_SLACK_WEBHOOK_URL", "FSBRIDGE_OPS_TOKEN", "FSBRIDGE_DRY_RUN", "FSBRIDGE_LOG_FORMAT",
    "FSBRIDGE_RETRY_BASE_SECONDS", "FSBRIDGE_RETRY_MAX_SECONDS", "FSBRIDGE_RETRY_HORIZON_SECONDS",
    "FSBRIDGE_MAX_BODY_BYTES", "FSBRIDGE_HOST", "FSBRIDGE_PORT",
}  # fmt: skip


def test_compose_has_api_worker_and_postgres() -> None:
    """api and worker replicas of fsbridge over a PostgreSQL with a volume; Prometheus and Grafana only in the
    monitoring profile."""
    services = COMPOSE["services"]
    assert {"api", "worker", "postgres"} == {name for name, s in services.items() if "profiles" not in s}
    assert {"prometheus", "grafana"} == {name for name, s in services.items() if s.get("profiles") == ["monitoring"]}
    assert ["serve", "--role", "api"] == services["api"]["command"]
    assert ["serve", "--role", "worker"] == services["worker"]["command"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in services["postgres"]["volumes"])
    assert "postgres-data" in COMPOSE["volumes"]


def test_every_service_has_a_healthcheck_and_waits_for_postgres() -> None:
    """Every service has a healthcheck; fsbridge starts only once PostgreSQL is healthy."""
    services = COMPOSE["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    for name in ("api", "worker"):
        assert {"postgres": {"condition": "service_healthy"}} == services[name]["depends_on"]
        assert ".env" == services[name]["env_file"]


def test_compose_sets_only_real_settings() -> None:
    """Every variable the fsbridge services set is a setting fsbridge reads, and the store is PostgreSQL."""
    for name in ("api", "worker"):
        environment = COMPOSE["services"][name]["environment"]
        assert set(environment) <= set(ENV_VARIABLES), set(environment) - set(ENV_VARIABLES)
        assert environment["FSBRIDGE_DATABASE_URL"].startswith("postgresql://")


def test_env_example_lists_every_setting() -> None:
    """.env.example names every variable of the contract and every setting, and nothing fsbridge ignores."""
    names = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    fsbridge_names = {n for n in names if n.startswith("FSBRIDGE_")}
    assert CONTRACT_VARIABLES <= fsbridge_names
    assert set(ENV_VARIABLES) == fsbridge_names
    assert names - fsbridge_names == {"POSTGRES_PASSWORD"}


def test_image_installs_with_the_documented_command() -> None:
    """The Dockerfile installs with the same pip command the deployment page gives, runs as non-root, and checks
    health."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "docs" / "deployment.md").read_text()
    command = "pip install --constraint requirements.lock ."
    assert command in dockerfile.replace("--no-cache-dir ", "")
    assert command in readme
    assert re.search(r"^USER \d+", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile
    assert dockerfile.count("FROM ") == 2
