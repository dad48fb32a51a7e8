"""Prometheus metrics (prometheus-client), one registry per runtime. Counters and histograms are
updated where things happen; queue depths and destination states are read at scrape time."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from fsbridge import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
END_TO_END_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.received = Counter(
            "fsbridge_events_received",
            "Authenticated inbound events, duplicates and quarantined included",
            ["source"],
            registry=r,
        )
        self.duplicates = Counter("fsbridge_events_duplicate", "Inbound events stored before", ["source"], registry=r)
        self.quarantined = Counter(
            "fsbridge_events_quarantined", "Authenticated inbound events of an unknown shape", ["source"], registry=r
        )
        self.filtered = Counter(
            "fsbridge_events_filtered",
            "Events a flow held back, by the filter that did",
            ["flow", "reason"],
            registry=r,
        )
        self.deliveries = Counter(
            "fsbridge_delivery_outcomes",
            "Delivery outcomes: delivered, retry, dead, parked, dry_run",
            ["destination", "outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "fsbridge_attempt_duration_seconds", "Duration of one outbound request", ["destination"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.receipt_to_delivery = Histogram(
            "fsbridge_receipt_to_delivery_seconds", "From receiving an event to its delivery", ["destination"],
            buckets=END_TO_END_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "fsbridge_queue_depth", "Deliveries by destination and status (pending, retrying, dead, parked)",
            ["destination", "status"], registry=r,
        )  # fmt: skip
        self.breaker_state = Gauge(
            "fsbridge_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["destination"], registry=r
        )
        self.paused = Gauge(
            "fsbridge_destination_paused", "1 when an operator paused the destination", ["destination"], registry=r
        )
        self.parked = Gauge(
            "fsbridge_destination_parked", "1 when the destination is parked (401/403)", ["destination"], registry=r
        )
        self.rate_limit = Gauge(
            "fsbridge_rate_limit_per_second",
            "Current request rate limit (lowered after 429)",
            ["destination"],
            registry=r,
        )
        self.undispatched = Gauge(
            "fsbridge_inbox_undispatched", "Stored events not routed into deliveries yet", registry=r
        )
        self.undispatched_age = Gauge(
            "fsbridge_inbox_undispatched_oldest_age_seconds",
            "Age of the oldest stored event not routed yet (0 when there is none)",
            registry=r,
        )
        self.job_failed = Gauge(
            "fsbridge_job_last_run_failed", "1 when the job's last run failed", ["job_name"], registry=r
        )
        self.job_overdue = Gauge(
            "fsbridge_job_overdue_seconds", "How long an enabled job is past its next run (0 when on time)",
            ["job_name"], registry=r,
        )  # fmt: skip
        self.job_last_success = Gauge(
            "fsbridge_job_last_success_timestamp_seconds", "When the job's last successful run finished", ["job_name"],
            registry=r,
        )  # fmt: skip
        Info("fsbridge_build", "fsbridge version", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        # Identifies that coalescing saved, per flow (stored counts, read at each scrape).
        self.coalesced: dict[str, int] = {}
        r.register(_Coalesced(self))

    def start_at_zero(self, destinations: Iterable[str], sources: Iterable[str]) -> None:
        """Export every destination's outcomes and every source's counts from the start, at 0: a
        counter that first appears already at 3 shows no increase, so an alert on the first dead
        letters (increase over a window) would never fire."""
        for destination in destinations:
            for outcome in ("delivered", "retry", "dead", "parked", "dry_run"):
                self.deliveries.labels(destination, outcome)
        for source in sources:
            for counter in (self.received, self.duplicates, self.quarantined):
                counter.labels(source)

    def watch_store(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Expose the store's committed transactions and writes, `counts()` read at each scrape."""
        self.registry.register(_StoreCommits(counts))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCommits(Collector):
    """Group commit at work: writes ÷ commits is how many writes share one durable commit."""

    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        commits, writes = self.counts()
        yield CounterMetricFamily("fsbridge_store_commits", "Write transactions the store committed", value=commits)
        yield CounterMetricFamily("fsbridge_store_writes", "Writes those transactions committed", value=writes)


class _Coalesced(Collector):
    """Identifies that coalescing saved (folded into a pending one, or dropped as unchanged), per flow."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "fsbridge_identifies_coalesced", "Identify calls coalescing saved, per flow", labels=["flow"]
        )
        for flow, count in sorted(self.metrics.coalesced.items()):
            family.add_metric([flow], count)
        yield family
