"""The per-user state document: what to_json writes reads back the same, documents of the earlier
shape still read, and the score keeps only its most recent signals to explain."""

from __future__ import annotations

import orjson
import pytest

from fsbridge.config import FsbridgeConfig
from fsbridge.flows.aggregations.health_score import HealthScore
from fsbridge.flows.aggregations.outbox import Outbox
from fsbridge.flows.aggregations.state import FIELDS, MAX_SIGNALS, MAX_STATE_BYTES, Sync, UserState
from fsbridge.store import Signal

NOW = 1_795_000_000.0


def a_state() -> UserState:
    return UserState(
        "u:ada",
        sessions={"1:2": [3, NOW, 1, NOW + 5]},
        at_risk=True,
        at_risk_since=NOW,
        last_at_risk_at=NOW + 5,
        window_start=NOW - 600,
        counts={"rage_click": 3},
        last_frustration_at=NOW + 5,
        signals=[["rage_click", NOW], ["at_risk_session", NOW + 5]],
        decay_sum=25.0,
        decay_at=NOW + 5,
        sync={
            "health_score": Sync(
                sent={"fullstory_health_score": 80},
                sent_at=NOW,
                pending_id="fsb-1",
                pending_due=NOW + 900,
                pending=None,
            )
        },
        nps_suppressed=True,
        nps_outreach=False,
        nps_cycle=2,
        score=75,
        band="good",
        last_seen=NOW + 5,
    )


def test_a_state_reads_back_as_it_was_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """to_json then from_json gives the same state, Sync records included, without the path for other shapes."""
    state = a_state()
    assert orjson.loads(state.to_json()).keys() == FIELDS
    monkeypatch.setattr(UserState, "_from_document", None)  # the fast path must not need it
    assert state == UserState.from_json("u:ada", state.to_json())


def test_a_document_of_the_earlier_shape_reads_into_the_same_state() -> None:
    """A document with decay and nps as lists and each record's sent_id (as written before) reads the same."""
    state = a_state()
    earlier = {
        "sessions": state.sessions, "at_risk": True, "at_risk_since": NOW, "last_at_risk_at": NOW + 5,
        "window_start": NOW - 600, "counts": state.counts, "last_frustration_at": NOW + 5,
        "signals": state.signals, "decay": [25.0, NOW + 5],
        "sync": {"health_score": {"sent": {"fullstory_health_score": 80}, "sent_at": NOW, "sent_id": "fsb-0",
                                  "pending_id": "fsb-1", "pending_due": NOW + 900, "pending": None}},
        "nps": [True, False, 2], "score": 75, "band": "good", "last_seen": NOW + 5,
    }  # fmt: skip
    assert state == UserState.from_json("u:ada", orjson.dumps(earlier).decode())


def test_a_document_missing_fields_reads_with_their_defaults() -> None:
    """Fields a document lacks take their defaults; the user key is the one asked for."""
    state = UserState.from_json("a:anon-1", '{"score": 40, "band": "fair"}')
    assert (40, "fair", {}, [], 0.0) == (state.score, state.band, state.sync, state.signals, state.decay_sum)
    assert "anon-1" == state.anonymous_id


def test_the_score_keeps_its_most_recent_signals_to_explain() -> None:
    """After more signals than MAX_SIGNALS, the state holds the latest MAX_SIGNALS; the decayed sum counts them all."""
    config = FsbridgeConfig().flows.health_score
    health, state = HealthScore(config, 900), UserState("u:ada")
    for n in range(MAX_SIGNALS + 7):
        signal = Signal("u:ada", "dead_click", NOW + n, None, None, f"e{n}")
        health.on_signal(state, signal, Outbox(segment_dry_run=False), at_risk=False)
    assert MAX_SIGNALS == len(state.signals)
    assert NOW + 7 == state.signals[0][1]
    assert (MAX_SIGNALS + 7) * 2 > state.decay_sum > MAX_SIGNALS * 2


def test_a_state_stays_under_its_byte_bound_whatever_it_holds() -> None:
    """A state grown past MAX_STATE_BYTES (huge session keys written by an older version) is cut to fit."""
    state = a_state()
    state.sessions = {f"{n}" + "s" * 4096: [1, NOW + n, 0, NOW + n] for n in range(20)}
    document = state.to_json()
    assert len(document) <= MAX_STATE_BYTES
    kept = UserState.from_json("u:ada", document)
    assert kept.sessions
    assert all(at >= NOW + 20 - len(kept.sessions) for _, _, _, at in kept.sessions.values())  # the newest stay
