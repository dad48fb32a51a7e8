"""Access control for the operator surface (`/ops`, `/ops/api`, `/metrics`): who gets in, and what a
browser may do there.

- With `FSBRIDGE_OPS_TOKEN` set: a bearer token (scripts, and `GET /ops`) or a signed-in session
  (people; it also reads the JSON API, which the dashboard links to).
- Without it (loopback-only mode): only clients whose *socket* peer is a loopback address, judged
  on the address the connection came from, under a loopback `Host` (so a DNS-rebinding page on
  another name cannot read anything), and carrying no proxy header at all (`Forwarded`,
  `X-Forwarded-For`, `X-Real-IP`): a request a proxy on this machine relays is not a local one.
- Every state-changing request must come from the same origin (`Origin`, `Sec-Fetch-Site`), and
  every dashboard form carries its session's CSRF token.
- Wrong tokens are limited per client (behind a trusted proxy, `FORWARDED_ALLOW_IPS`, the
  forwarded client): only failures count, and the right token is never refused.

Sessions live in the store, so signing out ends them on every replica, and they expire.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr
from starlette.requests import Request

from fsbridge.errors import IntakeError
from fsbridge.http_protocol import PEER
from fsbridge.log import get_logger
from fsbridge.runtime import Runtime

log = get_logger(__name__)
COOKIE = "fsbridge_ops"
SESSION_SECONDS = 12 * 3600
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
GUESSES_PER_MINUTE = 10


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def peer_address(request: Request) -> str:
    """The socket's peer: fsbridge's protocol records it before uvicorn applies proxy headers."""
    peer = request.scope.get(PEER) or request.scope.get("client")
    return str(peer[0]) if peer else ""


def client_address(request: Request) -> str:
    """Who the client is: the forwarded client behind a trusted proxy (the app applies the proxy
    headers only for FORWARDED_ALLOW_IPS), else the socket's peer. For limits and logs."""
    client = request.scope.get("client")
    return str(client[0]) if client else peer_address(request)


PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def relayed(request: Request) -> bool:
    return any(name in request.headers for name in PROXY_HEADERS)


def peer_is_loopback(request: Request) -> bool:
    try:
        return ipaddress.ip_address(peer_address(request)).is_loopback
    except ValueError:  # "localhost", "testclient" and the like are names, not addresses
        return False


def host_is_loopback(request: Request) -> bool:
    host = request.headers.get("host", "")
    name = urlsplit(f"//{host}").hostname or ""
    return name in LOOPBACK_HOSTS or name.endswith(".localhost")


def require_same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser sent from another site (CSRF by form or fetch)."""
    if request.method in SAFE_METHODS:
        return
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise IntakeError(403, "cross_site_request", "Requests from other sites cannot change fsbridge.")
    origin = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
    if origin is None:
        return  # not a browser: scripts authenticate with the token
    host = request.headers.get("host", "")
    if origin in ("null", "") or urlsplit(origin).netloc.lower() != host.lower():
        raise IntakeError(403, "cross_site_request", "Requests from other sites cannot change fsbridge.")


def _origin_of(referer: str | None) -> str | None:
    if not referer:
        return None
    parts = urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "null"


@dataclass
class GuessLimiter:
    """At most `per_minute` failed token guesses a minute from one client address (in this process)."""

    per_minute: int = GUESSES_PER_MINUTE
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def check(self, client: str, now: float) -> None:
        recent = [t for t in self._failures.get(client, []) if now - t < 60]
        self._failures[client] = recent
        if len(recent) > self.per_minute:
            wait = int(60 - (now - recent[0])) + 1
            raise IntakeError(429, "too_many_attempts", f"Too many wrong tokens; try again in {wait} s.")

    def failed(self, client: str, now: float) -> None:
        if len(self._failures) > 10_000:  # bounded: forget the quietest clients first
            self._failures = dict(sorted(self._failures.items(), key=lambda kv: kv[1][-1])[-5_000:])
        self._failures.setdefault(client, []).append(now)
        del self._failures[client][: -self.per_minute - 1]  # bounded: only the recent ones matter


def check_token(request: Request, given: str) -> bool:
    """Compare a presented ops token. The right one always passes; a wrong one counts against the
    client's budget, and past it the answer is 429 (one limiter per app, in `app.state.guesses`)."""
    token = runtime_of(request).settings.ops_token
    if token is not None and hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        return True
    guesses: GuessLimiter = request.app.state.guesses
    client, now = client_address(request), time.monotonic()
    guesses.failed(client, now)
    guesses.check(client, now)
    return False


def warn_if_open_beyond_loopback(ops_token: SecretStr | None, host: str) -> bool:
    """Log a warning when ops has no token and the server listens beyond loopback; whether it did."""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if ops_token is not None or loopback:
        return False
    log.warning(
        "ops.open_without_token",
        host=host,
        message="FSBRIDGE_OPS_TOKEN is not set and fsbridge listens beyond loopback: /ops, /ops/api and /metrics "
        "answer only clients on this machine. Set FSBRIDGE_OPS_TOKEN to reach them from elsewhere.",
    )
    return True


def require_loopback(request: Request) -> None:
    if not peer_is_loopback(request) or relayed(request):
        raise IntakeError(401, "unauthenticated", "Set FSBRIDGE_OPS_TOKEN to reach /ops from other hosts.")
    if not host_is_loopback(request):
        raise IntakeError(
            403, "forbidden_host", "Without FSBRIDGE_OPS_TOKEN, /ops answers only under localhost or 127.0.0.1."
        )


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def require_ops_access(request: Request) -> None:
    """The JSON ops API and /metrics: the bearer token, or (for reading) the dashboard's signed-in
    session; without a token configured, loopback only."""
    require_same_origin(request)
    if runtime_of(request).settings.ops_token is None:
        require_loopback(request)
        log_action(request, "loopback")
        return
    given = bearer_token(request)
    if given is not None:
        if check_token(request, given):
            log_action(request, "token")
            return
    elif request.method in SAFE_METHODS and await current_session(request) is not None:
        return
    raise IntakeError(401, "unauthenticated", "Send Authorization: Bearer <FSBRIDGE_OPS_TOKEN>.")


def log_action(request: Request, how: str) -> None:
    """One line for each change an operator makes (replay, pause, resume), with who asked from where."""
    if request.method not in SAFE_METHODS:
        log.info(
            "ops.action", method=request.method, path=request.url.path[:200], client=client_address(request), by=how
        )


# -- dashboard sessions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    csrf: str
    cookie: str | None = None  # set on a session made for this request: the response must carry it


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def new_session(request: Request) -> tuple[str, Session]:
    """A fresh session: the cookie value (random, never stored) and what the store keeps of it."""
    session_id = secrets.token_urlsafe(32)
    session = Session(_hash(session_id), secrets.token_urlsafe(24), cookie=session_id)
    runtime = runtime_of(request)
    now = runtime.clock.now()
    await runtime.store.create_ops_session(session.id_hash, session.csrf, now, now + SESSION_SECONDS)
    return session_id, session


async def current_session(request: Request) -> Session | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    runtime = runtime_of(request)
    id_hash = _hash(session_id)
    csrf = await runtime.store.ops_session(id_hash, runtime.clock.now())
    return None if csrf is None else Session(id_hash, csrf)


async def end_session(request: Request) -> None:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        await runtime_of(request).store.delete_ops_session(_hash(session_id))


def check_csrf(session: Session, given: str) -> None:
    if not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise IntakeError(403, "forbidden", "The form is stale; reload /ops and try again.")
