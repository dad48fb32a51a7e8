"""The store's single writer: one thread owns the write connection and commits concurrent writes
together (group commit). It takes every write queued while the previous transaction was committing,
runs them in one transaction (each in its own SAVEPOINT only after one of them fails, so one failure
does not undo the others) and commits them with one sync. An awaited write has returned only after
its transaction is durable.

A write marked large (an inbound body over LARGE_BYTES) is committed on its own, after the small
writes waiting with it: a sender of 1 MiB bodies makes other senders wait for at most one large
commit, not for every large body queued before theirs."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from fsbridge.errors import StoreUnavailableError
from fsbridge.log import get_logger
from fsbridge.store.engine import Connection, Engine

T = TypeVar("T")
log = get_logger(__name__)

MAX_GROUP = 1024
LARGE_BYTES = 64 * 1024  # a write that stores a body larger than this is committed on its own


@dataclass(slots=True)
class _Job:
    fn: Callable[[Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    large: bool = False


class GroupCommitWriter:
    """The single writer thread. `submit` queues a write; its future resolves after the commit."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._large: collections.deque[_Job] = collections.deque()  # large writes, after the small ones
        self._thread = threading.Thread(target=self._run, name="fsbridge-store-writer", daemon=True)
        self._conn: Connection | None = None
        self.transactions = 0
        self.writes = 0  # committed writes: writes / transactions is the mean commit group
        # Work an engine asks the writer to do on its connection between two transactions, where no
        # other writer can be (SQLite's WAL restart); run once, after the next commit.
        self._between: Callable[[Connection], None] | None = None

    def start(self) -> None:
        self._conn = self._engine.connect()
        self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

    def submit(self, fn: Callable[[Connection], T], *, large: bool = False) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, loop, future, large))
        return future

    def between_transactions(self, fn: Callable[[Connection], None]) -> None:
        """Run `fn` on the write connection after the next commit (safe from any thread)."""
        self._between = fn

    def _run(self) -> None:
        stop = False
        while True:
            if self._large and (stop or self._jobs.empty()):
                group = [self._large.popleft()]  # no small write waits: one large one, alone
            elif stop:
                return
            else:
                first = self._jobs.get()
                if first is None:
                    stop = True
                    continue
                group = [first]
                while len(group) < MAX_GROUP:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    group.append(job)
                if any(job.large for job in group):
                    self._large.extend(job for job in group if job.large)
                    group = [job for job in group if not job.large]
                    if not group:
                        continue
            self._commit_group(group)
            between, self._between = self._between, None
            if between is not None and self._conn is not None:
                try:
                    between(self._conn)
                except Exception as exc:  # maintenance: the writes it follows are committed already
                    log.warning("store.between_transactions_failed", error=str(exc))

    def _commit_group(self, group: list[_Job]) -> None:
        try:
            results = self._transaction(group)
        except Exception as exc:
            log.error("store.commit_failed", error=str(exc), writes=len(group))
            failure = StoreUnavailableError(f"The store could not commit: {exc}")
            results = [(None, failure)] * len(group)
        else:
            self.transactions += 1
            self.writes += len(group)
        _resolve_all(group, results)

    def _transaction(self, group: list[_Job]) -> list[tuple[Any, BaseException | None]]:
        try:
            return self._attempt(group)
        except Exception as exc:
            if not self._engine.is_busy(exc):
                raise
        # Another process (the CLI, another replica) holds a lock for a moment; tenacity retries
        # the whole group briefly before the callers get StoreUnavailableError (intake: 503).
        # Built only then: a Retrying per commit cost more than the commit's own Python.
        retrying = Retrying(
            retry=retry_if_exception(self._engine.is_busy),
            wait=wait_exponential(multiplier=0.01, max=0.5),
            stop=stop_after_delay(10),
            reraise=True,
        )
        return retrying(self._attempt, group)

    def _attempt(self, group: list[_Job]) -> list[tuple[Any, BaseException | None]]:
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        try:
            conn.execute(self._engine.begin)
            try:
                # The common case: every write succeeds, so none pays for a savepoint of its own.
                results: list[tuple[Any, BaseException | None]] = [(job.fn(conn), None) for job in group]
            except Exception:
                conn.execute("ROLLBACK")
                conn.execute(self._engine.begin)
                results = [self._isolated(conn, job) for job in group]
            conn.execute("COMMIT")
        except BaseException as exc:
            self._discard_after_failure(conn, exc)
            raise
        return results

    def _isolated(self, conn: Connection, job: _Job) -> tuple[Any, BaseException | None]:
        """Run one write in a savepoint, so its failure undoes it alone."""
        conn.execute("SAVEPOINT job")
        try:
            value = job.fn(conn)
        except self._engine.errors as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return None, StoreUnavailableError(f"The store could not write: {exc}")
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return None, exc
        conn.execute("RELEASE job")
        return value, None

    def _discard_after_failure(self, conn: Connection, exc: BaseException) -> None:
        with contextlib.suppress(Exception):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if not self._engine.is_busy(exc):
            # The connection may be lost (a database restart) even if it looks idle: start afresh.
            with contextlib.suppress(Exception):
                conn.close()
            self._conn = None


def _resolve_all(group: list[_Job], results: list[tuple[Any, BaseException | None]]) -> None:
    """Settle every future of a group with one wake-up per event loop, not one per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for job, (value, error) in zip(group, results, strict=True):
        by_loop.setdefault(job.loop, []).append((job, value, error))

    def settle(items: list[tuple[_Job, Any, BaseException | None]]) -> None:
        for job, value, error in items:
            if job.future.done():
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)

    for loop, items in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(settle, items)
