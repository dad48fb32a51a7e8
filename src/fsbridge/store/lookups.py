"""The store's enrichment role: the look-up cache (answers from Fullstory kept for `cache_for`, found
or not), the stored events an enrichment renders from, and recording what an enrichment produced
(the rendered message, the answers, the identity links it learned) in one write. The SQL of this
role lives here, as functions on a connection that both engines run as they are; the enricher
depends on the narrow `LookupStore` protocol only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fsbridge.store.engine import Connection, in_chunks

if TYPE_CHECKING:
    from fsbridge.store.records import IdentityClaim, IdentityConflict

PRUNE_CHUNK = 5000


def subject_hash(value: str) -> str:
    """How a cache entry names the user it is about: never the identifier itself."""
    return hashlib.sha256(f"subject\n{value}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A look-up's answer as JSON text (`{"found": true, "value": ...}` or a reason), until `expires_at`."""

    key: str
    subject: str
    answer: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RenderedDelivery:
    """A delivery that waited for look-ups, now rendered: its message replaces the plan it held."""

    delivery_id: str
    body: bytes


class LookupStore(Protocol):
    async def cached_answers(self, keys: list[str], now: float) -> dict[str, str]:
        """The answers cached under these keys that have not expired."""
        ...

    async def cache_answers(self, answers: list[CachedAnswer]) -> None: ...

    async def record_rendered(
        self, rendered: list[RenderedDelivery], claims: list[IdentityClaim], now: float
    ) -> list[IdentityConflict]:
        """Replace the plans of enriched deliveries with their messages (they no longer wait), and
        keep the identity links the look-ups learned; returns the claims that met an earlier one."""
        ...


def cached_answers(conn: Connection, keys: list[str], now: float) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk, marks in in_chunks(keys):
        rows = conn.execute(
            f"SELECT key, answer FROM lookup_cache WHERE key IN ({marks}) AND expires_at > ?",  # noqa: S608
            (*chunk, now),
        )
        found.update(dict(rows))
    return found


def cache_answers(conn: Connection, answers: list[CachedAnswer]) -> None:
    conn.executemany(
        "INSERT INTO lookup_cache (key, subject, answer, expires_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, expires_at = excluded.expires_at",
        [(a.key, a.subject, a.answer, a.expires_at) for a in answers],
    )


def record_rendered(conn: Connection, rendered: list[RenderedDelivery]) -> None:
    conn.executemany(
        "UPDATE deliveries SET body = ?, awaiting = NULL WHERE id = ?",
        [(r.body, r.delivery_id) for r in rendered],
    )


def forget(conn: Connection, identifiers: list[str]) -> None:
    """Drop every cached answer about a deleted user (by uid, userId or email)."""
    conn.executemany("DELETE FROM lookup_cache WHERE subject = ?", [(subject_hash(i),) for i in identifiers])


def prune_expired(conn: Connection, now: float) -> int:
    return conn.execute(
        "DELETE FROM lookup_cache WHERE key IN (SELECT key FROM lookup_cache WHERE expires_at < ? LIMIT ?)",
        (now, PRUNE_CHUNK),
    ).rowcount
