"""The ops surface's access rules: loopback judged on the socket, a loopback Host without a token,
same-origin state changes, per-session CSRF tokens, sessions that expire and end at sign-out, a
budget for wrong tokens, and pages that cannot be framed or run scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from fsbridge.app import create_app
from fsbridge.http_protocol import PEER
from fsbridge.ops.access import warn_if_open_beyond_loopback
from fsbridge.testing import bearer_headers
from tests.conftest import OPS_TOKEN, STREAM_TOKEN, Bridge, start_bridge


@pytest.fixture
async def open_bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    """A bridge without an ops token (loopback-only mode)."""
    b = await start_bridge(tmp_path, ops_token=None)
    yield b
    await b.client.aclose()
    await b.runtime.stop()


def csrf_of(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


class TestLoopbackMode:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Referer": "https://evil.example/page"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": "https://evil.example", "Content-Type": "text/plain"},
        ],
    )
    async def test_a_cross_site_post_cannot_change_anything(self, open_bridge: Bridge, headers: dict[str, str]) -> None:
        """A web page the operator visits cannot pause a destination, by form or by text/plain POST."""
        response = await open_bridge.client.post("/ops/api/destinations/slack/pause", headers=headers, content=b"x")
        assert 403 == response.status_code
        assert "cross_site_request" == response.json()["error"]["code"]
        form = await open_bridge.client.post("/ops/destinations/slack/pause", headers=headers, data={"csrf": "x"})
        assert 403 == form.status_code
        assert "slack" not in open_bridge.runtime.worker.paused

    async def test_a_same_origin_script_post_still_works(self, open_bridge: Bridge) -> None:
        """curl on the machine (no Origin) and the dashboard itself (same Origin) can pause."""
        plain = await open_bridge.client.post("/ops/api/destinations/slack/pause")
        same = await open_bridge.client.post(
            "/ops/api/destinations/slack/resume", headers={"Origin": "http://127.0.0.1"}
        )
        assert (200, 200) == (plain.status_code, same.status_code)

    @pytest.mark.parametrize("path", ["/ops", "/ops/api/stats", "/metrics", "/ops/events/evt_x"])
    async def test_a_foreign_host_name_is_refused(self, open_bridge: Bridge, path: str) -> None:
        """Under a Host that is not loopback (DNS rebinding), nothing is served, even to a loopback peer."""
        response = await open_bridge.client.get(path, headers={"Host": "rebind.evil.example"})
        assert 403 == response.status_code

    async def test_loopback_is_judged_on_the_socket_not_on_proxy_headers(self, open_bridge: Bridge) -> None:
        """With every proxy trusted, a forged X-Forwarded-For: 127.0.0.1 from a remote peer gets nothing."""
        inner = create_app(open_bridge.runtime, manage_runtime=False)
        proxied: Any = ProxyHeadersMiddleware(cast(Any, inner), trusted_hosts="*")

        async def as_protocol(scope: Scope, receive: Receive, send: Send) -> None:
            scope[PEER] = scope["client"]  # what fsbridge's protocol records before proxy headers apply
            await proxied(scope, receive, send)

        app: ASGIApp = as_protocol
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as outsider:
            forged = {"X-Forwarded-For": "127.0.0.1"}
            for path in ("/ops/api/stats", "/metrics", "/ops"):
                assert 401 == (await outsider.get(path, headers=forged)).status_code
            assert 200 == (await outsider.get("/healthz")).status_code  # the public routes still answer

    @pytest.mark.parametrize(
        "header", [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}, {"X-Real-IP": "203.0.113.9"}]
    )
    async def test_a_request_a_local_proxy_relays_is_not_local(
        self, open_bridge: Bridge, header: dict[str, str]
    ) -> None:
        """Without an ops token, a loopback peer under Host 127.0.0.1 that carries any proxy header gets nothing."""
        for path in ("/ops/api/stats", "/metrics", "/ops"):
            assert 401 == (await open_bridge.client.get(path, headers=header)).status_code
        assert 200 == (await open_bridge.client.get("/ops/api/stats")).status_code

    async def test_names_are_not_addresses(self, open_bridge: Bridge) -> None:
        """A client reported as `localhost` or `testclient` is not a loopback peer."""
        inner = create_app(open_bridge.runtime, manage_runtime=False)
        for name in ("localhost", "testclient"):
            transport = httpx.ASGITransport(app=inner, client=(name, 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                assert 401 == (await client.get("/ops/api/stats")).status_code

    async def test_each_session_has_its_own_csrf_token(self, open_bridge: Bridge, tmp_path: Path) -> None:
        """A loopback visitor gets a session on sight; its CSRF token is its own, and another's fails."""
        first = await open_bridge.client.get("/ops")
        assert 200 == first.status_code  # the page itself, carrying the new cookie: no redirect to loop on
        assert "fsbridge_ops=" in first.headers["set-cookie"]
        token = csrf_of(first.text)
        other = httpx.AsyncClient(transport=open_bridge.client._transport, base_url="http://127.0.0.1")
        try:
            second = await other.get("/ops")
            assert csrf_of(second.text) != token
            refused = await other.post("/ops/destinations/slack/pause", data={"csrf": token})
            assert 403 == refused.status_code
        finally:
            await other.aclose()
        assert 303 == (await open_bridge.client.post("/ops/destinations/slack/pause", data={"csrf": token})).status_code
        assert "slack" in open_bridge.runtime.worker.paused


