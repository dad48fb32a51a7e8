"""Redelivery policy: status classification, exponential backoff with jitter, Retry-After, horizon."""

from __future__ import annotations

import random

import pytest

from fsbridge.engine.retry import RetryPolicy, Verdict, classify, parse_retry_after

NOW = 1_795_000_000.0


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (501, Verdict.DEAD),
        (505, Verdict.DEAD),
        (400, Verdict.DEAD),
        (404, Verdict.DEAD),
        (413, Verdict.DEAD),
        (422, Verdict.DEAD),
        (302, Verdict.DEAD),
        (401, Verdict.PARK),
        (403, Verdict.PARK),
    ],
)
def test_classification(status: int | None, verdict: Verdict) -> None:
    """Network errors, 408, 429 and 5xx but 501/505 retry; 401/403 park; other non-2xx are dead."""
    assert verdict == classify(status)


def test_backoff_doubles_up_to_the_cap() -> None:
    """Without jitter the waits are base, 2·base, 4·base... capped at max_seconds."""
    policy = RetryPolicy(base_seconds=1, max_seconds=10, jitter=0)
    assert [1, 2, 4, 8, 10, 10] == [policy.backoff(n) for n in range(1, 7)]


def test_jitter_stays_within_twenty_percent() -> None:
    """Jitter spreads each wait within ±20 % and is not constant."""
    policy = RetryPolicy(base_seconds=10, max_seconds=100, rng=random.Random(1))
    waits = [policy.backoff(1) for _ in range(200)]
    assert all(8 <= w <= 12 for w in waits)
    assert len(set(waits)) > 100


def test_retry_after_is_honoured_when_longer_than_backoff() -> None:
    """A Retry-After longer than the backoff sets the next attempt."""
    policy = RetryPolicy(base_seconds=1, max_seconds=3600, jitter=0)
    assert NOW + 30 == policy.next_attempt_at(attempts=1, retry_started_at=NOW, now=NOW, retry_after=30)
    assert NOW + 4 == policy.next_attempt_at(attempts=3, retry_started_at=NOW, now=NOW, retry_after=0.5)


def test_horizon_ends_retries() -> None:
    """At or past the horizon there is no next attempt; before it, the next attempt never passes it."""
    policy = RetryPolicy(base_seconds=100, max_seconds=3600, horizon_seconds=1000, jitter=0)
    assert policy.next_attempt_at(attempts=5, retry_started_at=NOW, now=NOW + 1000) is None
    assert NOW + 1000 == policy.next_attempt_at(attempts=5, retry_started_at=NOW, now=NOW + 990)


def test_default_policy_retries_for_a_day() -> None:
    """With the contract's defaults a delivery that always fails is retried for 24 hours."""
    policy = RetryPolicy(jitter=0)
    now, attempts = NOW, 0
    while (next_at := policy.next_attempt_at(attempts=attempts + 1, retry_started_at=NOW, now=now)) is not None:
        now, attempts = next_at, attempts + 1
    assert NOW + 86400 == now
    assert 20 < attempts < 40


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("30", 30.0), (" 2.5 ", 2.5), ("-3", 0.0), ("Wed, 18 Nov 2026 11:07:40 GMT", 60.0), ("soon", None), (None, None)],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP date; anything else is ignored."""
    assert seconds == parse_retry_after(header, now=1_795_000_000.0)
