"""Look-ups in Fullstory's API (the Content Enricher's calls), one class each, registered by name in
`engine/lookups.py` so a flow's enrich step names one: `fullstory.latest_session` (GET
/sessions/v2), `fullstory.user` (GET /v2/users/{id}) and `fullstory.user_by_email` (GET
/v2/users?email=).

A look-up answers what it found, or that there is nothing (with the reason); a failure that is
worth retrying raises `LookupUnavailableError`. There is no retry here: the enricher makes each
call through the `fullstory` destination's rate limit and breaker, and a failed look-up delays its
delivery on the durable queue like any failed send."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from fsbridge import __version__
from fsbridge.engine.identity import IdentityRules, normalise_email
from fsbridge.engine.retry import Verdict, classify, parse_retry_after
from fsbridge.store import IdentityClaim


class LookupUnavailableError(Exception):
    """Fullstory did not answer a look-up; the delivery is tried again later."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None, refused: bool = False
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after
        self.refused = refused  # 401/403: the API key is wrong, so the fullstory destination parks


class LookupRefusedError(Exception):
    """Fullstory refused the request for good (a 4xx other than 401/403, 404, 408 and 429)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"Fullstory refused the request ({status_code})")
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class Answer:
    """What a look-up found (`value`), or None with the `reason` nothing was found."""

    value: dict[str, Any] | None
    reason: str = ""


class FullstoryApi:
    """GET requests to Fullstory's server API with the account's key."""

    def __init__(self, client: httpx.AsyncClient, *, api_url: str, api_key: SecretStr) -> None:
        self._client = client
        self._base = api_url.rstrip("/")
        self._headers = {
            "Authorization": f"Basic {api_key.get_secret_value()}",
            "User-Agent": f"fsbridge/{__version__}",
        }

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client, for requests without the account's key (a pre-signed download)."""
        return self._client

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The JSON answer, or None for 404; LookupUnavailableError when it is worth asking again,
        LookupRefusedError when it is not."""
        return await self._request("GET", path, params=params)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """As `get`, for a POST with a JSON body (starting an export)."""
        return await self._request("POST", path, json=body)

    async def _request(self, method: str, path: str, **options: Any) -> Any:
        try:
            response = await self._client.request(method, f"{self._base}{path}", headers=self._headers, **options)
        except httpx.TransportError as exc:
            raise LookupUnavailableError(type(exc).__name__) from exc  # the message may hold the URL
        code = response.status_code
        if code == 404:
            return None
        verdict = classify(code)
        if verdict is Verdict.RETRY:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            raise LookupUnavailableError(f"Fullstory answered {code}", status_code=code, retry_after=retry_after)
        if verdict is Verdict.PARK:
            raise LookupUnavailableError(f"Fullstory answered {code}", status_code=code, refused=True)
        if verdict is not Verdict.DELIVERED:
            raise LookupRefusedError(code)
        try:
            return response.json()
        except ValueError as exc:
            raise LookupUnavailableError("Fullstory's answer is not JSON", status_code=code) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


class Lookup(Protocol):
    name: ClassVar[str]
    parameters: ClassVar[frozenset[str]]  # the arguments a flow may give it
    remote: ClassVar[bool]  # a call in Fullstory's API: through its guard, and cached

    def subject(self, arguments: dict[str, Any], answer: Answer) -> str:
        """The identifier of the user the look-up is about (its cached answer is forgotten when that
        user is deleted): a uid, else an email."""
        ...

    async def ask(self, api: FullstoryApi | None, arguments: dict[str, Any]) -> Answer:
        """The answer; `api` is None only for a look-up that is not remote."""
        ...

    def judge(self, answer: Answer, options: dict[str, Any], now: float) -> Answer:
        """The answer as this flow sees it now (a cached session may have grown too old)."""
        ...

    def claims(self, arguments: dict[str, Any], answer: Answer) -> list[IdentityClaim]:
        """Identity links the answer teaches (kept in the store)."""
        ...


def text_of(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip() if isinstance(value, str | int | float) else ""
    return text or None


def parse_created_time(value: Any) -> float | None:
    """A session's `createdTime`: epoch seconds as a number or a string, or RFC 3339."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                return None
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        return None
    if seconds > 1e11:  # milliseconds, not seconds
        seconds /= 1000
    return seconds if 0 < seconds < 1e11 else None


