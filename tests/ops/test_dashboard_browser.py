"""The /ops dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright
signs in, sees a dead letter, presses Replay, and sees it delivered. Skipped, saying so, when
Chromium or Playwright is not installed (`.ci/run` installs Chromium, so CI always runs it)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fsbridge.testing import free_port
from tests.conftest import RAGE_CLICK
from tests.servers import ROOT, FakeSegment, Server, base_env, without_aggregations

CHROMIUM = Path("/usr/bin/chromium")
OPS_TOKEN = "browser-test-ops-token"
STREAM_TOKEN = "browser-test-stream-token"

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed; browser test skipped")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Chromium (/usr/bin/chromium) is not installed; browser test skipped"
    ),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, FakeSegment]]:
    """A real fsbridge whose fake Segment refuses the first batch with 400, then accepts."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    without_aggregations(tmp_path / "config")  # one click, one track: the dead letter to replay
    with FakeSegment(script=[400]) as segment:
        env = base_env(
            tmp_path,
            FSBRIDGE_OPS_TOKEN=OPS_TOKEN,
            FSBRIDGE_FULLSTORY_STREAM_TOKENS=STREAM_TOKEN,
            FSBRIDGE_SEGMENT_WRITE_KEY="wk",
            FSBRIDGE_SEGMENT_API_URL=segment.url,
        )
        process = Server(tmp_path, env, free_port())
        process.start()
        try:
            yield process, segment
        finally:
            process.stop()


def wait_for(check: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def dead_letters(url: str) -> list[dict[str, object]]:
    response = httpx.get(
        f"{url}/ops/api/deliveries?status=dead", headers={"Authorization": f"Bearer {OPS_TOKEN}"}, timeout=5
    )
    items: list[dict[str, object]] = response.json()["items"]
    return items


def test_sign_in_see_a_dead_letter_replay_it_and_see_it_delivered(
    server: tuple[Server, FakeSegment], tmp_path: Path
) -> None:
    """A person signs in, finds the dead letter, presses Replay, and the event's page shows it delivered."""
    fsbridge, segment = server
    response = httpx.post(
        f"{fsbridge.url}/webhooks/fullstory/streams/frustration",
        json=RAGE_CLICK,
        headers={"Authorization": f"Bearer {STREAM_TOKEN}"},
        timeout=5,
    )
    assert 202 == response.status_code
    wait_for(lambda: len(dead_letters(fsbridge.url)) == 1)

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            page.goto(f"{fsbridge.url}/ops")
            page.fill("input[name=token]", OPS_TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("#dead-letters")
            rows = page.locator("tr.dead-letter")
            assert 1 == rows.count()
            assert "400" in rows.first.inner_text()

            rows.first.locator("button", has_text="Replay").click()
            page.wait_for_selector("#dead-letters")
            assert segment.wait_until(lambda s: len(s.messages) == 1, timeout=20)

            page.goto(f"{fsbridge.url}/ops")
            page.wait_for_selector("text=No dead letters.")
            delivery_id = response.json()["id"]
            page.goto(f"{fsbridge.url}/ops/events/{delivery_id}")
            assert "delivered" == page.locator(".delivery-status").first.inner_text()
            page.screenshot(path=str(tmp_path / "ops-event.png"), full_page=True)
            page.goto(f"{fsbridge.url}/ops")
            page.screenshot(path=str(tmp_path / "ops-overview.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "ops-overview.png").stat().st_size > 0
    assert "Rage Click Detected" == segment.messages[0]["event"]
