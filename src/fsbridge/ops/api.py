"""Operator endpoints: `/healthz` and `/readyz` for orchestrators, and the JSON ops API
(`/ops/api/...`: deliveries, replay, quarantine, stats, destination resume) behind the ops token.
The CLI's `dlq` commands call the same `Operations` methods."""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from fsbridge.bounds import quote
from fsbridge.errors import IntakeError
from fsbridge.ops.access import require_ops_access, runtime_of
from fsbridge.ops.requests import ReplayRequest
from fsbridge.ops.users import user_record_json
from fsbridge.replies import error_response, json_response
from fsbridge.runtime import Runtime
from fsbridge.settings import DESTINATIONS
from fsbridge.sources.envelopes import envelope_for
from fsbridge.sources.fullstory import ShapeError
from fsbridge.store import Delivery, EventStory, NewInboxEvent
from fsbridge.store.deliveries import ReplayFilter
from fsbridge.store.records import UNRENDERED

WORKER_MAX_SILENCE_SECONDS = 30.0
NEVER_RENDERED = (
    "Its flow could not turn the event into a message, so there is nothing to send again; fix the flow, "
    "then render the event anew with `fsbridge replay --flow NAME --since ...`."
)
_SECRET_FIELD = re.compile(r"^(writeKey|write_key|password|secret|token|apiKey|api_key)$", re.IGNORECASE)


class DeliveryItem(BaseModel):
    id: str
    flow: str
    destination: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_response: str | None
    created_at: float
    next_attempt_at: float | None
    message_id: str


class DeliveryList(BaseModel):
    items: list[DeliveryItem]