class TestSessions:
    async def test_pages_without_sign_in_answer_401_with_the_form(self, bridge: Bridge) -> None:
        """/ops, an event page and a delivery page without a session answer 401 with the sign-in form."""
        for path in ("/ops", "/ops/events/evt_x", "/ops/deliveries/dlv_x"):
            response = await bridge.client.get(path)
            assert 401 == response.status_code, path
            assert "Ops token" in response.text

    async def test_a_session_is_random_expires_and_ends_at_sign_out(self, bridge: Bridge) -> None:
        """Each sign-in gets a new random cookie with an expiry; after sign-out that cookie is refused."""
        one = await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        cookie = one.cookies["fsbridge_ops"]
        assert "Max-Age=43200" in one.headers["set-cookie"]
        page = await bridge.client.get("/ops")
        assert 200 == page.status_code
        await bridge.client.post("/ops/logout", data={"csrf": csrf_of(page.text)})
        bridge.client.cookies.set("fsbridge_ops", cookie, path="/ops")
        assert 401 == (await bridge.client.get("/ops")).status_code
        again = await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        assert again.cookies["fsbridge_ops"] != cookie

    async def test_a_session_expires(self, bridge: Bridge) -> None:
        """Twelve hours after sign-in the session no longer opens the dashboard."""
        await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        bridge.clock.advance(12 * 3600 + 1)
        assert 401 == (await bridge.client.get("/ops")).status_code

    async def test_the_cookie_is_secure_behind_https(self, bridge: Bridge) -> None:
        """Served over HTTPS (directly or through a proxy's X-Forwarded-Proto), the cookie is Secure."""
        transport = bridge.client._transport
        async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1") as secure:
            response = await secure.post("/ops/login", data={"token": OPS_TOKEN})
        assert "Secure" in response.headers["set-cookie"]
        plain = await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})
        assert "Secure" not in plain.headers["set-cookie"]

    async def test_a_trusted_proxy_makes_the_cookie_secure_and_webhooks_pass_by(self, bridge: Bridge) -> None:
        """With `trusted_proxies` (what `fsbridge serve` passes from FORWARDED_ALLOW_IPS), a trusted
        proxy's X-Forwarded-Proto: https makes the cookie Secure and an untrusted one's does not;
        webhooks are served beside it."""
        for trusted, secure in (("127.0.0.1", True), ("10.0.0.1", False)):
            app = create_app(bridge.runtime, manage_runtime=False, trusted_proxies=trusted)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                login = await client.post(
                    "/ops/login", data={"token": OPS_TOKEN}, headers={"X-Forwarded-Proto": "https"}
                )
                event = await client.post(
                    "/webhooks/fullstory/streams/frustration",
                    content=orjson.dumps({"event": {"event_type": "rage-click"}, "user": {"user_id": trusted}}),
                    headers={**bearer_headers(STREAM_TOKEN), "X-Forwarded-Proto": "https"},
                )
            assert secure == ("Secure" in login.headers["set-cookie"]), trusted
            assert 202 == event.status_code

    async def test_wrong_tokens_are_limited_and_the_right_one_never_is(self, bridge: Bridge) -> None:
        """Past ten wrong tokens in a minute a client's next wrong ones get 429; the right token still passes,
        on the API, /metrics and the sign-in form."""
        wrong = {"Authorization": "Bearer no"}
        for _ in range(10):
            assert 401 == (await bridge.client.get("/ops/api/stats", headers=wrong)).status_code
        assert 429 == (await bridge.client.get("/ops/api/stats", headers=wrong)).status_code
        assert 200 == (await bridge.client.get("/ops/api/stats", headers=bridge.ops_headers())).status_code
        assert 200 == (await bridge.client.get("/metrics", headers=bridge.ops_headers())).status_code
        assert 303 == (await bridge.client.post("/ops/login", data={"token": OPS_TOKEN})).status_code

    async def test_behind_a_trusted_proxy_the_limit_is_per_forwarded_client(self, bridge: Bridge) -> None:
        """Behind a same-host proxy, one client's wrong guesses do not lock out another client."""
        app = create_app(bridge.runtime, manage_runtime=False, trusted_proxies="127.0.0.1")
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as proxy:
            guesser = {"Authorization": "Bearer no", "X-Forwarded-For": "198.51.100.7"}
            for _ in range(11):
                await proxy.get("/ops/api/stats", headers=guesser)
            assert 429 == (await proxy.get("/ops/api/stats", headers=guesser)).status_code
            wrong_elsewhere = {"Authorization": "Bearer no", "X-Forwarded-For": "198.51.100.8"}
            assert 401 == (await proxy.get("/ops/api/stats", headers=wrong_elsewhere)).status_code
            right = {**bridge.ops_headers(), "X-Forwarded-For": "198.51.100.7"}
            assert 200 == (await proxy.get("/ops/api/stats", headers=right)).status_code


