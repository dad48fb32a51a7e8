"""The store's tombstone role (Part 3, "Deletion is final"): after a deletion, fsbridge keeps only a
keyed hash of the userId (HMAC-SHA256 with a random key this store generates once and keeps), never
the id itself, until `retention.tombstones` has passed. While it lasts, dispatch routes nothing
about that user and the audience job adds no membership for them.

The SQL of this role lives here, as functions on a connection that both engines run as they are."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from fsbridge.store.engine import Connection

KEY_NAME = "tombstones"


def _key(conn: Connection) -> bytes:
    row = conn.execute("SELECT value FROM store_keys WHERE name = ?", (KEY_NAME,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO store_keys (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (KEY_NAME, secrets.token_hex(32)),
        )
        row = conn.execute("SELECT value FROM store_keys WHERE name = ?", (KEY_NAME,)).fetchone()
    return bytes.fromhex(row[0])


def _hashes(key: bytes, user_ids: Iterable[str]) -> dict[str, str]:
    return {hmac.new(key, u.strip().encode(), hashlib.sha256).hexdigest(): u for u in user_ids}


def bury(conn: Connection, user_id: str, now: float, keep_for: float) -> None:
    """Leave a tombstone for a deleted userId (in the deletion's write transaction)."""
    [(digest, _)] = _hashes(_key(conn), [user_id]).items()
    conn.execute(
        "INSERT INTO tombstones (key_hash, expires_at) VALUES (?, ?)"
        " ON CONFLICT (key_hash) DO UPDATE SET expires_at = excluded.expires_at",
        (digest, now + keep_for),
    )


def tombstoned(conn: Connection, user_ids: Iterable[str], now: float) -> tuple[set[str], bool]:
    """Which of these userIds have a live tombstone, and whether any tombstone exists at all."""
    ids = set(user_ids)
    if conn.execute("SELECT 1 FROM tombstones LIMIT 1").fetchone() is None:
        return set(), False  # the usual case: one cheap read, no hashing
    row = conn.execute("SELECT value FROM store_keys WHERE name = ?", (KEY_NAME,)).fetchone()
    if row is None or not ids:
        return set(), True
    hashes = _hashes(bytes.fromhex(row[0]), ids)
    marks = ",".join("?" * len(hashes))
    found = conn.execute(
        f"SELECT key_hash FROM tombstones WHERE expires_at > ? AND key_hash IN ({marks})",  # noqa: S608
        (now, *hashes),
    ).fetchall()
    return {hashes[digest] for (digest,) in found}, True


def prune_expired(conn: Connection, now: float) -> int:
    return int(conn.execute("DELETE FROM tombstones WHERE expires_at <= ?", (now,)).rowcount)
