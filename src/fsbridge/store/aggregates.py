"""The store's aggregation role: keyed counts per (flow, key, window), counted and decided inside the
dispatch transaction, so a threshold is crossed exactly once across replicas, redeliveries and
crashes (a transaction that does not commit counts nothing). Rows expire, and retention prunes them."""

from __future__ import annotations

from dataclasses import dataclass

from fsbridge.store.engine import Connection


@dataclass(frozen=True, slots=True)
class AggregateStep:
    """One event counted towards `threshold` for `key` in the window starting at `window_start`;
    its message is sent only by the event that makes the count reach the threshold."""

    key: str
    window_start: float
    threshold: int
    expires_at: float


def count(conn: Connection, flow: str, step: AggregateStep, at: float) -> int:
    """Add the event to its key's count and answer the new count."""
    row = conn.execute(
        "INSERT INTO aggregate_state (flow, key, window_start, count, first_at, last_at, expires_at)"
        " VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (flow, key, window_start) DO UPDATE"
        " SET count = aggregate_state.count + 1, last_at = excluded.last_at, expires_at = excluded.expires_at"
        " RETURNING count",
        (flow, step.key, step.window_start, at, at, step.expires_at),
    ).fetchone()
    return int(row[0])


def prune_expired(conn: Connection, now: float, limit: int) -> int:
    return int(
        conn.execute(
            "DELETE FROM aggregate_state WHERE (flow, key, window_start) IN"
            " (SELECT flow, key, window_start FROM aggregate_state WHERE expires_at < ? LIMIT ?)",
            (now, limit),
        ).rowcount
    )
