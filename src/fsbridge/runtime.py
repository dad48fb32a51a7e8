"""The assembled service: settings and configuration in; store, flows, destinations, worker and
receiver out. The HTTP app and the CLI both drive one `Runtime`."""

from __future__ import annotations

import os
import secrets
import socket
from typing import Literal

import httpx

from fsbridge.clock import Clock, SystemClock
from fsbridge.config import FsbridgeConfig
from fsbridge.engine.dispatch import Router
from fsbridge.engine.enricher import Enricher
from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.isolation import CircuitBreaker, Guard, TokenBucket
from fsbridge.engine.lookups import lookups
from fsbridge.engine.rendering import DestinationLimits
from fsbridge.engine.retry import RetryPolicy
from fsbridge.engine.scheduler import Scheduler
from fsbridge.engine.worker import Worker
from fsbridge.errors import ConfigError
from fsbridge.flows import build_flows
from fsbridge.flows.aggregations import UserAggregations
from fsbridge.flows.aggregations.coalescing import AWAITING as AWAITING_COALESCED
from fsbridge.flows.aggregations.pending import PendingIdentifies
from fsbridge.flows.feature_adoption import FeatureAdoption
from fsbridge.jobs import scheduled_jobs
from fsbridge.log import get_logger
from fsbridge.ops.health_monitor import HealthMonitor
from fsbridge.ops.metrics import Metrics
from fsbridge.settings import Settings
from fsbridge.sources.intake import Receiver
from fsbridge.store import Store, open_store
from fsbridge.store.records import AWAITING_ENRICHMENT
from fsbridge.targets import Destination
from fsbridge.targets.fullstory import FullstoryDestination
from fsbridge.targets.fullstory_lookups import FullstoryApi
from fsbridge.targets.jira import JiraDestination
from fsbridge.targets.segment import SegmentDestination
from fsbridge.targets.slack import SlackDestination

log = get_logger(__name__)

Role = Literal["all", "api", "worker"]
CREDENTIAL_VARIABLES = {
    "segment": "FSBRIDGE_SEGMENT_WRITE_KEY",
    "fullstory": "FSBRIDGE_FULLSTORY_API_KEY",
    "slack": "FSBRIDGE_SLACK_WEBHOOK_URL",
    "jira": "FSBRIDGE_JIRA_URL, FSBRIDGE_JIRA_EMAIL and FSBRIDGE_JIRA_API_TOKEN",
}


