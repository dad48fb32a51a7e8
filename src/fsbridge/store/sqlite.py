"""SQLite (WAL) engine of the store, the embedded default: one file, one server process.

Writes are durable on return (`synchronous=FULL`); WAL lets readers run beside the writer; a
write that meets another process's lock (the CLI) waits up to 5 s (`busy_timeout`), then the
store retries briefly."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from fsbridge.errors import StoreUnavailableError
from fsbridge.store.engine import Connection
from fsbridge.store.schema import SCHEMA_VERSION, base_schema, migrations_after
from fsbridge.store.sql import SqlStore

# What the WAL file is cut back to when it starts over. Above the restart point, so that a normal
# cycle reuses the file's blocks: truncating and growing it each cycle cost 3 % of throughput
# (each commit's fdatasync then carries a size change).
WAL_SIZE_LIMIT = 256 * 1024 * 1024
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock (the CLI)


class SQLiteEngine:
    name = "sqlite"
    exclusive = True
    for_update = ""  # a write transaction (BEGIN IMMEDIATE) already excludes every other writer
    begin = "BEGIN IMMEDIATE"
    skip_locked = ""  # one writer at a time: claims cannot overlap
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Deletion is final: what a delete frees is overwritten, so no free page keeps a deleted user.
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Checkpoints run in the background (SQLiteStore), so no commit waits for one.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # the WAL file's size after it starts over
        return conn

    def prepare(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Two processes opening a new file together can find it locked while the other switches it
        # to WAL; every step is safe to repeat, so the whole preparation is retried briefly.
        Retrying(
            retry=retry_if_exception(self.is_busy),
            wait=wait_exponential(multiplier=0.01, max=0.5),
            stop=stop_after_delay(30),
            reraise=True,
        )(self._prepare_once)

    def _prepare_once(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            # Read the version again under the write lock: another process may have migrated the
            # file since, and a migration such as ADD COLUMN must not run twice.
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    msg = f"{self.path} was written by a newer fsbridge (schema {version} > {SCHEMA_VERSION})."
                    raise StoreUnavailableError(msg)
                steps = [] if version >= 1 else _statements(base_schema())
                steps += [sql for _, sql in migrations_after(max(version, 1))]
                # One transaction: a crash leaves the file at its old version, to be migrated again.
                for statement in steps:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def bucket(self, expression: str) -> str:
        return f"CAST({expression} AS INTEGER)"

    counts_through_partial_indexes = True

    def contains(self, column: str) -> str:
        return f"instr({column}, ?) > 0"

    def contains_folded(self, column: str) -> str:
        return f"instr(lower(CAST({column} AS TEXT)), ?) > 0"

    def is_busy(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))

    def describe(self) -> str:
        return f"SQLite file {self.path}"


class SQLiteStore(SqlStore):
    """The store on one SQLite file. One server process owns a file at a time."""

    CHECKPOINT_SECONDS = 1.0
    RESTART_FRAMES = 16_384  # 64 MiB of 4 KiB pages
    RESTART_WAIT_MS = 20

    def __init__(self, path: str) -> None:
        super().__init__(SQLiteEngine(path))
        self.path = path
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None

    async def open(self) -> None:
        await super().open()
        if self._checkpointer is None:
            self._stop_checkpoints.clear()
            self._checkpointer = threading.Thread(
                target=self._checkpoints, name="fsbridge-sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            await asyncio.to_thread(self._checkpointer.join, 10)
            self._checkpointer = None
        await super().close()

    def _checkpoints(self) -> None:
        # A passive checkpoint copies committed pages into the database without blocking the writer.
        # Under a steady load it never finds the WAL fully copied, so the WAL would never start over:
        # it grew by about 100 MB/s, its index (and every page look-up through it) with it. Once the
        # WAL holds RESTART_FRAMES, the writer itself restarts it between two transactions (a
        # checkpoint from here would have to win the write lock in the moment between them).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop_checkpoints.wait(self.CHECKPOINT_SECONDS):
                with contextlib.suppress(sqlite3.Error):
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames >= self.RESTART_FRAMES:
                        # Each pass copies what was written during the one before, so what is left
                        # for the writer's restart (which holds writes meanwhile) is a few ms of it.
                        for _ in range(2):
                            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        self._writer.between_transactions(self._restart_wal)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    async def after_deletion(self) -> None:
        """Deletion is final: the WAL, which still holds the deleted rows' old pages, is copied into
        the database and truncated, by the writer between two transactions (the two empty writes
        make sure it has run when this returns)."""
        self._writer.between_transactions(self._truncate_wal)
        for _ in range(2):
            await self._writer.submit(_nothing)

    def _truncate_wal(self, conn: Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def _restart_wal(self, conn: Connection) -> None:
        """On the write connection, between transactions: copy the frames the passive pass left and
        start the WAL over (cutting a file grown past WAL_SIZE_LIMIT back to it). It waits for
        readers of older frames RESTART_WAIT_MS at most, since writes wait meanwhile: behind a long
        reader (a backtest, a large ops read) it gives up and is asked again at the next pass."""
        conn.execute(f"PRAGMA busy_timeout={self.RESTART_WAIT_MS}")
        try:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _nothing(conn: Connection) -> None:
    """An empty write: its commit gives the writer a moment between transactions."""


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (`executescript` would commit the open transaction)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements
