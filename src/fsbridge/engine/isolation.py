"""Per-destination isolation, so one failing API never holds up the others: a token-bucket rate
limit that halves on 429 and recovers gradually (AIMD), a circuit breaker, and pause. Each
destination has its own; a paused or open destination keeps queueing, and nothing else waits for it.

Breaker: closed until, over the last `window_seconds`, at least `min_requests` attempts were made
and at least `failure_ratio` of them failed (network errors, timeouts, 408, 429, 5xx); then open
for `open_seconds`; then half-open, where one probe request at a time decides: success closes it,
failure opens it again.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass, field


class TokenBucket:
    """`rate` requests a second, bursts up to `burst`. A 429 halves the rate; it then recovers by 10 %
    of the configured rate every `recovery_seconds`."""

    def __init__(
        self, rate: float, burst: float, now: float, *, floor: float = 0.1, recovery_seconds: float = 10
    ) -> None:
        self.configured = rate
        self.rate = rate
        self.burst = burst
        self.floor = floor
        self.recovery_seconds = recovery_seconds
        self._tokens = burst
        self._stamp = now
        self._last_recovery = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        while self.rate < self.configured and now - self._last_recovery >= self.recovery_seconds:
            self.rate = min(self.configured, self.rate + self.configured * 0.1)
            self._last_recovery += self.recovery_seconds
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)

    def available(self, now: float) -> int:
        """Whole requests that may start now."""
        self._refill(now)
        return int(self._tokens)

    def take(self, count: int, now: float) -> None:
        self._refill(now)
        self._tokens -= count

    def wait(self, now: float) -> float:
        """Seconds until one more request may start."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def throttled(self, now: float) -> None:
        """The destination answered 429: halve the rate (never below the floor)."""
        self._refill(now)
        self.rate = max(self.floor, self.rate / 2)
        self._last_recovery = now


class BreakerState(enum.Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    window_seconds: float = 300.0
    min_requests: int = 10
    failure_ratio: float = 0.7
    open_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.opened_at: float | None = None
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._probing = False

    def allows(self, now: float) -> bool:
        """Whether a request may start now (in half-open: one probe at a time)."""
        if self.state is BreakerState.OPEN and self.opened_at is not None and now - self.opened_at >= self.open_seconds:
            self.state = BreakerState.HALF_OPEN
            self._probing = False
        if self.state is BreakerState.OPEN:
            return False
        if self.state is BreakerState.HALF_OPEN:
            if self._probing:
                return False
            self._probing = True
        return True

    def cancel_probe(self) -> None:
        """A half-open probe that found nothing to send frees its slot."""
        self._probing = False

    def record(self, success: bool, now: float) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False
            if success:
                self.state, self.opened_at = BreakerState.CLOSED, None
                self._outcomes.clear()
            else:
                self.state, self.opened_at = BreakerState.OPEN, now
            return
        self._outcomes.append((now, success))
        while self._outcomes and now - self._outcomes[0][0] > self.window_seconds:
            self._outcomes.popleft()
        failures = sum(1 for _, ok in self._outcomes if not ok)
        if len(self._outcomes) >= self.min_requests and failures / len(self._outcomes) >= self.failure_ratio:
            self.state, self.opened_at = BreakerState.OPEN, now

    def reopens_in(self, now: float) -> float:
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.open_seconds - now)


@dataclass
class Guard:
    """One destination's rate limit, circuit breaker and concurrency: its deliveries and the
    look-ups made in its API (enrichment) pass through the same one."""

    bucket: TokenBucket
    breaker: CircuitBreaker
    concurrency: int = 4
    gate: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.gate = asyncio.Semaphore(self.concurrency)

    def try_turn(self, now: float) -> bool:
        """Take a request's token now if the breaker and the rate limit allow one."""
        if not self.breaker.allows(now) or self.bucket.available(now) < 1:
            return False
        self.bucket.take(1, now)
        return True

    def wait_hint(self, now: float) -> float:
        """Seconds until a request may be allowed."""
        if self.breaker.state is BreakerState.OPEN:
            return max(self.breaker.reopens_in(now), 0.01)
        return max(self.bucket.wait(now), 0.01)

    def outcome(self, ok: bool, now: float, status_code: int | None = None) -> None:
        """What a request made under this guard came to (a 429 also slows the rate limit)."""
        self.breaker.record(ok, now)
        if status_code == 429:
            self.bucket.throttled(now)
