"""The documentation site: it builds with --strict; every built-in flow, job, command, environment
variable and configuration key appears in it; each flow page shows its golden example; and the
commands and configuration snippets of the README and the docs are real."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
import yaml
from pydantic import BaseModel

from fsbridge.cli import app
from fsbridge.config import FlowsConfig, FsbridgeConfig, JobsConfig
from fsbridge.flows import flow_specs
from fsbridge.settings import ENV_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The site built with --strict (any warning fails the build), as the text of every page (tags removed)."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert 0 == built.returncode, built.stderr[-3000:]
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", "", p.read_text())) for p in out.rglob("*.html"))


def config_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        yield key
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from config_keys(field.annotation, key)


def commands() -> Iterator[str]:
    def walk(command: Any, path: list[str]) -> Iterator[str]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path)

    yield from walk(typer.main.get_command(app), [])


BUILT_IN_FLOWS = sorted(
    {*flow_specs(FsbridgeConfig()), *(n for n in FlowsConfig.model_fields if n != "model_config")}
    - {"feature_adoption_trend_alert_to_slack", "feature_adoption_trend_alert_to_jira"}
)


def test_every_flow_job_command_variable_and_key_is_in_the_site(site: str) -> None:
    """The built site names every built-in flow, job, CLI command, FSBRIDGE_* variable and configuration key."""
    wanted = {
        "flow": BUILT_IN_FLOWS,
        "job": list(JobsConfig.model_fields),
        "command": [f"fsbridge {c}" for c in commands()],
        "variable": list(ENV_VARIABLES),
        "key": list(config_keys(FsbridgeConfig)),
    }
    missing = {kind: [n for n in names if n not in site] for kind, names in wanted.items()}
    assert {kind: [] for kind in wanted} == missing


@pytest.mark.parametrize("flow", BUILT_IN_FLOWS)
def test_each_flow_page_shows_its_golden_example(site: str, flow: str) -> None:
    """A flow's page carries the output of its first golden example, as the golden file has it today."""
    page = DOCS / "flows" / f"{flow}.md"
    assert page.exists(), f"docs/flows/{flow}.md is missing"
    cases = sorted((ROOT / "config/examples/golden" / flow).glob("*.out.json")) or sorted(
        (ROOT / "config/examples/golden_aggregations" / flow).glob("*.out.json")
    )  # the page shows the first example that sends something
    assert cases, f"{flow} has no golden example"
    output = orjson.dumps(orjson.loads(cases[0].read_bytes()), option=orjson.OPT_INDENT_2).decode()
    assert output in site


def blocks(language: str) -> Iterator[tuple[Path, str]]:
    for page in [ROOT / "README.md", *PAGES]:
        for block in re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S):
            yield page, block


def test_configuration_snippets_are_valid() -> None:
    """Every YAML block of the README and the docs parses, and one shaped like the configuration validates."""
    top = set(FsbridgeConfig.model_fields)
    checked = 0
    for page, block in blocks("yaml"):
        document = yaml.safe_load(block.replace("{...}", "{}"))
        if isinstance(document, dict) and set(document) <= top and document:
            FsbridgeConfig.model_validate(document)
            checked += 1
        assert document is not None, page
    assert checked >= 1


def test_commands_in_the_docs_exist() -> None:
    """Every `fsbridge ...` and `make ...` the README and the docs tell a person to type is a real command."""
    known = set(commands())
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for page, block in [*blocks("sh"), *blocks("bash")]:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if match := re.match(r"^(?:\.venv/bin/)?fsbridge ([a-z-]+)(?: ([a-z-]+))?", line):
                first, second = match.groups()
                assert first in known or f"{first} {second}" in known, f"{page.name}: {line}"
            if match := re.match(r"^make ([a-z-]+)", line):
                assert match.group(1) in targets, f"{page.name}: {line}"


def test_the_readme_is_short() -> None:
    """README.md stays at most 200 lines; the rest is in docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
