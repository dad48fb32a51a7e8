"""The `Store` protocol both engines implement, as the union of the store's roles, and `open_store`.
Each role (intake, dispatch, deliveries, identity, profiles, ops reads and state, jobs, look-ups,
per-user state, feature counts, Fullstory jobs) is a narrow protocol in its own module, beside the
SQL that implements it; callers depend on the role they use. The records that cross the boundary
are in `store/records.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from fsbridge.store.deletion import DeletionStore
from fsbridge.store.deliveries import DeadLetterStore, DeliveryStore
from fsbridge.store.dispatch import DispatchStore
from fsbridge.store.feature_counts import AdoptionStore
from fsbridge.store.fullstory_jobs import FullstoryJobStore
from fsbridge.store.identity import IdentityStore
from fsbridge.store.intake import InboxReads, IntakeStore
from fsbridge.store.jobs import JobStore
from fsbridge.store.lookups import LookupStore
from fsbridge.store.ops_reads import OpsReads
from fsbridge.store.ops_state import AlertStore, OpsSessionStore
from fsbridge.store.profiles import ProfileStore
from fsbridge.store.search import SearchStore
from fsbridge.store.user_state import UserStateStore


class Store(
    DeletionStore,
    SearchStore,
    IntakeStore,
    InboxReads,
    DispatchStore,
    DeliveryStore,
    DeadLetterStore,
    IdentityStore,
    ProfileStore,
    OpsReads,
    AlertStore,
    OpsSessionStore,
    JobStore,
    LookupStore,
    FullstoryJobStore,
    UserStateStore,
    AdoptionStore,
    Protocol,
):
    """Everything fsbridge keeps. Writes are durable when the awaited call returns. Only the
    runtime, which opens, closes and recovers the store, needs all of it."""

    @property
    def transactions(self) -> int:
        """Write transactions committed (group commit makes this fewer than `writes`)."""
        ...

    @property
    def writes(self) -> int: ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def recover_after_restart(self, now: float) -> int:
        """Release what a previous run of this process left claimed, and un-park destinations
        (the contract: parking lasts until resume or a restart). Returns how many claims it released."""
        ...


def open_store(database_url: str) -> Store:
    """The store engine for `database_url` (`sqlite:///path` or `postgresql://...`)."""
    if database_url.startswith("sqlite:///"):
        from fsbridge.store.sqlite import SQLiteStore

        return SQLiteStore(database_url.removeprefix("sqlite:///"))
    if database_url.startswith(("postgresql://", "postgres://")):
        from fsbridge.store.postgres import PostgresStore

        return PostgresStore(database_url)
    msg = f"FSBRIDGE_DATABASE_URL must start with sqlite:/// or postgresql://, not {database_url.split(':')[0]!r}."
    raise ValueError(msg)


def store_problem(database_url: str) -> str | None:
    """Why the store at `database_url` cannot be used now, in one sentence (None: it can). Checked
    before serving, so an unreachable database is one line, not a traceback from inside the server."""
    if database_url.startswith("sqlite:///"):
        folder = Path(database_url.removeprefix("sqlite:///")).resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create the folder {folder} for the SQLite file ({exc.strerror}): choose a writable path."
        return None
    if database_url.startswith(("postgresql://", "postgres://")):
        from fsbridge.store.postgres import unreachable

        return unreachable(database_url)
    return f"must start with sqlite:/// or postgresql://, not {database_url.split(':')[0][:40]!r}."
