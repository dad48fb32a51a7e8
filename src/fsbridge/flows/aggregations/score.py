"""The behavioural health score (Part 2): per user,
`score = clamp(0, 100, round(100 - sum(weight(signal) * 0.5 ** (age(signal) / half_life))))`
over the user's signals (an at-risk session counts as one `at_risk_session` signal at the time it
became at risk), and its band.

The sum is kept exactly, in constant space, as one decayed total and the time it is valid at:
adding a signal decays the total to the signal's time and adds its weight. The most recent
signals are kept too, each with its own contribution, to explain the score; what older signals
still contribute is shown as one line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EARLIER = "earlier signals"


@dataclass(frozen=True, slots=True)
class Contribution:
    signal: str
    at: float
    weight: float
    value: float  # weight * 0.5 ** (age / half_life)


@dataclass(frozen=True, slots=True)
class Score:
    value: int
    band: str
    total: float  # the decayed sum the score is 100 minus
    contributions: list[Contribution]  # newest first; the last may be EARLIER, the rest together


def decayed(total: float, since: float, now: float, half_life: float) -> float:
    if not total:
        return 0.0
    return total * 0.5 ** ((now - since) / half_life) if now > since else total


def add(total: float, since: float, weight: float, at: float, half_life: float) -> tuple[float, float]:
    """The decayed total with one more signal of `weight` at `at`, and the time it is valid at."""
    if at >= since:
        return decayed(total, since, at, half_life) + weight, at
    return total + weight * 0.5 ** ((since - at) / half_life), since


def band_of(value: float, good: float, fair: float) -> str:
    return "good" if value >= good else "fair" if value >= fair else "poor"


def score_of(
    total: float, since: float, half_life: float, now: float, good: float, fair: float
) -> tuple[int, str, float]:
    current = decayed(total, since, now, half_life)
    value = round(100 - current)
    value = 0 if value < 0 else 100 if value > 100 else value
    return value, band_of(value, good, fair), current


def explain(
    signals: Sequence[Sequence[Any]],
    weights: Mapping[str, float],
    total: float,
    since: float,
    half_life: float,
    now: float,
    good: float,
    fair: float,
) -> Score:
    value, band, current = score_of(total, since, half_life, now, good, fair)
    found = []
    for kind, at in reversed(signals):
        weight = float(weights.get(kind, 0.0))
        if weight > 0:
            found.append(Contribution(kind, at, weight, weight * 0.5 ** (max(0.0, now - at) / half_life)))
    rest = current - sum(c.value for c in found)
    if rest > 0.005:
        found.append(Contribution(EARLIER, min((c.at for c in found), default=now), 0.0, rest))
    return Score(value, band, current, found)
