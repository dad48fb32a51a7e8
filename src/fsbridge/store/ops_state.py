"""The store's operator-state role: what operators' tools write for themselves, the health
monitor's alert states (so an alert fires and clears once across replicas and restarts) and
dashboard sign-in sessions (kept by hash only). The SQL of this role lives here, as functions on a
connection that both engines run as they are; callers depend on `AlertStore` or `OpsSessionStore`."""

from __future__ import annotations

from typing import Protocol

from fsbridge.store.engine import Connection


class AlertStore(Protocol):
    async def alert_states(self) -> dict[str, tuple[bool, float, str]]:
        """Each alert key's (active, since, detail)."""
        ...

    async def set_alert(self, key: str, active: bool, now: float, detail: str) -> None: ...


class OpsSessionStore(Protocol):
    async def create_ops_session(self, id_hash: str, csrf: str, now: float, expires_at: float) -> None:
        """Keep a dashboard session by the hash of its id, with its CSRF token (expired ones go)."""
        ...

    async def ops_session(self, id_hash: str, now: float) -> str | None:
        """The CSRF token of a live session, or None."""
        ...

    async def delete_ops_session(self, id_hash: str) -> None: ...


def alert_states(conn: Connection) -> dict[str, tuple[bool, float, str]]:
    return {
        key: (bool(active), since, detail)
        for key, active, since, detail in conn.execute("SELECT key, active, since, detail FROM alerts")
    }


def set_alert(conn: Connection, key: str, active: bool, now: float, detail: str) -> None:
    conn.execute(
        "INSERT INTO alerts (key, active, since, detail) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET active = excluded.active, since = excluded.since,"
        " detail = excluded.detail",
        (key, int(active), now, detail),
    )


def create_ops_session(conn: Connection, id_hash: str, csrf: str, now: float, expires_at: float) -> None:
    conn.execute("DELETE FROM ops_sessions WHERE expires_at < ?", (now,))
    conn.execute(
        "INSERT INTO ops_sessions (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (id_hash, csrf, now, expires_at),
    )


def ops_session(conn: Connection, id_hash: str, now: float) -> str | None:
    row = conn.execute("SELECT csrf FROM ops_sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, now)).fetchone()
    return None if row is None else str(row[0])


def delete_ops_session(conn: Connection, id_hash: str) -> None:
    conn.execute("DELETE FROM ops_sessions WHERE id_hash = ?", (id_hash,))
