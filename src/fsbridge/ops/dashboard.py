"""The `/ops` dashboard: server-rendered HTML (jinja2), no JavaScript. It shows counts and rates per
flow, destination and source over the last hour and day, queue depths, breaker and pause states,
the newest dead letters and quarantined events with replay buttons, an event's whole story, and
small inline SVG charts.

Access (`ops.access`): the ops token, given once in the sign-in form (never in a URL, where it
would reach logs and history); fsbridge then sets an HTTP-only, SameSite=Strict cookie holding a
random session id that expires, and ends with sign-out. A script may send the token as
`Authorization: Bearer` instead. With no ops token configured, loopback clients under a loopback Host get a session on
sight. Every form carries its session's CSRF token, and every POST must come from this origin.
A page without a valid session answers 401 with the sign-in form.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Form, Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fsbridge import __version__
from fsbridge.errors import IntakeError
from fsbridge.ops.access import (
    COOKIE,
    SESSION_SECONDS,
    Session,
    bearer_token,
    check_csrf,
    check_token,
    current_session,
    end_session,
    log_action,
    new_session,
    require_loopback,
    require_same_origin,
    runtime_of,
)
from fsbridge.ops.api import NEVER_RENDERED, Operations, pretty, story_json
from fsbridge.ops.search import find
from fsbridge.ops.users import user_record_json
from fsbridge.runtime import Runtime
from fsbridge.settings import DESTINATIONS
from fsbridge.store.records import UNRENDERED

HOUR, DAY = 3600, 86400
CHART_BUCKETS, CHART_BUCKET_SECONDS = 96, 900  # 24 h in 15-minute steps
# No script may run, nothing may frame the page, forms post only here; the inline stylesheet stays.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send Origin: null on our own forms
}

templates = Environment(loader=PackageLoader("fsbridge.ops", "templates"), autoescape=select_autoescape(["html"]))
router = APIRouter(prefix="/ops")


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(name).render(version=__version__, **context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _refusal(exc: IntakeError) -> HTMLResponse:
    return _page("message.html", exc.status, title="Refused", message=exc.message)


async def _session(request: Request) -> Session | Response:
    """The visitor's session, or the page to show instead: the sign-in form (401) or a refusal."""
    configured = runtime_of(request).settings.ops_token
    try:
        require_same_origin(request)
        if configured is None:
            require_loopback(request)
    except IntakeError as exc:
        if exc.status == 401:
            return _page("login.html", 401, error=None, loopback_only=True)
        return _refusal(exc)
    session = await current_session(request)
    if session is not None:
        return session
    given = bearer_token(request)
    if configured is not None and given is not None:
        try:
            if check_token(request, given):  # a script: this request only, no cookie, no usable forms
                return Session("", secrets.token_urlsafe(24))
        except IntakeError as exc:
            return _refusal(exc)
    if configured is None and request.method in ("GET", "HEAD"):
        # Loopback-only mode signs a local visitor in on sight, so that forms have a CSRF token; the
        # page carries the new cookie (see `_answer`).
        _, session = await new_session(request)
        return session
    return _page("login.html", 401, error=None, loopback_only=configured is None)


def _answer(request: Request, session: Session, response: Response) -> Response:
    """The page, with the cookie of a session made for this request."""
    if session.cookie is not None:
        _set_cookie(request, response, session.cookie)
    return response


def _back(anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"/ops{anchor}", status_code=303, headers=PAGE_HEADERS)


@router.get(
    "",
    response_class=HTMLResponse,
    tags=["ops"],
    summary="The dashboard (401 with the sign-in form until signed in)",
    responses={401: {"description": "Not signed in: the body is the sign-in form"}},
)
async def overview(request: Request) -> Response:
    runtime = runtime_of(request)
    session = await _session(request)
    if not isinstance(session, Session):
        return session
    return _answer(request, session, _page("overview.html", **await _overview(runtime), csrf=session.csrf))


@router.post("/login", include_in_schema=False)
async def login(request: Request, token: str = Form(...)) -> Response:
    try:
        require_same_origin(request)
    except IntakeError as exc:
        return _refusal(exc)
    return await _sign_in(request, token)


async def _sign_in(request: Request, token: str) -> Response:
    configured = runtime_of(request).settings.ops_token
    try:
        accepted = configured is not None and check_token(request, token)
    except IntakeError as exc:
        return _page("login.html", exc.status, error=exc.message, loopback_only=False)
    if not accepted:
        return _page("login.html", 401, error="That token is not the ops token.", loopback_only=configured is None)
    cookie, _ = await new_session(request)
    response = _back()
    _set_cookie(request, response, cookie)
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, csrf: str = Form("")) -> Response:
    session = await _form_session(request, csrf)
    if not isinstance(session, Session):
        return session
    await end_session(request)
    response = _page("login.html", 200, error=None, loopback_only=runtime_of(request).settings.ops_token is None)
    response.delete_cookie(COOKIE, path="/ops")
    return response


def _set_cookie(request: Request, response: Response, cookie: str) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        path="/ops",
        max_age=SESSION_SECONDS,
        secure=request.url.scheme == "https",
    )


