"""PostgreSQL engine of the store, for several replicas over one database (psycopg 3).

The queries are the SQLite engine's (`fsbridge.store.sql`); claims add `FOR UPDATE SKIP LOCKED`,
so concurrent workers take disjoint rows, and a lease that outlives its worker is simply claimable
again (that is the sweeper). The schema is created or migrated at start under an advisory lock,
so replicas starting together do it once."""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from fsbridge.errors import StoreUnavailableError
from fsbridge.store.engine import Connection, Cursor
from fsbridge.store.sql import SqlStore

SCHEMA_VERSION = 1
MIGRATION_LOCK = 0x46534252  # "FSBR"
CONNECT_TIMEOUT_SECONDS = 5


class _PgConnection:
    """A psycopg connection shaped like sqlite3's: `?` placeholders and `in_transaction`."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = (), /) -> Cursor:
        # Every query of the shared store is written without a literal %, so this is the only rewrite.
        return self._conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, params: Any, /) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self._conn.close()

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != TransactionStatus.IDLE


class PostgresEngine:
    name = "postgresql"
    exclusive = False
    begin = "BEGIN"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> Connection:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        return _PgConnection(conn)

    def prepare(self) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS fsbridge_schema (version INTEGER NOT NULL)")
                row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM fsbridge_schema").fetchone()
                version = row[0] if row else 0
                if version > SCHEMA_VERSION:
                    msg = f"the database was written by a newer fsbridge (schema {version} > {SCHEMA_VERSION})"
                    raise StoreUnavailableError(msg)
                if version < 1:
                    script = resources.files("fsbridge.store").joinpath("postgres_schema.sql").read_text()
                    with conn.transaction():
                        conn.execute(script.encode())
                        conn.execute("INSERT INTO fsbridge_schema (version) VALUES (1)")
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    def bucket(self, expression: str) -> str:
        return f"FLOOR({expression})::integer"

    def is_busy(self, exc: BaseException) -> bool:
        # Serialization failures and deadlocks are worth an immediate retry of the whole group.
        return isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected)

    def describe(self) -> str:
        return "PostgreSQL " + self.url.split("@")[-1]


class PostgresStore(SqlStore):
    """The store on a PostgreSQL database shared by every replica."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgresEngine(url))
