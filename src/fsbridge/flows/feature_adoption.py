"""`flows.feature_adoption` (Part 2): each feature's uses are counted per cohort and window (in the
dispatch transaction, `store/feature_counts.py`); the `feature_adoption` job decides each closed
window. A window whose count is below `drop_below` times the mean of the `baseline_windows`
before it (a mean of at least `min_baseline`) opens a drop: one alert to each of `notify` (a
Slack Block Kit message, a Jira issue). A later window back at or above that level closes it with
one recovery message (Slack). Each alert has a stable messageId from the feature, the cohort and
the window, so it is sent once."""

from __future__ import annotations

import hashlib
from typing import Any

from fsbridge.config import FeatureAdoptionConfig
from fsbridge.flows.aggregations.outbox import iso
from fsbridge.flows.targets import TARGETS
from fsbridge.store import NewDelivery
from fsbridge.store.feature_counts import ALL, AdoptionState, CountingRules
from fsbridge.store.records import DeliveryStatus
from fsbridge.targets.slack import escape_mrkdwn

NAME = "feature_adoption"
HEADER_CHARS, SECTION_CHARS = 150, 3000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _id(*about: Any) -> str:
    return "fsb-" + hashlib.sha256("\n".join([NAME, *map(str, about)]).encode()).hexdigest()[:40]


class FeatureAdoption:
    def __init__(self, config: FeatureAdoptionConfig, *, dry_run: dict[str, bool]) -> None:
        self.config = config
        self.dry_run = dry_run
        cohorts = config.cohorts
        self.rules = CountingRules(config.window, tuple(cohorts.audiences), dict(cohorts.traits), cohorts.counts_all)

    def since(self, now: float) -> float:
        """The oldest window a decision still reads (the baseline of the window just closed)."""
        current = (now // self.config.window) * self.config.window
        return current - (self.config.baseline_windows + 2) * self.config.window

    def decide(
        self, counts: dict[tuple[str, str], dict[float, int]], states: dict[tuple[str, str], AdoptionState], now: float
    ) -> tuple[dict[tuple[str, str], AdoptionState], list[NewDelivery]]:
        window, config = self.config.window, self.config
        current = (now // window) * window  # the window still open
        changed: dict[tuple[str, str], AdoptionState] = {}
        out: list[NewDelivery] = []
        pairs = set(counts) | set(states)
        if not self.rules.counts_all:  # counts of `all` kept from a configuration without cohorts
            pairs = {pair for pair in pairs if pair[1] != ALL}
        for pair in sorted(pairs):
            series = counts.get(pair, {})
            state = states.get(pair)
            if state is None:  # first seen: decide from the first window with a full baseline
                first = min(series, default=current)
                state = AdoptionState(first + config.baseline_windows * window)
            start = max(state.evaluated_until, current - (config.baseline_windows + 1) * window)
            while start < current:
                baseline = [series.get(start - (k + 1) * window, 0) for k in range(config.baseline_windows)]
                mean = sum(baseline) / len(baseline)
                level = config.drop_below * mean
                used = series.get(start, 0)
                if not state.dropped and mean >= config.min_baseline and used < level:
                    state.dropped, state.drop_window = True, start
                    out += self._drop(pair, start, used, mean)
                elif state.dropped and used >= level:
                    out += self._recovery(pair, start, used, mean, state.drop_window)
                    state.dropped, state.drop_window = False, None
                start += window
            state.evaluated_until = max(state.evaluated_until, current)
            changed[pair] = state
        return changed, out

    def _status(self, destination: str) -> DeliveryStatus:
        return "dry_run" if self.dry_run.get(destination, True) else "pending"

    def _words(self, pair: tuple[str, str], start: float, used: int, mean: float) -> str:
        feature, cohort = pair
        share = used / mean if mean else 0.0
        baseline = f"{share:.0%} of the mean of {mean:.1f} over the {self.config.baseline_windows} windows before"
        return f"{feature} was used {used} times in cohort {cohort} in the window from {iso(start)} ({baseline})"

    def _slack(self, mid: str, title: str, text: str) -> NewDelivery:
        title, text = escape_mrkdwn(title), escape_mrkdwn(text)  # cohorts name trait values
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(title, HEADER_CHARS)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_CHARS)}},
        ]
        body = TARGETS["slack.message"].render({"text": _cut(f"{title}: {text}", 3000), "blocks": blocks}, mid)
        return NewDelivery(NAME, "slack", mid, body, self._status("slack"), action="message")

    def _drop(self, pair: tuple[str, str], start: float, used: int, mean: float) -> list[NewDelivery]:
        feature, cohort = pair
        title = f"Feature adoption dropped: {feature} ({cohort})"
        text = self._words(pair, start, used, mean)
        out = []
        if "slack" in self.config.notify:
            out.append(self._slack(_id(feature, cohort, start, "drop", "slack"), title, text))
        if "jira" in self.config.notify:
            mid = _id(feature, cohort, start, "drop", "jira")
            body = TARGETS["jira.issue"].render(
                {"summary": title, "description": f"{text}.\n\nSent by fsbridge (flows.feature_adoption).",
                 "labels": ["feature-adoption"]}, mid)  # fmt: skip
            out.append(NewDelivery(NAME, "jira", mid, body, self._status("jira"), action="issue"))
        return out

    def _recovery(
        self, pair: tuple[str, str], start: float, used: int, mean: float, dropped_at: float | None
    ) -> list[NewDelivery]:
        feature, cohort = pair
        if "slack" not in self.config.notify:
            return []
        title = f"Feature adoption recovered: {feature} ({cohort})"
        mid = _id(feature, cohort, dropped_at, "recovered", start)
        return [self._slack(mid, title, self._words(pair, start, used, mean))]
