"""New sessions of high-value accounts reach Slack (Part 2, `jobs.high_value_sessions`).

Each run takes the users in the configured audiences (or whose profile traits match), the least
recently checked first, at most `max_users_per_run`, and asks Fullstory for each one's sessions
(`GET /sessions/v2?uid=`, through the `fullstory` destination's rate limit and breaker). Every
session newer than the newest one already seen for that user becomes a `fullstory_api`
`session.started` event in the inbox (keyed by the session, in one transaction with the user's new
newest session), which the built-in flow `high_value_session_to_slack` turns into one Slack Block
Kit message. The first check of a user only records its newest session.

When the rate limit has no token left, or Fullstory answers 429, the run ends early; the users it
did not reach are the least recently checked, so the next run starts with them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsbridge.engine.identity import IdentityRules
from fsbridge.engine.scheduler import JobContext, ScheduledJob
from fsbridge.log import get_logger
from fsbridge.store.fullstory_jobs import FullstoryJobStore, SessionCheck
from fsbridge.targets.fullstory_lookups import LookupRefusedError, LookupUnavailableError, parse_sessions

if TYPE_CHECKING:
    from fsbridge.runtime import Runtime

log = get_logger(__name__)

NAME = "high_value_sessions"
DEFAULT_EVERY = 300.0


def person(traits: dict[str, Any]) -> dict[str, Any]:
    """What the Slack message says about the person, from the profile's traits (when known)."""

    def text(*names: str) -> str | None:
        for name in names:
            value = traits.get(name)
            if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip():
                return str(value).strip()
        return None

    first, last = text("firstName", "first_name"), text("lastName", "last_name")
    name = text("name") or (" ".join(p for p in (first, last) if p) or None)
    company = traits.get("company")
    company_name = company.get("name") if isinstance(company, dict) else company
    return {
        "name": name,
        "email": text("email"),
        "company": str(company_name) if isinstance(company_name, str | int) and str(company_name) else None,
        "plan": text("plan"),
    }


class HighValueSessionsJob:
    name = NAME

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config.jobs.high_value_sessions
        self.store: FullstoryJobStore = runtime.store
        self.rules = IdentityRules(runtime.config.identity)

    async def run(self, context: JobContext) -> dict[str, Any]:
        api = self.runtime.fullstory_api
        if api is None:
            msg = "FSBRIDGE_FULLSTORY_API_KEY is not set (or dry run), so no session can be checked"
            raise RuntimeError(msg)
        counts = {"checked": 0, "sessions": 0, "messages": 0, "deferred": 0}
        config = self.config
        candidates = await self.store.high_value_candidates(config.audiences, config.traits, config.max_users_per_run)
        guard = self.runtime.worker.guards.get("fullstory")
        clock = self.runtime.clock
        for n, user in enumerate(candidates):
            if guard is not None and not guard.try_turn(clock.now()):
                counts["deferred"] = len(candidates) - n  # the next run starts with them
                break
            try:
                body = await api.get("/sessions/v2", {"uid": self.rules.fullstory_uid(user.user_id), "limit": "20"})
            except LookupUnavailableError as exc:
                if guard is not None:
                    guard.outcome(False, clock.now(), exc.status_code)
                if exc.status_code == 429 or exc.refused:
                    counts["deferred"] = len(candidates) - n
                    log.warning("job.stopped_early", job=NAME, error=str(exc), deferred=counts["deferred"])
                    break
                log.warning("job.user_skipped", job=NAME, error=str(exc))
                continue
            except LookupRefusedError as exc:
                if guard is not None:
                    guard.outcome(True, clock.now())  # Fullstory answered: not a failure of its own
                log.warning("job.user_skipped", job=NAME, error=str(exc))
                continue
            if guard is not None:
                guard.outcome(True, clock.now())
            sessions = parse_sessions(body)
            counts["checked"] += 1
            counts["sessions"] += len(sessions)
            new = await self._new_sessions(user, sessions)
            counts["messages"] += len(new)
            newest = max((float(s["started_at_epoch"]) for s in sessions), default=None)
            await self.store.record_session_check(user.user_id, newest, new, clock.now())
        if counts["messages"]:
            self.runtime.worker.notify_inbox()
        return counts

    async def _new_sessions(
        self, user: SessionCheck, sessions: list[dict[str, Any]]
    ) -> list[tuple[str, dict[str, Any]]]:
        if user.checked_at is None:  # the first check only records where the user is
            return []
        seen = user.newest_at if user.newest_at is not None else float("-inf")
        fresh = [s for s in sessions if float(s["started_at_epoch"]) > seen]
        fresh.sort(key=lambda s: float(s["started_at_epoch"]))
        if not fresh:
            return []
        record = await self.runtime.store.user_record(user.user_id)
        about = person(record.traits if record else {})
        return [
            (
                str(s["session_id"] or s["url"]),
                {
                    "user_id": user.user_id,
                    "session_id": s["session_id"],
                    "session_url": s["url"],
                    "started_at": s["started_at"],
                    **about,
                },
            )
            for s in fresh
        ]


def high_value_sessions_job(runtime: Runtime) -> ScheduledJob:
    config = runtime.config.jobs.high_value_sessions
    return ScheduledJob(HighValueSessionsJob(runtime), config.every or DEFAULT_EVERY, config.enabled)
