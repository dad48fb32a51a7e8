"""The monitoring bundle (deploy/monitoring/): the alert rules pass their promtool unit tests, every
alert carries what operators expect, and every metric the rules and the Grafana dashboard read is one
a live /metrics exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.conftest import RAGE_CLICK, Bridge

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "deploy" / "monitoring"
RULES: dict[str, Any] = yaml.safe_load((BUNDLE / "fsbridge-alerts.yml").read_text())
DASHBOARD: dict[str, Any] = orjson.loads((BUNDLE / "fsbridge-dashboard.json").read_bytes())
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian's prometheus)")
def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    """`promtool test rules` passes: each alert fires on its fault, with its labels and annotations, and not before."""
    result = subprocess.run(
        ["promtool", "test", "rules", "fsbridge-alerts.test.yml"],
        cwd=BUNDLE,
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == result.returncode, result.stdout + result.stderr


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_in_the_docs() -> None:
    """Alert names start with Fsbridge (CamelCase); each has a severity and annotations whose runbook exists."""
    alerts_page = (ROOT / "docs" / "operations" / "alerts.md").read_text().lower()
    for alert in ALERTS:
        assert re.fullmatch(r"Fsbridge[A-Z][A-Za-z]+", alert["alert"]), alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
        anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
        assert f"## {alert['alert'].lower()}" in alerts_page, anchor


def queries() -> list[str]:
    exprs = [alert["expr"] for alert in ALERTS]
    exprs += [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    return exprs


async def test_every_metric_the_bundle_reads_is_exported(bridge: Bridge) -> None:
    """Each fsbridge_* series a rule or a dashboard panel reads appears in a live /metrics."""
    assert 202 == (await bridge.post_stream(RAGE_CLICK)).status_code
    assert 202 == (await bridge.post_stream({**RAGE_CLICK, "event": {"event_type": "page-view"}})).status_code
    await bridge.drain()
    await bridge.runtime.scheduler.run_now("retention")
    text = (await bridge.client.get("/metrics", headers=bridge.ops_headers())).text
    exported = set(re.findall(r"^(fsbridge_[a-z0-9_]+)", text, re.M))
    used = {name for expr in queries() for name in re.findall(r"\b(fsbridge_[a-z0-9_]+)", expr)}
    assert used
    assert set() == used - exported
