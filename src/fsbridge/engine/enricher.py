"""Enricher (Content Enricher, at delivery time): a claimed delivery whose flow enriches holds the
plan of its look-ups. Before it is sent, the enricher makes them, in the flow's order, and renders
the message with what they found (`engine.rendering.render_enriched`).

- Each look-up goes through the `fullstory` destination's guard: its rate limit (a token a call),
  circuit breaker and concurrency. A guard that holds the call back delays the delivery without
  counting an attempt.
- Answers, found or not, are cached in the store for the step's `cache_for`, and the deliveries
  of one round that ask the same thing share one call: ten triggers of one user make one look-up.
- A look-up that fails in a way worth retrying (network, timeout, 429, 5xx) is a failed attempt of
  that delivery, retried on the durable queue with backoff and `Retry-After` until the retry
  horizon; 401/403 also park the `fullstory` destination. An optional step that fails is left out.
- A required step that finds nothing ends the delivery as `filtered`, with the look-up's reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import orjson

from fsbridge.clock import Clock
from fsbridge.engine.dispatch import DELETED_USER, envelope_of
from fsbridge.engine.flow import EnrichStep, Flow
from fsbridge.engine.isolation import BreakerState, Guard
from fsbridge.engine.rendering import DestinationLimits, render_enriched
from fsbridge.envelope import Envelope
from fsbridge.log import get_logger
from fsbridge.store import AttemptRecord, Delivery, IdentityClaim, IdentityConflict, InboxEvent
from fsbridge.store.lookups import CachedAnswer, LookupStore, RenderedDelivery, subject_hash
from fsbridge.targets.fullstory_lookups import (
    Answer,
    FullstoryApi,
    Lookup,
    LookupRefusedError,
    LookupUnavailableError,
)

log = get_logger(__name__)

PARKED_RECHECK_SECONDS = 30.0


class LookupHeldError(Exception):
    """The guard holds look-ups back until `until` (rate limit, open breaker, parked destination)."""

    def __init__(self, reason: str, until: float) -> None:
        super().__init__(reason)
        self.until = until


@dataclass(slots=True)
class Enriched:
    """What enrichment made of one delivery: `ready` (its body is now the message), `filtered`,
    `dead` (the flow failed on what was found), `held` (until `until`) or `failed` (an attempt)."""

    delivery: Delivery
    outcome: Literal["ready", "filtered", "dead", "held", "failed"]
    reason: str | None = None
    until: float | None = None
    attempt: AttemptRecord | None = None
    retry_after: float | None = None


class DeliveryRenderer(Protocol):
    """Renders claimed deliveries that wait for something (`awaiting`) before they can be sent."""

    async def enrich(self, deliveries: list[Delivery]) -> tuple[list[Enriched], list[IdentityConflict]]: ...


class EnricherStore(LookupStore, Protocol):
    async def inbox_events(self, event_ids: list[str]) -> dict[str, InboxEvent]: ...
    async def tombstoned(self, user_ids: list[str], now: float) -> set[str]: ...


def cache_key(lookup: str, arguments: Mapping[str, Any]) -> str:
    canonical = orjson.dumps(dict(sorted(arguments.items())), default=str)
    return hashlib.sha256(lookup.encode() + b"\n" + canonical).hexdigest()


class Enricher:
    def __init__(
        self,
        store: EnricherStore,
        flows: Mapping[str, Flow],
        lookups: Mapping[str, Lookup],
        api: FullstoryApi | None,
        guard: Guard | None,
        clock: Clock,
        limits: Mapping[str, DestinationLimits],
        *,
        resolve: Callable[[list[Envelope]], Awaitable[list[Envelope]]],
        is_parked: Callable[[], bool],
        park: Callable[[str], Awaitable[None]],
    ) -> None:
        self.store = store
        self.flows = dict(flows)
        self.lookups = dict(lookups)
        self.api = api
        self.guard = guard
        self.clock = clock
        self.limits = dict(limits)
        self.resolve = resolve
        self.is_parked = is_parked
        self.park = park

    async def enrich(self, deliveries: list[Delivery]) -> tuple[list[Enriched], list[IdentityConflict]]:
        """Make the look-ups of claimed deliveries that wait for them, and render the ready ones
        (their new body is written before they are sent)."""
        events = await self.store.inbox_events(sorted({d.inbox_id for d in deliveries}))
        envelopes = await self.resolve([envelope_of(event) for event in events.values()])
        by_event = {envelope.event_id: envelope for envelope in envelopes}
        round_ = _Round(self)
        results = await asyncio.gather(*(self._one(d, by_event.get(d.inbox_id), round_) for d in deliveries))
        now = self.clock.now()
        await self.store.cache_answers(round_.to_cache)
        rendered = [RenderedDelivery(e.delivery.id, e.delivery.body) for e in results if e.outcome == "ready"]
        conflicts: list[IdentityConflict] = []
        if rendered or round_.claims:
            conflicts = await self.store.record_rendered(rendered, round_.claims, now)
        return results, conflicts

    async def _one(self, delivery: Delivery, envelope: Envelope | None, round_: _Round) -> Enriched:
        flow = self.flows.get(delivery.flow)
        if flow is None:
            return Enriched(delivery, "dead", f"the flow {delivery.flow} is no longer enabled, so nothing renders it")
        if envelope is None:
            return Enriched(delivery, "dead", "its inbound event is no longer stored, so nothing renders it")
        found: dict[str, Any] = {}
        claims: list[IdentityClaim] = []
        for step in flow.enrich:
            if not step.applies(envelope):
                continue
            lookup = self.lookups[step.lookup]
            arguments = step.arguments_for(envelope)
            try:
                answer = await round_.answer(step, lookup, arguments) if arguments else _nothing_to_ask(lookup)
            except LookupHeldError as held:
                return Enriched(delivery, "held", str(held), until=held.until)
            except LookupUnavailableError as exc:
                if not step.required:
                    log.warning("enrich.optional_lookup_failed", flow=flow.name, lookup=step.lookup, error=str(exc))
                    continue
                attempt = AttemptRecord(self.clock.now(), 0.0, exc.status_code, f"look-up {step.lookup}: {exc}", None)
                return Enriched(delivery, "failed", str(exc), attempt=attempt, retry_after=exc.retry_after)
            answer = lookup.judge(answer, dict(step.options), self.clock.now())
            if answer.value is None:
                if step.required:
                    return Enriched(delivery, "filtered", answer.reason)
                continue
            found[step.name] = answer.value
            step_claims = lookup.claims(arguments, answer)
            # A look-up that names a user (its claims, or the userId behind a Fullstory user) may name
            # a deleted one: nothing more is sent about them, nor asked.
            named = {claim.user_id for claim in step_claims}
            if isinstance(answer.value, dict) and isinstance(answer.value.get("user_id"), str):
                named.add(answer.value["user_id"])
            if named and await self.store.tombstoned(sorted(named), self.clock.now()):
                return Enriched(delivery, "filtered", DELETED_USER)
            claims += step_claims
            envelope = replace(envelope, enriched=dict(found))
        rendering = render_enriched(flow, envelope, self.limits[flow.target.destination], delivery.message_id)
        if rendering.held_back is not None:
            return Enriched(delivery, "filtered", rendering.held_back)
        if rendering.error is not None or rendering.body is None:
            return Enriched(delivery, "dead", rendering.error or "nothing rendered")
        round_.claims += claims
        delivery.body = rendering.body
        delivery.awaiting = None
        return Enriched(delivery, "ready")

    async def ask(self, lookup: Lookup, arguments: dict[str, Any]) -> Answer:
        """One call in Fullstory, through the guard."""
        now = self.clock.now()
        if self.api is None:
            raise LookupUnavailableError("look-ups need FSBRIDGE_FULLSTORY_API_KEY")
        if self.is_parked():
            raise LookupHeldError("the fullstory destination is parked", now + PARKED_RECHECK_SECONDS)
        guard = self.guard
        if guard is not None and not guard.try_turn(now):
            open_ = guard.breaker.state is BreakerState.OPEN
            reason = "fullstory's circuit breaker is open" if open_ else "fullstory's rate limit"
            raise LookupHeldError(reason, now + guard.wait_hint(now))
        started = time.perf_counter()
        try:
            if guard is None:
                answer = await lookup.ask(self.api, arguments)
            else:
                async with guard.gate:
                    answer = await lookup.ask(self.api, arguments)
        except LookupUnavailableError as exc:
            if guard is not None:
                guard.outcome(False, self.clock.now(), exc.status_code)
            if exc.refused:
                await self.park(f"a look-up was refused: Fullstory answered {exc.status_code}")
            log.warning("enrich.lookup_failed", lookup=lookup.name, error=str(exc), status_code=exc.status_code)
            raise
        if guard is not None:
            guard.outcome(True, self.clock.now())
        log.debug("enrich.lookup", lookup=lookup.name, found=answer.value is not None,
                  duration_ms=round((time.perf_counter() - started) * 1000, 3))  # fmt: skip
        return answer


class _Round:
    """The look-ups of one claimed round: one call per question, answers from the cache first."""

    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher
        self.pending: dict[str, asyncio.Future[Answer]] = {}
        self.to_cache: list[CachedAnswer] = []
        self.claims: list[IdentityClaim] = []

    async def answer(self, step: EnrichStep, lookup: Lookup, arguments: dict[str, Any]) -> Answer:
        if not lookup.remote:  # fsbridge's own store: neither guarded nor cached
            return await lookup.ask(None, arguments)
        key = cache_key(step.lookup, arguments)
        future = self.pending.get(key)
        if future is None:
            future = self.pending[key] = asyncio.ensure_future(self._fetch(key, step, lookup, arguments))
        return await asyncio.shield(future)

    async def _fetch(self, key: str, step: EnrichStep, lookup: Lookup, arguments: dict[str, Any]) -> Answer:
        enricher = self.enricher
        cached = await enricher.store.cached_answers([key], enricher.clock.now())
        if key in cached:
            stored = orjson.loads(cached[key])
            return Answer(stored.get("value"), stored.get("reason", ""))
        try:
            answer = await enricher.ask(lookup, arguments)
        except LookupRefusedError as exc:  # asking again would not change it: cached like nothing found
            answer = Answer(None, str(exc))
        text = orjson.dumps({"value": answer.value, "reason": answer.reason}).decode()
        subject = subject_hash(lookup.subject(arguments, answer))
        self.to_cache.append(CachedAnswer(key, subject, text, enricher.clock.now() + step.cache_for))
        return answer


def _nothing_to_ask(lookup: Lookup) -> Answer:
    return Answer(None, f"nothing to look up by (it takes {', '.join(sorted(lookup.parameters))})")