class TestPages:
    async def test_pages_cannot_be_framed_or_run_scripts(self, bridge: Bridge) -> None:
        """Every /ops page carries a CSP without scripts, frame-ancestors 'none' and X-Frame-Options."""
        response = await bridge.client.get("/ops")
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "DENY" == response.headers["x-frame-options"]

    async def test_docs_are_off_and_the_schema_lists_the_dashboard(self, bridge: Bridge) -> None:
        """/docs and /redoc are not served; /openapi.json lists GET /ops."""
        assert 404 == (await bridge.client.get("/docs")).status_code
        assert 404 == (await bridge.client.get("/redoc")).status_code
        schema: dict[str, Any] = (await bridge.client.get("/openapi.json")).json()
        assert "get" in schema["paths"]["/ops"]


def test_a_warning_when_ops_is_open_beyond_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    """Without an ops token, listening on 0.0.0.0 logs a warning; on 127.0.0.1, or with a token, not."""
    everywhere = "0.0.0.0"  # noqa: S104 - a string under test, nothing binds to it
    assert warn_if_open_beyond_loopback(None, everywhere)
    assert "ops.open_without_token" in capsys.readouterr().out
    assert not warn_if_open_beyond_loopback(None, "127.0.0.1")
    assert not warn_if_open_beyond_loopback(None, "::1")
    assert not warn_if_open_beyond_loopback(SecretStr("token"), everywhere)
