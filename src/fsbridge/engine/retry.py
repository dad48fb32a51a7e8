"""Redelivery policy and response classification: what an HTTP outcome means for a delivery.

Retried: network errors, timeouts, 408, 429 and 5xx except 501 and 505. Parked: 401 and 403 (the
credentials are wrong, so every delivery to that destination would fail the same way). Dead: any
other non-2xx. The wait before attempt n+1 is `base * 2**(n-1)`, capped at `max_seconds`, with
±20 % jitter, never shorter than the server's Retry-After; retries stop at the horizon, counted
from when the delivery was created or last replayed.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    PARK = "park"


def classify(status_code: int | None) -> Verdict:
    """The verdict for an HTTP status; None means no response (network error or timeout)."""
    if status_code is None:
        return Verdict.RETRY
    if 200 <= status_code < 300:
        return Verdict.DELIVERED
    if status_code in (401, 403):
        return Verdict.PARK
    if status_code in (408, 429) or (status_code >= 500 and status_code not in (501, 505)):
        return Verdict.RETRY
    return Verdict.DEAD


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 1.0
    max_seconds: float = 3600.0
    horizon_seconds: float = 86400.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt (1-based), jitter included."""
        exponent = min(max(attempts - 1, 0), 60)
        delay = min(self.max_seconds, self.base_seconds * float(2**exponent))
        return delay * (1 + self.rng.uniform(-self.jitter, self.jitter))

    def next_attempt_at(
        self, *, attempts: int, retry_started_at: float, now: float, retry_after: float | None = None
    ) -> float | None:
        """When to try again after `attempts` failures, or None when the horizon is reached."""
        deadline = retry_started_at + self.horizon_seconds
        if now >= deadline:
            return None
        wait = self.backoff(attempts)
        if retry_after is not None:
            # The server knows when it can take more; a long Retry-After is honoured up to max_seconds.
            wait = max(wait, min(retry_after, max(self.max_seconds, wait)))
        return min(now + wait, deadline)
