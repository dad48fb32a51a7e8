"""Read-only look-ups in Fullstory (Content Enricher side): which uid a Fullstory user with this
email has. Look-ups are idempotent GETs, so a short in-process retry (tenacity: a few attempts
within seconds, honouring a short Retry-After) is safe; the durable queue remains the only
long-horizon retry, and a look-up that still fails leaves the event as it was."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from fsbridge import __version__
from fsbridge.engine.retry import Verdict, classify, parse_retry_after


class LookupUnavailableError(Exception):
    """Fullstory could not answer a look-up (after the short retries)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FullstoryLookups:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        api_key: SecretStr,
        attempts: int = 3,
        max_wait_seconds: float = 2.0,
    ) -> None:
        self._client = client
        self._base = api_url.rstrip("/")
        self._headers = {
            "Authorization": f"Basic {api_key.get_secret_value()}",
            "User-Agent": f"fsbridge/{__version__}",
        }
        self.attempts = attempts
        self.max_wait_seconds = max_wait_seconds

    def _wait(self, state: RetryCallState) -> float:
        # Honour Retry-After when it is short; otherwise back off exponentially, never past the cap.
        exc = state.outcome.exception() if state.outcome else None
        hinted = exc.retry_after if isinstance(exc, LookupUnavailableError) else None
        backoff = 0.1 * 2 ** (state.attempt_number - 1)
        return min(self.max_wait_seconds, hinted if hinted is not None else backoff)

    async def uid_for_email(self, email: str) -> str | None:
        """The uid of the one identified Fullstory user with this email, or None (none, or ambiguous)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(LookupUnavailableError),
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            reraise=True,
        ):
            with attempt:
                body = await self._get("/v2/users", {"email": email, "is_identified": "true"})
        results = body.get("results") if isinstance(body, dict) else None
        uids = {r.get("uid") for r in results or [] if isinstance(r, dict) and r.get("uid")}
        return uids.pop() if len(uids) == 1 else None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            response = await self._client.get(f"{self._base}{path}", params=params, headers=self._headers)
        except httpx.TransportError as exc:
            raise LookupUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        verdict = classify(response.status_code)
        if verdict is Verdict.RETRY:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            raise LookupUnavailableError(f"Fullstory answered {response.status_code}", retry_after)
        if verdict is not Verdict.DELIVERED:
            return {}
        return response.json()
