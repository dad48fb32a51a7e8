"""Fullstory segments become Segment audiences (Part 2, `jobs.fullstory_segment_audiences`).

Each run exports every configured segment's individuals (`sources/fullstory_api.py`), reads each
file as a stream and stages the users it names in the store (by uid, the prefix removed, else by
email through the identity links; rows that name nobody are counted as `unmatched`). Only when
every export has been read does the run apply the diff against the last successful membership:
users who entered or left become `fullstory_api` `segment.membership` events in the inbox, chunk
by chunk, each chunk in one transaction with the membership change. The built-in flows turn them
into identify traits `fs_<key>: true|false` and `Audience Entered` / `Audience Exited` tracks.

- An export that fails (a FAILED operation, an error, a file that is not whole gzip NDJSON, a
  location that is not https, a download past `max_wait`) fails the run before anything is applied:
  nothing changes, and the next run starts over from the last membership.
- So does a run in which more than `max_exit_fraction` of a segment's members would leave at once
  (a broken export looks like everyone leaving); `fsbridge jobs run fullstory_segment_audiences
  --allow-mass-exit` applies such a run on purpose.
- A run killed while applying leaves its cursor at the apply phase; the next run applies the same
  staged export again, and the diff skips what was already applied: no change twice, none missed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from fsbridge.engine.identity import IdentityRules, normalise_email
from fsbridge.engine.scheduler import JobContext, ScheduledJob
from fsbridge.log import get_logger
from fsbridge.sources.fullstory_api import ExportFailedError, SegmentExports
from fsbridge.store.fullstory_jobs import CHUNK, Audience, FullstoryJobStore
from fsbridge.targets.fullstory_lookups import text_of

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime

log = get_logger(__name__)

NAME = "fullstory_segment_audiences"
ALLOW_MASS_EXIT = "allow_mass_exit"  # a run option: apply a run that removes most members
DEFAULT_EVERY = 3600.0
TURN_PATIENCE_SECONDS = 60.0


class SegmentAudiencesJob:
    name = NAME

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config.jobs.fullstory_segment_audiences
        self.store: FullstoryJobStore = runtime.store
        self.rules = IdentityRules(runtime.config.identity)
        self.audiences = [Audience(s.id, f"fs_{s.key}", s.name or s.key) for s in self.config.segments]

    async def run(self, context: JobContext) -> dict[str, Any]:
        exports = self._exports()
        cursor = orjson.loads(context.cursor) if context.cursor else {}
        counts: dict[str, Any] = cursor.get("counts", {"rows": 0, "members": 0, "unmatched": 0})
        run = cursor.get("run") or f"{int(self.runtime.clock.now())}-{secrets.token_hex(4)}"
        if cursor.get("phase") != "apply":
            await self.store.discard_staging(run)  # a run killed while staging starts its reading over
            await context.checkpoint(orjson.dumps({"run": run, "phase": "stage"}).decode())
            try:
                for segment, audience in zip(self.config.segments, self.audiences, strict=True):
                    rows, unmatched = await self._stage(exports, segment.id, audience, run)
                    counts["rows"] += rows
                    counts["unmatched"] += unmatched
                    counts["members"] += await self.store.staged_count(run, audience.key)
                if ALLOW_MASS_EXIT not in context.options:
                    await self._refuse_mass_exit(run)
            except ExportFailedError:
                await self.store.discard_staging(run)
                await context.checkpoint(None)
                raise
            await context.checkpoint(orjson.dumps({"run": run, "phase": "apply", "counts": counts}).decode())
        counts["entered"], counts["exited"] = 0, 0
        now = self.runtime.clock.now()
        for audience in self.audiences:
            for apply, label in ((self.store.apply_entered, "entered"), (self.store.apply_exited, "exited")):
                after: str | None = ""
                while after is not None:
                    changed, after = await apply(run, audience, after, now)
                    counts[label] += changed
                    if changed:
                        self.runtime.worker.notify_inbox()
        await self.store.discard_staging(run)
        await context.checkpoint(None)
        return counts

    async def _refuse_mass_exit(self, run: str) -> None:
        limit = self.config.max_exit_fraction
        for audience in self.audiences:
            members = await self.store.member_count(audience.key)
            leaving = await self.store.exit_count(run, audience.key) if members else 0
            if members and leaving / members > limit:
                raise ExportFailedError(
                    f"{leaving:,} of the {members:,} members of {audience.key} would leave at once, over "
                    f"max_exit_fraction ({limit:g}); nothing was changed. If that is right, run "
                    f"`fsbridge jobs run {NAME} --allow-mass-exit`"
                )

    def _exports(self) -> SegmentExports:
        api = self.runtime.fullstory_api
        if api is None:
            msg = "FSBRIDGE_FULLSTORY_API_KEY is not set (or dry run), so no segment can be exported"
            raise RuntimeError(msg)
        guard = self.runtime.worker.guards.get("fullstory")
        clock = self.runtime.clock

        async def wait_turn() -> None:
            if guard is None:
                return
            deadline = time.monotonic() + TURN_PATIENCE_SECONDS
            while not guard.try_turn(clock.now()):
                wait = guard.wait_hint(clock.now())
                if time.monotonic() + wait > deadline:
                    raise ExportFailedError("the fullstory destination's rate limit or breaker held the export back")
                await asyncio.sleep(wait)

        config = self.config
        return SegmentExports(
            api, api.client, wait_turn=wait_turn, poll_every=config.poll_every, max_wait=config.max_wait,
            max_export_bytes=int(config.max_export_bytes),
        )  # fmt: skip

    async def _stage(self, exports: SegmentExports, segment_id: str, audience: Audience, run: str) -> tuple[int, int]:
        """Read one segment's export into the staging table; returns (rows, rows naming nobody)."""
        operation = await exports.start(segment_id)
        export = await exports.wait_for(operation)
        rows = unmatched = 0
        users: list[str] = []
        emails: list[str] = []
        # One chunk is written while the next is read: the store's writer thread and the download
        # overlap with parsing, and at most two chunks are held in memory.
        writing: asyncio.Future[None] | None = None
        try:
            async for row in exports.rows(export):
                rows += 1
                uid = text_of(row.get("Uid"))
                user_id = self.rules.user_id_for_uid(uid) if uid else None
                if user_id is not None:
                    users.append(user_id)
                elif (email := normalise_email(row.get("Email"))) is not None:
                    emails.append(email)
                else:
                    unmatched += 1
                if len(users) >= CHUNK:
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(self.store.stage_members(run, audience.key, users))
                    users = []
                if len(emails) >= CHUNK:
                    unmatched += await self._stage_emails(run, audience, emails)
                    emails = []
        finally:
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)  # never left running after a failure
        if writing is not None:
            await writing  # its error, if it failed
        await self.store.stage_members(run, audience.key, users)
        unmatched += await self._stage_emails(run, audience, emails)
        log.info("job.segment_exported", job=NAME, audience=audience.key, rows=rows, unmatched=unmatched)
        return rows, unmatched

    async def _stage_emails(self, run: str, audience: Audience, emails: list[str]) -> int:
        """Stage the users the identity links know these emails for; returns how many are unknown."""
        if not emails:
            return 0
        keys = {email: self.rules.email_keys(email) for email in emails}
        found = await self.runtime.store.resolve_identities([k for ks in keys.values() for k in ks])
        user_of = {email: next((found[k] for k in ks if k in found), None) for email, ks in keys.items()}
        await self.store.stage_members(run, audience.key, [u for u in user_of.values() if u is not None])
        return sum(1 for email in emails if user_of[email] is None)


def segment_audiences_job(runtime: Runtime) -> ScheduledJob:
    config = runtime.config.jobs.fullstory_segment_audiences
    return ScheduledJob(SegmentAudiencesJob(runtime), config.every or DEFAULT_EVERY, config.enabled)