class Operations:
    """What operators can do, independent of HTTP."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def deliveries(self, status: str | None, flow: str | None, limit: int) -> list[DeliveryItem]:
        rows = await self.runtime.store.list_deliveries(status, flow, limit)
        return [delivery_item(d) for d in rows]

    async def replay(self, delivery_id: str) -> bool:
        replayed = await self.runtime.store.replay_delivery(delivery_id, self.runtime.clock.now())
        self.runtime.worker.notify_due()
        return replayed

    async def replay_all(self, status: str, flow: str | None, narrower: ReplayFilter | None = None) -> int:
        count = await self.runtime.store.replay_deliveries(status, flow, self.runtime.clock.now(), narrower)
        self.runtime.worker.notify_due()
        return count

    async def replay_quarantined(self, quarantine_id: str) -> str | IntakeError:
        """Accept a quarantined event if its shape is now recognised; the new inbox id, or why not."""
        store = self.runtime.store
        item = await store.get_quarantined(quarantine_id)
        if item is None or item.status != "quarantined":
            return IntakeError(404, "not_found", f"No quarantined event has id {quarantine_id}.")
        try:
            envelope = envelope_for(item.source, orjson.loads(item.body), stream=item.stream)
        except (ShapeError, orjson.JSONDecodeError) as exc:
            return IntakeError(422, "unrecognised_payload", f"Still not recognised: {exc}")
        event = NewInboxEvent(
            item.source, item.stream, envelope.dedup_key, envelope.kind, item.body, self.runtime.clock.now()
        )
        accepted = await store.release_quarantined(quarantine_id, event)
        self.runtime.worker.notify_inbox()
        return accepted.id


MAX_DISPLAY_DEPTH = 64
MAX_DISPLAY_TEXT = 64 * 1024
_SECRET_TEXT = re.compile(
    r'("(?:writeKey|write_key|password|secret|token|apiKey|api_key)"\s*:\s*)"(?:[^"\\]|\\.)*"', re.I
)


def displayable(body: bytes) -> Any:
    """A stored body for people and JSON answers: parsed and redacted, or, when it is not JSON or
    nests deeper than `MAX_DISPLAY_DEPTH`, its text (secrets still hidden, at most 64 KiB)."""
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = None
    else:
        if _depth_at_most(value, MAX_DISPLAY_DEPTH):
            return redact_payload(value)
    text = _SECRET_TEXT.sub(r'\1"[REDACTED]"', body.decode("utf-8", errors="replace"))
    return text if len(text) <= MAX_DISPLAY_TEXT else text[:MAX_DISPLAY_TEXT] + "… (cut)"


def _depth_at_most(value: Any, limit: int) -> bool:
    stack = [(value, 1)]  # a loop, not recursion: the body is untrusted
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return False
                stack.append((child, depth + 1))
    return True


def pretty(value: Any) -> str:
    """Indented JSON of a value `displayable` returned (its text as is)."""
    return value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def story_json(story: EventStory) -> dict[str, Any]:
    event = story.event
    return {
        "event": {
            "id": event.id,
            "source": event.source,
            "stream": event.stream,
            "kind": event.kind,
            "received_at": event.received_at,
            "dispatched_at": story.dispatched_at,
            "body": displayable(event.body),
        },
        "filtered": [{"flow": f.flow, "reason": f.reason} for f in story.filtered],
        "deliveries": [
            {
                **delivery_item(d).model_dump(),
                "body": displayable(d.body),
                "attempts": [asdict(a) for a in story.attempts.get(d.id, [])],
            }
            for d in story.deliveries
        ],
    }


def redact_payload(value: Any) -> Any:
    """Segment deliveries may carry the source's writeKey; operators see everything else."""
    if isinstance(value, dict):
        return {k: ("[REDACTED]" if _SECRET_FIELD.search(str(k)) else redact_payload(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_payload(v) for v in value]
    return value


def delivery_item(d: Delivery) -> DeliveryItem:
    return DeliveryItem(
        id=d.id,
        flow=d.flow,
        destination=d.destination,
        status=d.status,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        last_response=d.last_response,
        created_at=d.created_at,
        next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
        message_id=d.message_id,
    )


health = APIRouter(tags=["health"])
ops = APIRouter(prefix="/ops/api", tags=["ops"], dependencies=[Depends(require_ops_access)])


@health.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", summary="Store reachable, workers running, no destination parked")
async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    reasons: list[str] = []
    try:
        await runtime.store.ping()
    except Exception as exc:
        reasons.append(f"store unreachable: {exc}")
    if runtime.role in ("all", "worker"):
        reasons += [f"worker loop {name} has stopped" for name in runtime.worker.alive(WORKER_MAX_SILENCE_SECONDS)]
        threshold = runtime.config.health.undispatched_older_than_minutes * 60
        with contextlib.suppress(Exception):  # an unreachable store is reported above
            pending = await runtime.store.undispatched()
            if pending.oldest_received_at is not None and runtime.clock.now() - pending.oldest_received_at > threshold:
                waited = (runtime.clock.now() - pending.oldest_received_at) / 60
                reasons.append(f"{pending.events} stored events are not routed; the oldest has waited {waited:.0f} min")
    parked = dict(runtime.worker.parked)
    paused = sorted(runtime.worker.paused)
    reasons += [f"destination {name} is parked: {reason}" for name, reason in parked.items()]
    body: dict[str, Any] = {"status": "ready" if not reasons else "not_ready", "parked": parked, "paused": paused}
    if reasons:
        return error_response(503, "not_ready", "; ".join(reasons), reasons=reasons, parked=parked, paused=paused)
    return json_response(200, body)


@health.get("/metrics", summary="Prometheus metrics (ops token)", dependencies=[Depends(require_ops_access)])
async def metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    await runtime.refresh_metrics()
    return Response(runtime.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


Limit = Annotated[int, Query(ge=1, le=1000)]


@ops.get("/deliveries", response_model=DeliveryList, summary="Deliveries, newest first")
async def list_deliveries(
    request: Request,
    status: Literal["pending", "delivered", "dead", "parked", "dry_run", "filtered"] | None = None,
    flow: str | None = None,
    limit: Limit = 100,
) -> DeliveryList:
    return DeliveryList(items=await Operations(runtime_of(request)).deliveries(status, flow, limit))


@ops.post("/deliveries/{delivery_id}/replay", status_code=202, summary="Send one delivery again")
async def replay_delivery(request: Request, delivery_id: str) -> Response:
    if not await Operations(runtime_of(request)).replay(delivery_id):
        delivery = await runtime_of(request).store.get_delivery(delivery_id)
        if delivery is None:
            return error_response(404, "not_found", f"No delivery has id {delivery_id}.")
        if delivery.action == UNRENDERED:
            return error_response(409, "never_rendered", NEVER_RENDERED)
        return error_response(409, "already_pending", f"Delivery {delivery_id} is already waiting to be sent.")
    return json_response(202, {"status": "replaying", "id": delivery_id})


@ops.post("/deliveries/replay", summary="Send every delivery with a status (dead by default) again")
async def replay_deliveries(request: Request, body: ReplayRequest) -> dict[str, int]:
    return {"replayed": await Operations(runtime_of(request)).replay_all(body.status, body.flow, body.narrower())}


@ops.get("/deliveries/{delivery_id}/attempts", summary="Every attempt of one delivery")
async def delivery_attempts(request: Request, delivery_id: str) -> Response:
    store = runtime_of(request).store
    if await store.get_delivery(delivery_id) is None:
        return error_response(404, "not_found", f"No delivery has id {delivery_id}.")
    attempts = await store.list_attempts(delivery_id)
    return json_response(
        200,
        {"items": [asdict(a) for a in attempts]},
    )


@ops.get("/quarantine", summary="Authenticated events whose shape was not recognised")
async def list_quarantine(request: Request, limit: Limit = 100) -> dict[str, list[dict[str, Any]]]:
    rows = await runtime_of(request).store.list_quarantine(limit)
    return {"items": [{"id": q.id, "source": q.source, "received_at": q.received_at, "error": q.error} for q in rows]}


@ops.get("/stats", summary="Counts by source, flow and destination; events not routed yet")
async def stats(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    counts = await runtime.store.stats()
    oldest = counts["undispatched"]["oldest_received_at"]
    counts["undispatched"]["oldest_age_seconds"] = None if oldest is None else max(0.0, runtime.clock.now() - oldest)
    return counts


@ops.post("/destinations/{name}/resume", summary="Resume a parked or paused destination")
async def resume_destination(request: Request, name: str) -> Response:
    if name not in DESTINATIONS:
        return error_response(404, "not_found", f"Destinations are {', '.join(DESTINATIONS)}.")
    resumed = await runtime_of(request).resume_destination(name)
    return json_response(200, {"status": "resumed", "destination": name, "deliveries": resumed})


@ops.post("/destinations/{name}/pause", summary="Pause a destination (its deliveries keep queueing)")
async def pause_destination(request: Request, name: str) -> Response:
    if name not in DESTINATIONS:
        return error_response(404, "not_found", f"Destinations are {', '.join(DESTINATIONS)}.")
    await runtime_of(request).pause_destination(name)
    return json_response(200, {"status": "paused", "destination": name})


@ops.post("/quarantine/{quarantine_id}/replay", status_code=202, summary="Accept a quarantined event again")
async def replay_quarantined(request: Request, quarantine_id: str) -> Response:
    outcome = await Operations(runtime_of(request)).replay_quarantined(quarantine_id)
    if isinstance(outcome, IntakeError):
        return error_response(outcome.status, outcome.code, outcome.message)
    return json_response(202, {"status": "replayed", "id": quarantine_id, "event_id": outcome})


@ops.get("/events/{event_id}", summary="An event's whole story: raw body, flows, deliveries, attempts")
async def event_story(request: Request, event_id: str) -> Response:
    story = await runtime_of(request).store.event_story(event_id)
    if story is None:
        return error_response(404, "not_found", f"No stored event has id {event_id}.")
    return json_response(200, story_json(story))


@ops.get("/jobs", summary="Scheduled jobs: interval, last run, outcome and counts, next run")
async def list_jobs(request: Request) -> dict[str, list[dict[str, Any]]]:
    return {"items": await runtime_of(request).scheduler.states()}


@ops.get("/users/{user_id:path}", summary="What fsbridge holds about one Segment user (404 after a deletion)")
async def user(request: Request, user_id: str) -> Response:
    record = await user_record_json(runtime_of(request), user_id)
    if record is None:
        return error_response(404, "not_found", f"fsbridge holds nothing about user {quote(user_id)}.")
    return json_response(200, record)
