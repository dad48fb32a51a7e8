"""What a SQL engine gives the store: connections that look alike (sqlite3's and psycopg's share
`execute`, `fetchone`, `fetchall`, `rowcount`), its schema, and the few phrases where the two
dialects differ. Everything else (every query, group commit, leases) is shared, so both engines
behave the same by construction; `in_chunks` binds a long list of values under either one's limit."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
IN_CHUNK = 500  # values bound in one `IN (...)`: well under either engine's parameter limit


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int, /) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, params: Any, /) -> Any: ...
    def close(self) -> None: ...
    @property
    def in_transaction(self) -> bool: ...


class Engine(Protocol):
    name: str
    exclusive: bool  # one process owns the store, so every lease in it is that process's
    begin: str  # the statement that opens a write transaction
    skip_locked: str  # appended to claim subqueries so concurrent workers take disjoint rows
    errors: tuple[type[Exception], ...]

    def connect(self) -> Connection: ...
    def prepare(self) -> None:
        """Create or migrate the schema (safe when several processes start at once)."""
        ...

    def bucket(self, expression: str) -> str:
        """`expression` truncated to a whole number (time buckets)."""
        ...

    for_update: str  # appended to a SELECT that locks the rows it reads until the transaction ends

    # Counts read through small partial indexes, from their entries alone (SQLite, told which index
    # with INDEXED BY: without statistics its planner prefers any index with an equality on it).
    # PostgreSQL's scans of them still visited the rows, and one pass over the rows was cheaper there.
    counts_through_partial_indexes: bool

    def contains(self, column: str) -> str:
        """A condition: the stored bytes of `column` contain the bytes of the next parameter."""
        ...

    def contains_folded(self, column: str) -> str:
        """A condition: the text of `column`, lower-cased, contains the next parameter (lower case)."""
        ...

    def is_busy(self, exc: BaseException) -> bool:
        """The write failed only because another process holds a lock: worth retrying."""
        ...

    def describe(self) -> str: ...


def in_chunks(values: Sequence[T]) -> Iterator[tuple[Sequence[T], str]]:
    """`values` in chunks of IN_CHUNK, each with its placeholders (`?,?,...`) for an `IN (...)`."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))
