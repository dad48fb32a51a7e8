"""The `/ops` dashboard: server-rendered HTML (jinja2), no JavaScript. It shows counts and rates per
flow, destination and source over the last hour and day, queue depths, breaker and pause states,
the newest dead letters and quarantined events with replay buttons, an event's whole story, and
small inline SVG charts.

Access: the ops token, given once in a login form or as `?token=`; fsbridge then sets an HTTP-only,
SameSite=Strict cookie holding an HMAC of the token (never the token itself). With no ops token
configured, loopback clients get in without logging in. Every form carries a CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import orjson
from fastapi import APIRouter, Form, Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fsbridge import __version__
from fsbridge.errors import IntakeError
from fsbridge.ops.api import Operations, require_ops_access, story_json
from fsbridge.runtime import Runtime
from fsbridge.settings import DESTINATIONS

COOKIE = "fsbridge_ops"
HOUR, DAY = 3600, 86400
CHART_BUCKETS, CHART_BUCKET_SECONDS = 96, 900  # 24 h in 15-minute steps

templates = Environment(loader=PackageLoader("fsbridge.ops", "templates"), autoescape=select_autoescape(["html"]))
router = APIRouter(prefix="/ops", include_in_schema=False)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"fsbridge ops session", hashlib.sha256).hexdigest()


def _csrf(runtime: Runtime) -> str:
    token = runtime.settings.ops_token
    secret = token.get_secret_value() if token else "loopback"
    return hmac.new(secret.encode(), b"fsbridge ops csrf", hashlib.sha256).hexdigest()[:32]


def _signed_in(request: Request) -> bool:
    token = _runtime(request).settings.ops_token
    if token is None:
        try:
            require_ops_access(request)
        except IntakeError:
            return False
        return True
    cookie = request.cookies.get(COOKIE, "")
    return hmac.compare_digest(cookie.encode(), _session_value(token.get_secret_value()).encode())


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(name).render(version=__version__, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _check_csrf(request: Request, csrf: str) -> None:
    if not hmac.compare_digest(csrf.encode(), _csrf(_runtime(request)).encode()):
        raise IntakeError(403, "forbidden", "The form is stale; reload /ops and try again.")


def _back(anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"/ops{anchor}", status_code=303)


@router.get("")
async def overview(request: Request, token: str | None = None) -> Response:
    runtime = _runtime(request)
    configured = runtime.settings.ops_token
    if token is not None and configured is not None:
        if hmac.compare_digest(token.encode(), configured.get_secret_value().encode()):
            response = RedirectResponse("/ops", status_code=303)
            _set_cookie(response, configured.get_secret_value())
            return response
        return _page("login.html", 401, error="That token is not the ops token.")
    if not _signed_in(request):
        return _page("login.html", 401 if configured is None else 200, error=None, loopback_only=configured is None)
    return _page("overview.html", **await _overview(runtime))


@router.post("/login")
async def login(request: Request, token: str = Form(...)) -> Response:
    configured = _runtime(request).settings.ops_token
    if configured is None or not hmac.compare_digest(token.encode(), configured.get_secret_value().encode()):
        return _page("login.html", 401, error="That token is not the ops token.")
    response = _back()
    _set_cookie(response, configured.get_secret_value())
    return response


@router.post("/logout")
async def logout() -> Response:
    response = _back()
    response.delete_cookie(COOKIE, path="/ops")
    return response


def _set_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, _session_value(token), httponly=True, samesite="strict", path="/ops", max_age=12 * HOUR)


@router.post("/deliveries/{delivery_id}/replay")
async def replay_delivery(request: Request, delivery_id: str, csrf: str = Form(...)) -> Response:
    if not _signed_in(request):
        return _back()
    _check_csrf(request, csrf)
    await Operations(_runtime(request)).replay(delivery_id)
    return _back("#dead-letters")


@router.post("/quarantine/{quarantine_id}/replay")
async def replay_quarantined(request: Request, quarantine_id: str, csrf: str = Form(...)) -> Response:
    if not _signed_in(request):
        return _back()
    _check_csrf(request, csrf)
    outcome = await Operations(_runtime(request)).replay_quarantined(quarantine_id)
    if isinstance(outcome, IntakeError):
        return _page("message.html", outcome.status, title="Still quarantined", message=outcome.message)
    return _back("#quarantine")


@router.post("/destinations/{name}/{action}")
async def destination_action(request: Request, name: str, action: str, csrf: str = Form(...)) -> Response:
    if not _signed_in(request):
        return _back()
    _check_csrf(request, csrf)
    if name not in DESTINATIONS or action not in ("pause", "resume"):
        return _page("message.html", 404, title="Not found", message="No such destination or action.")
    runtime = _runtime(request)
    if action == "pause":
        await runtime.pause_destination(name)
    else:
        await runtime.resume_destination(name)
    return _back("#destinations")


@router.get("/events/{event_id}")
async def event_page(request: Request, event_id: str) -> Response:
    if not _signed_in(request):
        return _back()
    story = await _runtime(request).store.event_story(event_id)
    if story is None:
        return _page("message.html", 404, title="Not found", message=f"No stored event has id {event_id}.")
    data = story_json(story)
    return _page(
        "event.html",
        story=data,
        raw=orjson.dumps(data["event"]["body"], option=orjson.OPT_INDENT_2).decode(),
        bodies={d["id"]: orjson.dumps(d["body"], option=orjson.OPT_INDENT_2).decode() for d in data["deliveries"]},
        csrf=_csrf(_runtime(request)),
        when=_when,
    )


@router.get("/deliveries/{delivery_id}")
async def delivery_page(request: Request, delivery_id: str) -> Response:
    delivery = await _runtime(request).store.get_delivery(delivery_id)
    if delivery is None or not delivery.inbox_id:
        return _page("message.html", 404, title="Not found", message=f"No delivery has id {delivery_id}.")
    return RedirectResponse(f"/ops/events/{delivery.inbox_id}", status_code=303)


async def _overview(runtime: Runtime) -> dict[str, Any]:
    store, now = runtime.store, runtime.clock.now()
    hour, day = await store.window_counts(now - HOUR), await store.window_counts(now - DAY)
    totals = await store.stats()
    depths = await store.queue_depths()
    series = await store.timeline(now - CHART_BUCKETS * CHART_BUCKET_SECONDS, CHART_BUCKET_SECONDS, CHART_BUCKETS)
    destinations = []
    for name, guard in runtime.worker.guards.items():
        state = (
            "parked" if name in runtime.worker.parked
            else "paused" if name in runtime.worker.paused
            else {0: "ok", 1: "probing", 2: "breaker open"}[guard.breaker.state.value]
        )  # fmt: skip
        destinations.append(
            {
                "name": name,
                "state": state,
                "dry_run": runtime.destinations[name].dry_run,
                "rate": guard.bucket.rate,
                "depth": {s: depths.get((name, s), 0) for s in ("pending", "retrying", "dead", "parked")},
                "hour": hour["by_destination"].get(name, {}),
                "day": day["by_destination"].get(name, {}),
            }
        )
    flows = sorted({*totals["by_flow"], *(f.name for f in runtime.flows)})
    dead = await store.list_deliveries("dead", None, 20)
    quarantined = await store.list_quarantine(20)
    return {
        "now": now,
        "destinations": destinations,
        "flows": [{"name": f, "hour": hour["by_flow"].get(f, {}), "day": day["by_flow"].get(f, {})} for f in flows],
        "sources": [
            {"name": s, "hour": hour["by_source"].get(s, {}), "day": day["by_source"].get(s, {})}
            for s in sorted({*totals["by_source"], *day["by_source"]})
        ],
        "identity": totals.get("identity", {}),
        "dead": dead,
        "quarantined": quarantined,
        "chart": _chart(series),
        "csrf": _csrf(runtime),
        "when": _when,
        "short": lambda text: (text or "")[:160],
    }


def _when(moment: float | None) -> str:
    if moment is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


def _chart(series: dict[str, list[int]], width: int = 720, height: int = 120) -> dict[str, Any]:
    """Polylines for an inline SVG: received, delivered and dead per 15 minutes over 24 hours."""
    peak = max(1, *(max(values) for values in series.values()))
    step = width / max(1, CHART_BUCKETS - 1)

    def points(values: list[int]) -> str:
        return " ".join(f"{i * step:.1f},{height - v / peak * (height - 10):.1f}" for i, v in enumerate(values))

    return {
        "width": width,
        "height": height,
        "peak": peak,
        "lines": [
            {"name": name, "points": points(values), "total": sum(values), "colour": colour}
            for (name, values), colour in zip(series.items(), ("#2563eb", "#16a34a", "#dc2626"), strict=True)
        ],
    }
