"""Event search with 1,000,000 stored events: how long `GET /ops/api/events` takes by user, email,
messageId and with no filter (the store's search role, on a reader, as the API calls it).

    python bench/search_scale.py [--events 1000000] [--users 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fsbridge.store.search import EventQuery  # noqa: E402
from fsbridge.store.sqlite import SQLiteEngine, SQLiteStore  # noqa: E402


def preload(database: Path, events: int, users: int) -> None:
    SQLiteEngine(str(database)).prepare()
    conn = sqlite3.connect(database)
    now = time.time() - events
    with conn:
        conn.executemany(
            "INSERT INTO inbox (id, source, stream, dedup_key, kind, body, received_at, status, user_id)"
            " VALUES (?, 'segment', '', ?, 'track', ?, ?, 'dispatched', ?)",
            (
                (f"evt_{n:012d}", f"messageId:m{n}", b'{"type":"track","userId":"u%d"}' % (n % users), now + n,
                 f"u{n % users}")
                for n in range(events)
            ),
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO identity_links (kind, value, user_id, first_seen, last_seen) VALUES ('email', ?, ?, 0, 0)",
            ((f"user{n}@example.com", f"u{n}") for n in range(users)),
        )
    conn.close()


async def timed(store: SQLiteStore, query: EventQuery, runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await store.search_events(query)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(database: Path, users: int) -> dict[str, float]:
    store = SQLiteStore(str(database))
    await store.open()
    try:
        user = f"u{users // 2}"
        email_user = await store.resolve_identities([("email", f"user{users // 2}@example.com")])
        return {
            "by user": await timed(store, EventQuery(user_ids=(user,))),
            "by email (links, then user)": await timed(store, EventQuery(user_ids=tuple(email_user.values()))),
            "by messageId": await timed(store, EventQuery(message_id="m500000")),
            "newest, no filter": await timed(store, EventQuery()),
            "by user, one source, a day's window": await timed(
                store, EventQuery(user_ids=(user,), source="segment", since=time.time() - 86400)
            ),
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsbridge-search-") as folder:
        database = Path(folder) / "search.db"
        started = time.monotonic()
        preload(database, args.events, args.users)
        print(f"preloaded {args.events:,} events of {args.users:,} users in {time.monotonic() - started:.0f} s")
        for label, ms in asyncio.run(measure(database, args.users)).items():
            print(f"| search {label}, {args.events:,} events stored (median of 20) | {ms:.1f} ms |")


if __name__ == "__main__":
    main()