class Runtime:
    def __init__(
        self,
        settings: Settings,
        config: FsbridgeConfig,
        *,
        store: Store | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        policy: RetryPolicy | None = None,
        role: Role = "all",
    ) -> None:
        self.settings = settings
        self.config = config
        self.role = role
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.clock = clock or SystemClock()
        self.store = store or open_store(settings.database_url)
        self.flows = build_flows(config)
        self.destinations = self._destinations(transport)
        self._refuse_sending_without_credentials()
        self.fullstory_api = self._fullstory_api(transport)
        limits = {name: DestinationLimits(d.dry_run, d.max_message_bytes) for name, d in self.destinations.items()}
        rules = IdentityRules(config.identity)
        self.aggregations = UserAggregations(config.flows, segment_dry_run=self.destinations["segment"].dry_run)
        if self.aggregations.enabled:
            self.store.user_states = self.aggregations  # decided in the dispatch transaction
        self.store.keep_tombstones_for(config.retention.tombstones)
        adoption = config.flows.feature_adoption
        self.adoption = (
            FeatureAdoption(adoption, dry_run={name: d.dry_run for name, d in self.destinations.items()})
            if adoption.enabled and adoption.features
            else None
        )
        if self.adoption is not None:
            self.store.feature_counting = self.adoption.rules  # counted in the dispatch transaction
        self.router = Router(
            self.flows,
            limits,
            rules,
            lookups_available=self.fullstory_api is not None,
            signal_kinds=self.aggregations.signal_kinds if self.aggregations.enabled else frozenset(),
            adoption=adoption if self.adoption is not None else None,
        )
        self.metrics = Metrics()
        self.metrics.start_at_zero(self.destinations, ("fullstory", "fullstory_stream", "segment", "fullstory_api"))
        store = self.store
        self.metrics.watch_store(lambda: (store.transactions, store.writes))
        self.worker = Worker(
            self.store,
            self.router,
            self.destinations,
            policy
            or RetryPolicy(
                base_seconds=settings.retry_base_seconds,
                max_seconds=settings.retry_max_seconds,
                horizon_seconds=settings.retry_horizon_seconds,
            ),
            self.clock,
            poll_interval=config.worker.poll_interval_seconds,
            lease_seconds=config.worker.lease_seconds,
            dispatch_batch=config.worker.dispatch_batch,
            max_dispatch_attempts=config.worker.max_dispatch_attempts,
            dispatch_retry_seconds=config.worker.dispatch_retry_seconds,
            guards=self._guards(),
            metrics=self.metrics,
        )
        if any(flow.enrich for flow in self.flows):
            self.worker.renderers[AWAITING_ENRICHMENT] = Enricher(
                self.store,
                {flow.name: flow for flow in self.flows},
                lookups(rules, self.store),
                self.fullstory_api,
                self.worker.guards.get("fullstory"),
                self.clock,
                limits,
                resolve=self.worker.resolve_identities,
                is_parked=lambda: "fullstory" in self.worker.parked,
                park=self._park_fullstory,
            )
        if self.aggregations.enabled:
            self.worker.renderers[AWAITING_COALESCED] = PendingIdentifies(
                self.store, self.destinations["segment"].dry_run
            )
        self.monitor = HealthMonitor(
            self.store,
            self.clock,
            config.health,
            guards=self.worker.guards,
            parked=lambda: self.worker.parked,
            slack_dry_run=self.destinations["slack"].dry_run,
        )
        self.scheduler = Scheduler(
            self.store,
            self.clock,
            scheduled_jobs(self),
            self.instance,
            poll_interval=min(1.0, config.worker.poll_interval_seconds * 2),
        )
        self.receiver = Receiver(
            settings,
            self.store,
            self.clock,
            on_stored=self.worker.notify_inbox,
            metrics=self.metrics,
            max_segment_messages=config.intake.segment_max_messages,
        )

    def _destinations(self, transport: httpx.AsyncBaseTransport | None) -> dict[str, Destination]:
        segment, fullstory = self.config.destinations.segment, self.config.destinations.fullstory

        def client(timeout: float, concurrency: int) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                transport=transport,
                timeout=timeout,
                limits=httpx.Limits(max_connections=concurrency * 2),
                follow_redirects=False,
            )

        return {
            "segment": SegmentDestination(
                client(segment.timeout_seconds, segment.concurrency),
                api_url=self.settings.segment_api_url,
                write_key=self.settings.segment_write_key,
                dry_run=self.settings.is_dry_run("segment"),
                max_batch_messages=segment.max_batch_messages,
                concurrency=segment.concurrency,
            ),
            "fullstory": FullstoryDestination(
                client(fullstory.timeout_seconds, fullstory.concurrency),
                api_url=self.settings.fullstory_api_url,
                api_key=self.settings.fullstory_api_key,
                dry_run=self.settings.is_dry_run("fullstory"),
                concurrency=fullstory.concurrency,
            ),
            "slack": SlackDestination(
                client(self.config.destinations.slack.timeout_seconds, 1),
                webhook_url=self.settings.slack_webhook_url,
                dry_run=self.settings.is_dry_run("slack"),
            ),
            "jira": JiraDestination(
                client(self.config.destinations.jira.timeout_seconds, 1),
                site_url=self.settings.jira_url,
                email=self.settings.jira_email,
                api_token=self.settings.jira_api_token,
                project_key=self.config.destinations.jira.project_key,
                issue_type=self.config.destinations.jira.issue_type,
                dry_run=self.settings.is_dry_run("jira"),
            ),
        }

    def _guards(self) -> dict[str, Guard]:
        now = self.clock.now()
        guards = {}
        for name in self.destinations:
            options = getattr(self.config.destinations, name)
            guards[name] = Guard(
                TokenBucket(options.rate_limit_per_second, options.burst, now),
                CircuitBreaker(**options.breaker.model_dump()),
                concurrency=options.concurrency,
            )
        return guards

    def _fullstory_api(self, transport: httpx.AsyncBaseTransport | None) -> FullstoryApi | None:
        """Fullstory's API for look-ups, only when sending to Fullstory for real is allowed (never in dry-run)."""
        key = self.settings.fullstory_api_key
        if key is None or self.settings.is_dry_run("fullstory"):
            return None
        options = self.config.destinations.fullstory
        client = httpx.AsyncClient(
            transport=transport,
            timeout=options.timeout_seconds,
            limits=httpx.Limits(max_connections=options.concurrency * 2),
            follow_redirects=False,
        )
        return FullstoryApi(client, api_url=self.settings.fullstory_api_url, api_key=key)

    async def _park_fullstory(self, reason: str) -> None:
        text = f"{reason}: the credentials are missing or wrong; fix them, then resume the destination"
        self.worker.parked["fullstory"] = text
        await self.store.park_destination("fullstory", text, self.clock.now())
        log.error("destination.parked", destination="fullstory", reason=reason)

    def _refuse_sending_without_credentials(self) -> None:
        if self.settings.dry_run is not False:
            return
        used = {flow.target.destination for flow in self.flows}
        missing = [
            f"FSBRIDGE_DRY_RUN=false, but {CREDENTIAL_VARIABLES[name]} is not set "
            f"and {name} is used by an enabled flow."
            for name in sorted(used)
            if self.settings.credentials_for(name) is None
        ]
        if missing:
            raise ConfigError(missing)

    async def start(self, *, workers: bool | None = None) -> None:
        await self.store.open()
        run_workers = self.role in ("all", "worker") if workers is None else workers
        if run_workers:
            released = await self.store.recover_after_restart(self.clock.now())
            if released:
                log.warning("worker.recovered_claims", released=released)
        await self.worker.refresh_destination_states(force=True)
        for name, destination in self.destinations.items():
            if destination.dry_run:
                why = "FSBRIDGE_DRY_RUN=true" if self.settings.dry_run else f"{CREDENTIAL_VARIABLES[name]} is not set"
                log.warning(
                    "destination.dry_run",
                    destination=name,
                    message=f"DRY RUN for {name}: {why}; deliveries are rendered and recorded as dry_run, never sent.",
                )
        if run_workers:
            self.worker.start()
            self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.worker.stop()
        for destination in self.destinations.values():
            await destination.aclose()
        if self.fullstory_api is not None:
            await self.fullstory_api.aclose()
        await self.store.close()

    async def resume_destination(self, name: str) -> int:
        """Release a parked or paused destination; returns how many parked deliveries it released."""
        resumed = await self.store.resume_destination(name, self.clock.now())
        await self.store.set_paused(name, paused=False)
        self.worker.parked.pop(name, None)
        self.worker.paused.discard(name)
        self.worker.notify_due(name)
        log.info("destination.resumed", destination=name, deliveries=resumed)
        return resumed

    async def refresh_metrics(self) -> None:
        """Set the gauges that are read at scrape time: queue depths and destination states."""
        depths = await self.store.queue_depths()
        metrics = self.metrics
        metrics.coalesced = await self.store.coalesced_counts()
        pending = await self.store.undispatched()
        metrics.undispatched.set(pending.events)
        oldest = pending.oldest_received_at
        metrics.undispatched_age.set(0.0 if oldest is None else max(0.0, self.clock.now() - oldest))
        for name, guard in self.worker.guards.items():
            for status in ("pending", "retrying", "dead", "parked"):
                metrics.queue_depth.labels(name, status).set(depths.get((name, status), 0))
            metrics.breaker_state.labels(name).set(guard.breaker.state.value)
            metrics.rate_limit.labels(name).set(guard.bucket.rate)
            metrics.paused.labels(name).set(int(name in self.worker.paused))
            metrics.parked.labels(name).set(int(name in self.worker.parked))
        now = self.clock.now()
        for job in await self.scheduler.states():
            name, outcome = job["name"], job["last_outcome"] or ""
            metrics.job_failed.labels(name).set(int(outcome.startswith("failed")))
            due = job["next_run_at"]
            metrics.job_overdue.labels(name).set(
                max(0.0, now - due) if job["enabled"] and due and not job["running"] else 0.0
            )
            if outcome == "ok" and job["last_finished_at"]:
                metrics.job_last_success.labels(name).set(job["last_finished_at"])

    async def pause_destination(self, name: str) -> None:
        """Stop sending to a destination; its deliveries keep queueing as pending."""
        await self.store.set_paused(name, paused=True)
        self.worker.paused.add(name)
        log.warning("destination.paused", destination=name)