def parse_sessions(body: Any) -> list[dict[str, Any]]:
    """The sessions of a `GET /sessions/v2` answer (`{"sessions": [...]}` or a bare list, camelCase
    or snake_case), each as `url`, `session_id`, `started_at` (ISO 8601), `started_at_epoch` and
    `fullstory_user_id`; rows without a readable time or URL are left out."""
    rows = body.get("sessions") if isinstance(body, dict) else body
    sessions = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        started = parse_created_time(row.get("createdTime", row.get("created_time")))
        url = text_of(row.get("fsUrl", row.get("fs_url")))
        if started is None or url is None:
            continue
        sessions.append(
            {
                "url": url,
                "session_id": text_of(row.get("sessionId", row.get("session_id"))),
                "started_at": iso(started),
                "started_at_epoch": started,
                "fullstory_user_id": text_of(row.get("userId", row.get("user_id"))),
            }
        )
    return sessions


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class LatestSession:
    """The user's most recent session (GET /sessions/v2, one page, by uid else email)."""

    name: ClassVar[str] = "fullstory.latest_session"
    parameters: ClassVar[frozenset[str]] = frozenset({"uid", "email"})
    remote: ClassVar[bool] = True
    NONE = "no recent Fullstory session"

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def _query(self, arguments: dict[str, Any]) -> dict[str, str]:
        user_id = text_of(arguments.get("uid"))
        if user_id is not None:
            return {"uid": self.rules.fullstory_uid(user_id), "limit": "20"}
        email = normalise_email(arguments.get("email"))
        return {"email": email, "limit": "20"} if email else {}

    def subject(self, arguments: dict[str, Any], answer: Answer) -> str:
        query = self._query(arguments)
        return query.get("uid") or query.get("email", "")

    async def ask(self, api: FullstoryApi | None, arguments: dict[str, Any]) -> Answer:
        assert api is not None, "a remote look-up is made only with Fullstory's API"
        query = self._query(arguments)
        if not query:
            return Answer(None, "no uid or email to find a Fullstory session by")
        sessions = parse_sessions(await api.get("/sessions/v2", query))
        if not sessions:
            return Answer(None, self.NONE)
        return Answer(max(sessions, key=lambda s: float(s["started_at_epoch"])))

    def judge(self, answer: Answer, options: dict[str, Any], now: float) -> Answer:
        max_age = options.get("max_age")
        if answer.value is None or max_age is None:
            return answer
        if now - float(answer.value["started_at_epoch"]) > float(max_age):
            return Answer(None, self.NONE)
        return answer

    def claims(self, arguments: dict[str, Any], answer: Answer) -> list[IdentityClaim]:
        return []


class FullstoryUser:
    """A Fullstory user by its Fullstory id (GET /v2/users/{id}), with the Segment userId behind its uid."""

    name: ClassVar[str] = "fullstory.user"
    parameters: ClassVar[frozenset[str]] = frozenset({"id"})
    remote: ClassVar[bool] = True

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def subject(self, arguments: dict[str, Any], answer: Answer) -> str:
        return str(answer.value["uid"]) if answer.value else text_of(arguments.get("id")) or ""

    async def ask(self, api: FullstoryApi | None, arguments: dict[str, Any]) -> Answer:
        assert api is not None, "a remote look-up is made only with Fullstory's API"
        user_id = text_of(arguments.get("id"))
        if user_id is None:
            return Answer(None, "no Fullstory user id in the event")
        body = await api.get(f"/v2/users/{quote(user_id, safe='')}")
        if body is None:
            return Answer(None, "Fullstory does not know this user (404)")
        if not isinstance(body, dict):
            return Answer(None, "Fullstory's answer is not a user")
        uid = text_of(body.get("uid"))
        if uid is None:
            return Answer(None, "the Fullstory user has no uid")
        segment_user_id = self.rules.user_id_for_uid(uid)
        if segment_user_id is None:
            return Answer(None, "the Fullstory user's uid lacks the configured prefix")
        value = {
            "id": text_of(body.get("id")) or user_id,
            "uid": uid,
            "user_id": segment_user_id,
            "email": text_of(body.get("email")),
            "display_name": text_of(body.get("display_name")),
            "app_url": text_of(body.get("app_url")),
        }
        return Answer(value)

    def judge(self, answer: Answer, options: dict[str, Any], now: float) -> Answer:
        return answer

    def claims(self, arguments: dict[str, Any], answer: Answer) -> list[IdentityClaim]:
        return []


class UserByEmail:
    """The uid of the one identified Fullstory user with this email (GET /v2/users?email=)."""

    name: ClassVar[str] = "fullstory.user_by_email"
    parameters: ClassVar[frozenset[str]] = frozenset({"email"})
    remote: ClassVar[bool] = True

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules

    def subject(self, arguments: dict[str, Any], answer: Answer) -> str:
        return normalise_email(arguments.get("email")) or ""

    async def ask(self, api: FullstoryApi | None, arguments: dict[str, Any]) -> Answer:
        assert api is not None, "a remote look-up is made only with Fullstory's API"
        email = normalise_email(arguments.get("email"))
        if email is None:
            return Answer(None, "no email to look up")
        body = await api.get("/v2/users", {"email": email, "is_identified": "true"})
        results = body.get("results") if isinstance(body, dict) else None
        uids: set[str] = {r["uid"] for r in results or [] if isinstance(r, dict) and isinstance(r.get("uid"), str)}
        if len(uids) != 1:
            return Answer(None, "no Fullstory user with this email" if not uids else "several Fullstory users")
        uid = uids.pop()
        user_id = self.rules.user_id_for_uid(uid)
        if user_id is None:
            return Answer(None, "the Fullstory user's uid lacks the configured prefix")
        return Answer({"uid": uid, "user_id": user_id})

    def judge(self, answer: Answer, options: dict[str, Any], now: float) -> Answer:
        return answer

    def claims(self, arguments: dict[str, Any], answer: Answer) -> list[IdentityClaim]:
        email = normalise_email(arguments.get("email"))
        if answer.value is None or email is None:
            return []
        user_id = answer.value["user_id"]
        return [IdentityClaim(kind, value, user_id) for kind, value in self.rules.email_keys(email)]
