"""A real Prometheus (Debian's package) scrapes a running fsbridge with the ops token, evaluates the
bundle's alert rules (deploy/monitoring/fsbridge-alerts.yml as shipped), and fires the matching
alert on a forced fault: a Segment that answers 500, with a retry horizon of zero, makes dead letters.
Everything talks to 127.0.0.1; every wait is bounded."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fsbridge.testing import free_port
from tests.conftest import OPS_TOKEN, RAGE_CLICK, STREAM_TOKEN
from tests.servers import ROOT, FakeSegment, Server, base_env, without_aggregations

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed (Debian's package)"),
]


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    (tmp_path / "ops-token").write_text(OPS_TOKEN)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "monitoring" / "fsbridge-alerts.yml")],
        "scrape_configs": [{"job_name": "fsbridge", "static_configs": [{"targets": [target]}],
                            "authorization": {"credentials_file": str(tmp_path / "ops-token")}}],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_bytes(orjson.dumps(config))  # JSON is YAML
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def until(check: Any, timeout: float) -> Any:
    """Poll `check()` (a query of another process: nothing to await) until it answers, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):  # not up yet, or still starting (not JSON)
            if answer := check():
                return answer
        time.sleep(0.5)
    return None


def test_prometheus_fires_the_dead_letter_alert_on_a_forced_fault(tmp_path: Path) -> None:
    """Prometheus scrapes fsbridge (up == 1), then Segment answers 500 and the deliveries die: FsbridgeDeadLetters
    fires for segment, with its severity and runbook, and FsbridgeDown does not."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    without_aggregations(tmp_path / "config")
    with FakeSegment(script=[500] * 50) as segment:
        env = base_env(
            tmp_path, FSBRIDGE_FULLSTORY_STREAM_TOKENS=STREAM_TOKEN, FSBRIDGE_SEGMENT_WRITE_KEY="write-key",
            FSBRIDGE_SEGMENT_API_URL=segment.url, FSBRIDGE_OPS_TOKEN=OPS_TOKEN, FSBRIDGE_RETRY_HORIZON_SECONDS="0",
            FSBRIDGE_RETRY_BASE_SECONDS="0",
        )  # fmt: skip
        server = Server(tmp_path, env, free_port())
        server.start()
        try:
            with prometheus(tmp_path, f"127.0.0.1:{server.port}") as api:

                def scraped() -> bool:
                    result = httpx.get(f"{api}/api/v1/query", params={"query": 'up{job="fsbridge"}'}).json()
                    return bool(result["data"]["result"]) and result["data"]["result"][0]["value"][1] == "1"

                assert until(scraped, 60), (tmp_path / "prometheus.log").read_text()[-2000:]
                headers = {"Authorization": f"Bearer {STREAM_TOKEN}", "Content-Type": "application/json"}
                for n in range(3):
                    body = orjson.dumps({**RAGE_CLICK, "event": {**RAGE_CLICK["event"], "target_text": f"t{n}"}})
                    assert 202 == httpx.post(f"{server.url}/webhooks/fullstory/streams/faults", content=body,
                                             headers=headers).status_code  # fmt: skip

                def firing() -> list[dict[str, Any]]:
                    alerts = httpx.get(f"{api}/api/v1/alerts").json()["data"]["alerts"]
                    return [a for a in alerts if a["state"] == "firing"]

                fired = until(lambda: [a for a in firing() if a["labels"]["alertname"] == "FsbridgeDeadLetters"], 90)
                assert fired, (tmp_path / "prometheus.log").read_text()[-2000:]
                [alert] = fired
                assert ("segment", "warning") == (alert["labels"]["destination"], alert["labels"]["severity"])
                assert alert["annotations"]["runbook_url"].endswith("#fsbridgedeadletters")
                assert "FsbridgeDown" not in {a["labels"]["alertname"] for a in firing()}
        finally:
            server.stop()
