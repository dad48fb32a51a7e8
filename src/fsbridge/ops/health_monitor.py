"""Health monitor: a periodic check that tells people in Slack, within minutes, when something is
silently wrong, and again when it clears. Conditions, each per destination or source:

- the share of successful attempts over the last N minutes is below the threshold;
- inbound volume over the last window differs by more than ±X % from the same window a day (or a
  week) before, which is often the only sign that a sender stopped or a stream broke;
- new dead letters appeared;
- a destination is parked (credentials refused), or its circuit breaker stayed open;
- the oldest stored event has waited too long to be routed (no worker runs, or routing fails).

Each condition is stored with its state, so one alert is sent when it starts and one recovery when
it clears, across restarts: no alert storms. Alerts are Block Kit messages that travel through the
same durable delivery path as everything else (dry-run when no Slack webhook is configured).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fsbridge.clock import Clock
from fsbridge.config import HealthConfig
from fsbridge.engine.isolation import BreakerState, Guard
from fsbridge.flows.targets import TARGETS
from fsbridge.log import get_logger
from fsbridge.store import NewDelivery
from fsbridge.store.dispatch import DispatchStore
from fsbridge.store.ops_reads import OpsReads
from fsbridge.store.ops_state import AlertStore
from fsbridge.targets.slack import escape_mrkdwn

log = get_logger(__name__)
FLOW = "health_monitor"
COMPARE_SECONDS = {"day": 86400, "week": 7 * 86400}


@dataclass(frozen=True)
class Condition:
    key: str
    active: bool
    title: str
    detail: str


class HealthMonitorStore(OpsReads, AlertStore, DispatchStore, Protocol):
    """What the monitor reads (counts, alert states) and writes (alert states, the alerts it queues)."""


class HealthMonitor:
    def __init__(
        self,
        store: HealthMonitorStore,
        clock: Clock,
        config: HealthConfig,
        *,
        guards: Mapping[str, Guard],
        parked: Callable[[], Mapping[str, str]],
        slack_dry_run: bool,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.guards = guards
        self.parked = parked
        self.slack_dry_run = slack_dry_run

    async def conditions(self, now: float) -> list[Condition]:
        c = self.config
        found: list[Condition] = []
        outcomes = await self.store.attempt_outcomes(now - c.success_window_minutes * 60)
        for destination, (ok, total) in sorted(outcomes.items()):
            rate = ok / total
            found.append(
                Condition(
                    f"success_rate:{destination}",
                    total >= c.success_min_attempts and rate < c.success_rate_below,
                    f"{destination}: delivery success rate {rate:.0%}",
                    f"{ok} of {total} attempts to {destination} succeeded in the last "
                    f"{c.success_window_minutes:g} minutes (alert below {c.success_rate_below:.0%}).",
                )
            )
        window = c.volume_window_minutes * 60
        shift = COMPARE_SECONDS[c.volume_compare_to]
        current = await self.store.inbound_counts(now - window, now)
        before = await self.store.inbound_counts(now - window - shift, now - shift)
        for source in sorted(set(current) | set(before)):
            baseline, count = before.get(source, 0), current.get(source, 0)
            change = (count - baseline) / baseline * 100 if baseline else 0.0
            found.append(
                Condition(
                    f"volume:{source}",
                    baseline >= c.volume_min_events and abs(change) > c.volume_change_percent,
                    f"{source}: inbound volume {change:+.0f}%",
                    f"{count} events from {source} in the last {c.volume_window_minutes:g} minutes, against {baseline} "
                    f"in the same window a {c.volume_compare_to} before (alert beyond ±{c.volume_change_percent:g}%).",
                )
            )
        dead = await self.store.dead_letters_since(now - c.dead_letter_window_minutes * 60)
        for destination in sorted(set(dead) | set(self.guards)):
            count = dead.get(destination, 0)
            found.append(
                Condition(
                    f"dead_letters:{destination}",
                    count > c.dead_letters_above,
                    f"{destination}: {count} new dead letters",
                    f"{count} deliveries to {destination} became dead letters in the last "
                    f"{c.dead_letter_window_minutes:g} minutes; see /ops and replay them once the cause is fixed.",
                )
            )
        pending = await self.store.undispatched()
        waited = 0.0 if pending.oldest_received_at is None else now - pending.oldest_received_at
        found.append(
            Condition(
                "undispatched",
                waited > c.undispatched_older_than_minutes * 60,
                f"inbox: {pending.events} events waiting to be routed",
                f"The oldest of {pending.events} stored events has waited {waited / 60:.0f} minutes to be routed "
                f"(alert after {c.undispatched_older_than_minutes:g}); check that a worker runs, and its "
                "inbox.dispatch_failed log lines.",
            )
        )
        parked = self.parked()
        for destination in sorted(self.guards):
            found.append(
                Condition(
                    f"parked:{destination}",
                    destination in parked,
                    f"{destination}: parked",
                    parked.get(destination, f"{destination} is not parked."),
                )
            )
            breaker = self.guards[destination].breaker
            opened = breaker.opened_at if breaker.state is not BreakerState.CLOSED else None
            found.append(
                Condition(
                    f"breaker:{destination}",
                    opened is not None and now - opened >= c.breaker_open_minutes * 60,
                    f"{destination}: circuit breaker open",
                    f"Most requests to {destination} have been failing; fsbridge holds its deliveries and probes "
                    f"every {breaker.open_seconds:g} s.",
                )
            )
        return found

    async def check_once(self) -> list[str]:
        """Compare conditions with their stored state; alert on each change. Returns the messages sent."""
        now = self.clock.now()
        states = await self.store.alert_states()
        sent: list[str] = []
        deliveries: list[NewDelivery] = []
        for condition in await self.conditions(now):
            was_active = states.get(condition.key, (False, 0.0, ""))[0]
            if condition.active == was_active:
                continue
            await self.store.set_alert(condition.key, condition.active, now, condition.detail)
            title = condition.title if condition.active else f"Recovered: {condition.title}"
            deliveries.append(self._message(condition, title, now))
            sent.append(title)
            log.warning("health.alert" if condition.active else "health.recovered", condition=condition.key)
        if deliveries:
            await self.store.enqueue(deliveries, now)
        return sent

    def _message(self, condition: Condition, title: str, now: float) -> NewDelivery:
        emoji = ":rotating_light:" if condition.active else ":white_check_mark:"
        # Details quote destinations' answers and errors: escaped, so they cannot mention or link.
        title, detail, key = escape_mrkdwn(title), escape_mrkdwn(condition.detail), escape_mrkdwn(condition.key)
        body: dict[str, Any] = {
            "text": f"{emoji} fsbridge: {title}. {detail}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": f"fsbridge: {title}"[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": detail}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"condition `{key}`"}]},
            ],
        }
        key = hashlib.sha256(f"{condition.key}\n{condition.active}\n{now}".encode()).hexdigest()[:40]
        # Rendered through the Slack target's request model, as a flow's message would be.
        rendered = TARGETS["slack.message"].render(body, f"fsb-alert-{key}")
        return NewDelivery(
            FLOW, "slack", f"fsb-alert-{key}", rendered, "dry_run" if self.slack_dry_run else "pending",
            action="message",
        )  # fmt: skip
