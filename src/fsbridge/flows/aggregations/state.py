"""A user's state for the per-user aggregations, kept as one JSON document per user in the store
(`store/user_state.py`) and decided in the dispatch transaction: the sessions being counted for
at-risk, the at-risk period, the frustration counts of the current window, the signals the health
score decays, what each trait flow last sent or holds pending, and the NPS follow-up state."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

import orjson

MAX_SESSIONS = 20  # the sessions whose counts are kept per user (the most recent)
MAX_SIGNALS = 50  # the score's most recent signals kept per user, to explain it (all of them count)
# A user's document is rewritten on each of their signals by the writer that intake shares: its size
# is bounded where its parts enter (ids and URLs are capped by the signal stage) and once more here.
MAX_STATE_BYTES = 16 * 1024


class Sync(TypedDict):
    """What a coalesced trait flow last sent (values and when), and the identify it holds pending.
    A dict, as the document holds it: reading a state builds no record objects (rebuilding two cost
    about three quarters of what parsing the whole document did)."""

    sent: dict[str, Any] | None
    sent_at: float | None
    pending_id: str | None  # the queued identify, rendered when it is due
    pending_due: float | None
    pending: dict[str, Any] | None  # the values it will carry (None: it will send nothing)


def new_sync() -> Sync:
    return {"sent": None, "sent_at": None, "pending_id": None, "pending_due": None, "pending": None}


@dataclass
class UserState:
    user_key: str
    sessions: dict[str, list[Any]] = field(default_factory=dict)  # id: [count, first_at, crossed, last_at]
    at_risk: bool = False
    at_risk_since: float | None = None
    last_at_risk_at: float | None = None
    window_start: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    last_frustration_at: float | None = None
    signals: list[list[Any]] = field(default_factory=list)  # [kind, at], oldest first: the latest ones
    # The score's decayed sum of every signal's weight, as of `decay_at` (exact, however many signals).
    decay_sum: float = 0.0
    decay_at: float = 0.0
    sync: dict[str, Sync] = field(default_factory=dict)
    nps_suppressed: bool = False
    nps_outreach: bool = False
    nps_cycle: int = 0
    score: int | None = None
    band: str | None = None
    last_seen: float = 0.0

    @property
    def user_id(self) -> str | None:
        return self.user_key[2:] if self.user_key.startswith("u:") else None

    @property
    def anonymous_id(self) -> str | None:
        return self.user_key[2:] if self.user_key.startswith("a:") else None

    def sync_of(self, flow: str) -> Sync:
        record = self.sync.get(flow)
        if record is None:
            record = self.sync[flow] = new_sync()
        return record

    def to_json(self) -> str:
        """The stored document, at most MAX_STATE_BYTES: should it grow past that, the oldest
        sessions and explained signals go first (the decayed sum still counts every signal)."""
        document = orjson.dumps(self)
        while len(document) > MAX_STATE_BYTES and (len(self.sessions) > 1 or len(self.signals) > 1):
            self.signals = self.signals[len(self.signals) // 2 :]
            if len(self.sessions) > 1:
                newest = sorted(self.sessions.items(), key=lambda item: item[1][3], reverse=True)
                self.sessions = dict(newest[: len(newest) // 2])
            document = orjson.dumps(self)
        return document.decode()

    @classmethod
    def from_json(cls, user_key: str, text: str | None) -> UserState:
        if not text:
            return cls(user_key)
        data = orjson.loads(text)
        if data.keys() != FIELDS:
            return cls._from_document(user_key, data)
        data["user_key"] = user_key
        return cls(**data)

    @classmethod
    def _from_document(cls, user_key: str, data: dict[str, Any]) -> UserState:
        """A document of another shape: one written before `to_json` wrote the fields as they are
        (with `decay` and `nps` as lists, and each record's `sent_id`), or missing fields."""
        nps = [data.get("nps_suppressed", False), data.get("nps_outreach", False), data.get("nps_cycle", 0)]
        suppressed, outreach, cycle = data.get("nps", nps)
        decay_sum, decay_at = data.get("decay", [data.get("decay_sum", 0.0), data.get("decay_at", 0.0)])
        sync: dict[str, Sync] = {
            name: {**new_sync(), **{k: v for k, v in value.items() if k in SYNC_FIELDS}}
            for name, value in data.get("sync", {}).items()
        }
        return cls(
            user_key=user_key,
            sessions=data.get("sessions", {}),
            at_risk=data.get("at_risk", False),
            at_risk_since=data.get("at_risk_since"),
            last_at_risk_at=data.get("last_at_risk_at"),
            window_start=data.get("window_start"),
            counts=data.get("counts", {}),
            last_frustration_at=data.get("last_frustration_at"),
            signals=data.get("signals", [])[-MAX_SIGNALS:],
            decay_sum=decay_sum,
            decay_at=decay_at,
            sync=sync,
            nps_suppressed=suppressed,
            nps_outreach=outreach,
            nps_cycle=cycle,
            score=data.get("score"),
            band=data.get("band"),
            last_seen=data.get("last_seen", 0.0),
        )

    def keep_recent_sessions(self) -> None:
        if len(self.sessions) > MAX_SESSIONS:
            newest = sorted(self.sessions.items(), key=lambda item: item[1][3], reverse=True)[:MAX_SESSIONS]
            self.sessions = dict(newest)


FIELDS = {f.name for f in fields(UserState)}
SYNC_FIELDS = set(Sync.__annotations__)