async def _form_session(request: Request, csrf: str) -> Session | Response:
    session = await _session(request)
    if not isinstance(session, Session):
        return session
    try:
        check_csrf(session, csrf)
    except IntakeError as exc:
        return _refusal(exc)
    log_action(request, "session")
    return session


@router.post("/deliveries/{delivery_id}/replay", include_in_schema=False)
async def replay_delivery(request: Request, delivery_id: str, csrf: str = Form("")) -> Response:
    session = await _form_session(request, csrf)
    if not isinstance(session, Session):
        return session
    if not await Operations(runtime_of(request)).replay(delivery_id):
        delivery = await runtime_of(request).store.get_delivery(delivery_id)
        if delivery is not None and delivery.action == UNRENDERED:
            return _page("message.html", 409, title="Nothing to send again", message=NEVER_RENDERED)
    return _back("#dead-letters")


@router.post("/quarantine/{quarantine_id}/replay", include_in_schema=False)
async def replay_quarantined(request: Request, quarantine_id: str, csrf: str = Form("")) -> Response:
    session = await _form_session(request, csrf)
    if not isinstance(session, Session):
        return session
    outcome = await Operations(runtime_of(request)).replay_quarantined(quarantine_id)
    if isinstance(outcome, IntakeError):
        return _page("message.html", outcome.status, title="Still quarantined", message=outcome.message)
    return _back("#quarantine")


@router.post("/destinations/{name}/{action}", include_in_schema=False)
async def destination_action(request: Request, name: str, action: str, csrf: str = Form("")) -> Response:
    session = await _form_session(request, csrf)
    if not isinstance(session, Session):
        return session
    if name not in DESTINATIONS or action not in ("pause", "resume"):
        return _page("message.html", 404, title="Not found", message="No such destination or action.")
    runtime = runtime_of(request)
    if action == "pause":
        await runtime.pause_destination(name)
    else:
        await runtime.resume_destination(name)
    return _back("#destinations")


@router.get("/events/{event_id}", include_in_schema=False)
async def event_page(request: Request, event_id: str) -> Response:
    session = await _session(request)
    if not isinstance(session, Session):
        return session
    story = await runtime_of(request).store.event_story(event_id)
    if story is None:
        return _page("message.html", 404, title="Not found", message=f"No stored event has id {event_id}.")
    data = story_json(story)
    page = _page(
        "event.html",
        story=data,
        raw=pretty(data["event"]["body"]),
        bodies={d["id"]: pretty(d["body"]) for d in data["deliveries"]},
        csrf=session.csrf,
        when=_when,
    )
    return _answer(request, session, page)


@router.get("/users/{user_id:path}", include_in_schema=False)
async def user_page(request: Request, user_id: str) -> Response:
    session = await _session(request)
    if not isinstance(session, Session):
        return session
    record = await user_record_json(runtime_of(request), user_id)
    if record is None:
        return _page(
            "message.html", 404, title="Not found", message=f"fsbridge holds nothing about user {user_id[:200]}."
        )
    page = _page("user.html", u=record, traits=pretty(record["profile"]["traits"]), when=_when)
    return _answer(request, session, page)


@router.get("/search", include_in_schema=False)
async def search_page(request: Request, q: str = "") -> Response:
    session = await _session(request)
    if not isinstance(session, Session):
        return session
    found = await find(runtime_of(request), q)
    return _answer(request, session, _page("search.html", q=q[:200], events=found, when=_when))


@router.get("/deliveries/{delivery_id}", include_in_schema=False)
async def delivery_page(request: Request, delivery_id: str) -> Response:
    session = await _session(request)
    if not isinstance(session, Session):
        return session
    delivery = await runtime_of(request).store.get_delivery(delivery_id)
    if delivery is None or not delivery.inbox_id:
        return _page("message.html", 404, title="Not found", message=f"No delivery has id {delivery_id}.")
    redirect = RedirectResponse(f"/ops/events/{delivery.inbox_id}", status_code=303, headers=PAGE_HEADERS)
    return _answer(request, session, redirect)


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
    at_risk, bands = await store.user_state_overview(20)
    drops = await store.open_adoption_drops()
    return {
        "now": now,
        "destinations": destinations,
        "flows": [{"name": f, "hour": hour["by_flow"].get(f, {}), "day": day["by_flow"].get(f, {})} for f in flows],
        "sources": [
            {"name": s, "hour": hour["by_source"].get(s, {}), "day": day["by_source"].get(s, {})}
            for s in sorted({*totals["by_source"], *day["by_source"]})
        ],
        "identity": totals.get("identity", {}),
        "undispatched": totals["undispatched"],
        "jobs": await runtime.scheduler.states(),
        "at_risk": [
            {"user": key, "user_id": key[2:] if key.startswith("u:") else key, "since": since, "score": score}
            for key, since, score in at_risk
        ],
        "bands": {band: bands.get(band, 0) for band in ("good", "fair", "poor")},
        "drops": [{"feature": f, "cohort": c, "since": w} for f, c, w in drops],
        "dead": dead,
        "quarantined": quarantined,
        "chart": _chart(series),
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
