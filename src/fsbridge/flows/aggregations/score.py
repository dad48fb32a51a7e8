"""The behavioural health score (Part 2): per user,
`score = clamp(0, 100, round(100 - sum(weight(signal) * 0.5 ** (age(signal) / half_life))))`
over the user's signals (an at-risk session counts as one `at_risk_session` signal at the time it
became at risk), and its band. Every contribution is kept, so the score can be explained."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NEGLIGIBLE = 0.001  # a contribution below this is dropped from the user's state


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
    contributions: list[Contribution]  # newest first


def contributions(
    signals: Sequence[Sequence[Any]], weights: Mapping[str, float], half_life: float, now: float
) -> list[Contribution]:
    found = []
    for kind, at in reversed(signals):
        weight = float(weights.get(kind, 0.0))
        if weight <= 0:
            continue
        value = weight * 0.5 ** (max(0.0, now - at) / half_life)
        found.append(Contribution(kind, at, weight, value))
    return found


def band_of(value: float, good: float, fair: float) -> str:
    return "good" if value >= good else "fair" if value >= fair else "poor"


def score_of(
    signals: Sequence[Sequence[Any]],
    weights: Mapping[str, float],
    half_life: float,
    now: float,
    good: float,
    fair: float,
) -> Score:
    found = contributions(signals, weights, half_life, now)
    value = max(0, min(100, round(100 - sum(c.value for c in found))))
    return Score(value, band_of(value, good, fair), found)


def still_counting(
    signals: list[list[Any]], weights: Mapping[str, float], half_life: float, now: float
) -> list[list[Any]]:
    """The signals whose contribution is not yet negligible (the rest are forgotten)."""
    return [
        s for s in signals if float(weights.get(s[0], 0.0)) * 0.5 ** (max(0.0, now - s[1]) / half_life) >= NEGLIGIBLE
    ]
