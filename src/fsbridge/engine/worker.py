"""Background workers: the dispatcher turns stored inbox events into deliveries, and one delivery
loop per destination claims due deliveries under a lease, sends them, and records every attempt.
A crashed worker's claims come back when their lease expires. Loops wake when new work is
committed and otherwise poll, so a second process sharing the store is picked up too."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from fsbridge.clock import Clock
from fsbridge.engine.dispatch import Router, envelope_of, suppress_unchanged
from fsbridge.engine.enricher import DeliveryRenderer, Enriched
from fsbridge.engine.isolation import BreakerState, Guard
from fsbridge.engine.loop_share import LoopShare
from fsbridge.engine.outcomes import answered_update, dry_run_update
from fsbridge.engine.rendering import shorten
from fsbridge.engine.retry import RetryPolicy, Verdict, classify, parse_retry_after
from fsbridge.envelope import Envelope
from fsbridge.log import get_logger
from fsbridge.ops.metrics import Metrics
from fsbridge.sources.fullstory import STREAM_SOURCE, SYSTEM_SOURCE
from fsbridge.store import (
    AttemptRecord,
    Delivery,
    DeliveryUpdate,
    DispatchFailure,
    DispatchResult,
    IdentityConflict,
)
from fsbridge.store.deliveries import DeliveryStore
from fsbridge.store.dispatch import DispatchStore
from fsbridge.store.identity import IdentityStore
from fsbridge.targets import Destination, SendResult

log = get_logger(__name__)


class WorkerStore(DispatchStore, DeliveryStore, IdentityStore, Protocol):
    """The store roles the worker uses: routing, sending, the identity links and tombstones dispatch reads."""

    async def ping(self) -> None: ...
    async def tombstoned(self, user_ids: list[str], now: float) -> set[str]: ...


class Worker:
    def __init__(
        self,
        store: WorkerStore,
        router: Router,
        destinations: Mapping[str, Destination],
        policy: RetryPolicy,
        clock: Clock,
        *,
        poll_interval: float = 0.5,
        lease_seconds: float = 60.0,
        dispatch_batch: int = 500,
        max_dispatch_attempts: int = 3,
        dispatch_retry_seconds: float = 5.0,
        guards: Mapping[str, Guard] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        # What renders a delivery that waits (`awaiting`), by what it waits for: the enricher's
        # look-ups ('enrich'), a coalesced identify's current values ('coalesced'). Set by the runtime.
        self.renderers: dict[str, DeliveryRenderer] = {}
        self.metrics = metrics or Metrics()
        self.guards = dict(guards or {})
        self.paused: set[str] = set()
        self._states_read_at = float("-inf")
        self.router = router
        self.destinations = dict(destinations)
        self.policy = policy
        self.clock = clock
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.dispatch_batch = dispatch_batch
        self.max_dispatch_attempts = max_dispatch_attempts
        self.dispatch_retry_seconds = dispatch_retry_seconds
        self.parked: dict[str, str] = {}
        self.heartbeats: dict[str, float] = {}
        self._inbox_ready = asyncio.Event()
        self._due: dict[str, asyncio.Event] = {name: asyncio.Event() for name in self.destinations}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # -- signals ----------------------------------------------------------------------------------

    def notify_inbox(self) -> None:
        """Intake committed a new event."""
        self._inbox_ready.set()

    def notify_due(self, destination: str | None = None) -> None:
        """Deliveries became due (dispatch, replay, resume)."""
        for name, event in self._due.items():
            if destination is None or name == destination:
                event.set()

    # -- one pass each (tests call these directly) -------------------------------------------------

    async def dispatch_once(self) -> int:
        """Route one batch of stored inbox events into deliveries; returns how many events.

        Each event is isolated: one that fails to parse, resolve, route or be recorded fails alone
        (it is tried again, and moves to quarantine after `max_dispatch_attempts`), and the rest of
        the batch is dispatched. Only a store that cannot be reached fails the whole batch."""
        now = self.clock.now()
        events = await self.store.claim_inbox(self.dispatch_batch, now, self.lease_seconds)
        if not events:
            return 0
        failures: list[DispatchFailure] = []
        envelopes, raws = [], {}
        share = LoopShare()
        for event in events:
            await share.after(len(event.body))
            try:
                envelopes.append(envelope_of(event))
            except Exception as exc:  # stored bodies are JSON; anything else is one event's problem
                failures.append(DispatchFailure(event.id, _describe("reading the stored event", exc)))
            else:
                raws[event.id] = event.body
        envelopes = await self._resolve_isolated(envelopes, failures)
        envelopes = await self._mark_deleted_users(envelopes)
        results = []
        for envelope in envelopes:
            await share.after(len(raws[envelope.event_id]))
            try:
                result = self.router.route(envelope, raws[envelope.event_id])
            except Exception as exc:
                failures.append(DispatchFailure(envelope.event_id, _describe("routing", exc)))
                continue
            results.append(result)
        scopes = [d.sync_scope for r in results for d in r.deliveries if d.sync_scope is not None]
        results = suppress_unchanged(results, await self.store.sync_snapshots(scopes))
        results, conflicts = await self._record_isolated(results, failures, self.clock.now())
        if failures:
            await self._count_failures(failures, {event.id: event.source for event in events})
        # Counted per batch, in one pass: a labelled counter per event would cost more than routing it.
        filtered: collections.Counter[tuple[str, str]] = collections.Counter()
        outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        for result in results:
            for skip in result.filtered:
                filtered[skip.flow, skip.reason.split(":", 1)[0]] += 1
            for d in result.deliveries:
                outcomes[d.destination, d.status] += 1
        for (flow, reason), count in filtered.items():
            self.metrics.filtered.labels(flow, reason).inc(count)
        for (destination, status), count in outcomes.items():
            if status in ("dry_run", "dead"):
                self.metrics.deliveries.labels(destination, status).inc(count)
        self._log_conflicts(conflicts)
        for name in {destination for destination, _ in outcomes}:
            self.notify_due(name)
        log.info(
            "inbox.dispatched",
            events=len(events),
            deliveries=outcomes.total(),
            filtered=filtered.total(),
            dry_run=sum(count for (_, status), count in outcomes.items() if status == "dry_run"),
            failed=len(failures),
        )
        return len(events)

    @staticmethod
    def _log_conflicts(conflicts: list[IdentityConflict]) -> None:
        for conflict in conflicts:
            # The identifier may be an email: log only its kind and a short hash.
            log.warning(
                "identity.conflict",
                kind=conflict.kind,
                identifier_sha256=hashlib.sha256(conflict.value.encode()).hexdigest()[:16],
                kept="first claim",
            )

    async def _mark_deleted_users(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Events about a user with a tombstone (deleted) are routed nowhere."""
        named = {e.event_id: user for e in envelopes if (user := self.router.identity.named_user(e))}
        deleted = await self.store.tombstoned(sorted(set(named.values())), self.clock.now()) if named else set()
        if not deleted:
            return envelopes
        return [replace(e, user_deleted=True) if named.get(e.event_id) in deleted else e for e in envelopes]

    async def _resolve_isolated(self, envelopes: list[Envelope], failures: list[DispatchFailure]) -> list[Envelope]:
        """`resolve_identities` for the batch; when it raises, event by event, so only the events
        that make it raise fail (after a check that the store itself answers)."""
        try:
            return await self.resolve_identities(envelopes)
        except Exception as exc:
            log.warning("inbox.resolve_failed", error=str(exc), events=len(envelopes))
        resolved: list[Envelope] = []
        failed: list[DispatchFailure] = []
        for envelope in envelopes:
            try:
                resolved += await self.resolve_identities([envelope])
            except Exception as exc:
                failed.append(DispatchFailure(envelope.event_id, _describe("resolving identities", exc)))
        if failed and not resolved:
            await self.store.ping()  # raises while the store is down: then nothing is the events' fault
        failures.extend(failed)
        return resolved

    async def _record_isolated(
        self, results: list[DispatchResult], failures: list[DispatchFailure], now: float
    ) -> tuple[list[DispatchResult], list[IdentityConflict]]:
        """Record the batch in one transaction; when that fails, each event in its own write (the
        writer commits them together, each in a savepoint), so one event the store refuses (a NUL
        character PostgreSQL will not keep, say) fails alone."""
        if not results:
            return results, []
        try:
            return results, await self.store.record_dispatch(results, now)
        except Exception as exc:
            log.warning("inbox.record_failed", error=str(exc), events=len(results))
        answers = await asyncio.gather(*(self.store.record_dispatch([r], now) for r in results), return_exceptions=True)
        recorded, conflicts, failed = [], [], []
        for result, answer in zip(results, answers, strict=True):
            if isinstance(answer, BaseException):
                failed.append(DispatchFailure(result.inbox_id, _describe("recording the dispatch", answer)))
            else:
                recorded.append(result)
                conflicts.extend(answer)
        if failed and not recorded:
            await self.store.ping()
        failures.extend(failed)
        return recorded, conflicts

    async def _count_failures(self, failures: list[DispatchFailure], sources: dict[str, str]) -> None:
        now = self.clock.now()
        quarantined = await self.store.record_dispatch_failures(
            failures, now, self.max_dispatch_attempts, self.dispatch_retry_seconds
        )
        for failure in failures:
            log.error(
                "inbox.dispatch_failed",
                event_id=failure.inbox_id,
                error=failure.error,
                quarantined=failure.inbox_id in quarantined,
            )
        for event_id in quarantined:
            self.metrics.quarantined.labels(sources[event_id]).inc()

    async def resolve_identities(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Fullstory events without a user id get the Segment userId their email or anonymous id
        links to, from the stored links alone. (An email no link knows is looked up in Fullstory
        when the delivery is sent: the frustration flow's `identity` enrich step.)"""
        rules = self.router.identity
        wanted = {e.event_id: rules.lookup_keys(e) for e in envelopes if e.source in (STREAM_SOURCE, SYSTEM_SOURCE)}
        keys = [key for event_keys in wanted.values() for key in event_keys]
        if not keys:
            return envelopes
        found = await self.store.resolve_identities(keys)
        resolved = []
        for envelope in envelopes:
            user_id = next((found[k] for k in wanted.get(envelope.event_id, []) if k in found), None)
            resolved.append(replace(envelope, resolved_user_id=user_id) if user_id else envelope)
        return resolved

    async def deliver_once(self, name: str) -> int:
        """Claim and send one round of due deliveries for a destination; returns how many."""
        destination = self.destinations[name]
        if name in self.parked or name in self.paused:
            return 0
        guard = self.guards.get(name)
        now = self.clock.now()
        requests = destination.concurrency
        if guard is not None:
            requests = min(requests, guard.bucket.available(now))
            if requests < 1 or not guard.breaker.allows(now):
                return 0
            if guard.breaker.state is BreakerState.HALF_OPEN:
                requests = 1
        limit = min(destination.claim_limit, requests * destination.messages_per_request)
        deliveries = await self.store.claim_deliveries(name, limit, now, self.lease_seconds)
        if not deliveries:
            if guard is not None:
                guard.breaker.cancel_probe()
            return 0
        if destination.dry_run:
            updates = [dry_run_update(destination, d) for d in deliveries]
            await self.store.record_updates(updates)
            for status in ("dry_run", "dead"):
                if count := sum(u.status == status for u in updates):
                    self.metrics.deliveries.labels(name, status).inc(count)
            log.info("delivery.dry_run", destination=name, deliveries=len(deliveries))
            return len(deliveries)
        claimed = len(deliveries)
        if self.renderers and any(d.awaiting for d in deliveries):
            deliveries = await self._enrich(name, deliveries)
            if not deliveries:
                return claimed
        batches = destination.plan(deliveries)
        if guard is not None:
            guard.bucket.take(len(batches), now)
        # The guard's gate is shared with the look-ups made in this destination's API.
        gate = guard.gate if guard is not None else asyncio.Semaphore(destination.concurrency)

        async def send(batch: list[Delivery]) -> None:
            async with gate:
                result = await destination.send(batch)
            await self._record(destination, batch, result)

        await asyncio.gather(*(send(batch) for batch in batches))
        return claimed

    async def _enrich(self, name: str, deliveries: list[Delivery]) -> list[Delivery]:
        """Make the look-ups of the deliveries that wait for them; returns what can be sent now,
        and records what cannot (filtered, dead, held back, or a failed attempt to retry)."""
        ready = [d for d in deliveries if not d.awaiting]
        results: list[Enriched] = []
        conflicts: list[IdentityConflict] = []
        for kind in sorted({d.awaiting for d in deliveries if d.awaiting}):
            waiting = [d for d in deliveries if d.awaiting == kind]
            renderer = self.renderers.get(kind)
            if renderer is None:  # nothing here renders it (its flow is off): it waits, visibly
                results += [Enriched(d, "held", f"nothing renders '{kind}' deliveries here") for d in waiting]
                continue
            rendered, learned = await renderer.enrich(waiting)
            results += rendered
            conflicts += learned
        now = self.clock.now()
        updates: list[DeliveryUpdate] = []
        for result in results:
            d = result.delivery
            if result.outcome == "ready":
                ready.append(d)
            elif result.outcome == "filtered":
                updates.append(DeliveryUpdate(d.id, "filtered", now, None, last_error=result.reason))
                self.metrics.filtered.labels(d.flow, "enrich").inc()
            elif result.outcome == "dead":
                updates.append(DeliveryUpdate(d.id, "dead", now, None, last_error=result.reason))
                log.warning("delivery.dead_lettered", destination=name, delivery_id=d.id, error=result.reason)
            elif result.outcome == "held":
                until = result.until if result.until is not None else now + self.poll_interval
                updates.append(
                    DeliveryUpdate(d.id, "pending", until, None, send_alone=d.send_alone, last_error=result.reason)
                )
            else:
                assert result.attempt is not None
                updates.append(
                    answered_update(d, Verdict.RETRY, result.attempt, 1, result.retry_after, now, self.policy)
                )
        await self.store.record_updates(updates)
        for outcome, count in collections.Counter(u.status for u in updates).items():
            if outcome in ("filtered", "dead"):
                self.metrics.deliveries.labels(name, outcome).inc(count)
        self._log_conflicts(conflicts)
        ready.sort(key=lambda d: d.next_attempt_at)
        return ready

    async def wait_before_next_round(self, name: str) -> float:
        """How long a destination's sender sleeps after a round that sent nothing (it wakes sooner
        when new deliveries are committed): until its rate limit or breaker lets it send, until its
        next delivery is due, and at most `poll_interval`. A paused or parked destination waits the
        whole interval, however much is due: what is due is what it must not send."""
        if name in self.paused or name in self.parked:
            return self.poll_interval
        idle = self.idle_for(name)
        if idle is not None:
            return min(self.poll_interval, max(idle, 0.01))
        now = self.clock.now()
        next_due = await self.store.next_due_at(name, now)
        if next_due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, next_due - now))

    def idle_for(self, name: str) -> float | None:
        """How long a destination's rate limit or breaker keeps it idle (None: not held)."""
        guard = self.guards.get(name)
        if guard is None:
            return None
        now = self.clock.now()
        if guard.breaker.state is BreakerState.OPEN:
            return guard.breaker.reopens_in(now)
        wait = guard.bucket.wait(now)
        return wait if wait > 0 else None

    async def refresh_destination_states(self, force: bool = False) -> None:
        """Pick up pauses and parking another process (or an operator) recorded in the store."""
        now = self.clock.now()
        if not force and now - self._states_read_at < self.poll_interval:
            return
        self._states_read_at = now
        self.paused = await self.store.paused_destinations()
        self.parked = await self.store.parked_destinations()

    async def drain(self, max_rounds: int = 100) -> None:
        """Dispatch and deliver until nothing is due now (tests; bounded)."""
        for _ in range(max_rounds):
            moved = await self.dispatch_once()
            for name in self.destinations:
                moved += await self.deliver_once(name)
            if moved == 0:
                return

    async def _record(self, destination: Destination, batch: list[Delivery], result: SendResult) -> None:
        now = self.clock.now()
        verdict = Verdict.DELIVERED if result.already_done else classify(result.status_code)
        guard = self.guards.get(destination.name)
        if guard is not None:
            guard.breaker.record(verdict is not Verdict.RETRY, now)
            if result.status_code == 429:
                guard.bucket.throttled(now)
                log.warning("destination.throttled", destination=destination.name, rate=guard.bucket.rate)
        self.metrics.attempt_seconds.labels(destination.name).observe(result.duration_ms / 1000)
        attempt = AttemptRecord(
            attempted_at=now,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=result.error,
            response_excerpt=result.response_excerpt,
        )
        log.info(
            "delivery.attempted",
            destination=destination.name,
            deliveries=len(batch),
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            verdict=verdict.value,
            error=result.error,
        )
        if verdict is Verdict.PARK:
            reason = (
                f"{destination.name} answered {result.status_code}: the credentials are missing or wrong; "
                f"fix them, then resume the destination"
            )
            self.parked[destination.name] = reason
            await self.store.park_destination(destination.name, reason, now)
            log.error("destination.parked", destination=destination.name, status_code=result.status_code)
        retry_after = parse_retry_after(result.retry_after, now)
        updates = [answered_update(d, verdict, attempt, len(batch), retry_after, now, self.policy) for d in batch]
        await self.store.record_updates(updates)
        outcomes = collections.Counter("retry" if u.status == "pending" else u.status for u in updates)
        for outcome, count in outcomes.items():
            self.metrics.deliveries.labels(destination.name, outcome).inc(count)
        latency = self.metrics.receipt_to_delivery.labels(destination.name)
        for update, delivery in zip(updates, batch, strict=True):
            if update.status == "delivered":
                latency.observe(max(0.0, now - delivery.received_at))
        for update in updates:
            if update.status == "dead":
                log.warning(
                    "delivery.dead_lettered",
                    destination=destination.name,
                    delivery_id=update.delivery_id,
                    error=update.last_error,
                )

    # -- background loops ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._tasks = [asyncio.create_task(self._dispatch_loop(), name="fsbridge-dispatcher")]
        self._tasks += [
            asyncio.create_task(self._delivery_loop(name), name=f"fsbridge-deliver-{name}")
            for name in self.destinations
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def alive(self, max_age: float) -> list[str]:
        """Names of loops that have not reported within `max_age` seconds (empty when all are alive)."""
        now = self.clock.now()
        expected = ["dispatcher", *(f"deliver-{name}" for name in self.destinations)]
        return [name for name in expected if now - self.heartbeats.get(name, float("-inf")) > max_age]

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            self.heartbeats["dispatcher"] = self.clock.now()
            try:
                moved = await self.dispatch_once()
            except Exception as exc:
                log.error("worker.dispatch_failed", error=str(exc))
                moved = 0
            if moved == 0:
                await _wait(self._inbox_ready, self.poll_interval)

    async def _delivery_loop(self, name: str) -> None:
        due = self._due[name]
        while not self._stopping:
            self.heartbeats[f"deliver-{name}"] = self.clock.now()
            try:
                await self.refresh_destination_states()
                moved = await self.deliver_once(name)
                timeout = self.poll_interval if moved else await self.wait_before_next_round(name)
            except Exception as exc:
                log.error("worker.delivery_failed", destination=name, error=str(exc))
                moved, timeout = 0, self.poll_interval
            if moved == 0:
                await _wait(due, timeout)


def _describe(stage: str, exc: BaseException) -> str:
    return shorten(f"{stage} raised {type(exc).__name__}: {exc}")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    event.clear()
