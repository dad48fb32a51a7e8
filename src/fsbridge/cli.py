"""The `fsbridge` command: serve, check-config, send-sample, dlq list|replay, jobs list|run,
score explain, users forget, init-env; it also registers test-mapping, replay and backtest, which
live in `cli_flows` beside the helpers every command shares (`cli_support`)."""

from __future__ import annotations

import gc
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
import uvicorn
from pydantic import ValidationError

from fsbridge.cli_flows import backtest, preview_mapping, replay
from fsbridge.cli_support import checked_config, checked_settings, fail, reachable, with_runtime
from fsbridge.errors import ConfigError
from fsbridge.log import configure_logging
from fsbridge.ops.users import explain_user
from fsbridge.runtime import Role, Runtime
from fsbridge.samples import SAMPLES
from fsbridge.settings import Settings

app = typer.Typer(help="fsbridge: Fullstory ⇄ Segment bridge.", no_args_is_help=True, add_completion=False)
dlq = typer.Typer(help="Dead letters: list them, replay them.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")
jobs = typer.Typer(help="Scheduled jobs: list them, run one now.", no_args_is_help=True)
app.add_typer(jobs, name="jobs")
score = typer.Typer(help="The behavioural health score (flows.health_score).", no_args_is_help=True)
app.add_typer(score, name="score")
users = typer.Typer(help="What fsbridge holds about a user: forget it for good.", no_args_is_help=True)
app.add_typer(users, name="users")

GENERATED_ENV = (
    "FSBRIDGE_FULLSTORY_WEBHOOK_SECRETS",
    "FSBRIDGE_FULLSTORY_STREAM_TOKENS",
    "FSBRIDGE_SEGMENT_WEBHOOK_SECRETS",
    "FSBRIDGE_SEGMENT_WEBHOOK_TOKENS",
    "FSBRIDGE_OPS_TOKEN",
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (env FSBRIDGE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env FSBRIDGE_PORT).")] = None,
    role: Annotated[str, typer.Option(help="all | api | worker")] = "all",
) -> None:
    """Serve the webhook endpoints and run the workers."""
    from fsbridge.app import create_app
    from fsbridge.http_protocol import ConnectionLimits, limited_protocol
    from fsbridge.ops.access import warn_if_open_beyond_loopback

    if role not in ("all", "api", "worker"):
        raise fail([f"--role must be all, api or worker, not {role!r}."])
    settings = checked_settings()
    configure_logging(settings.log_format, settings.secret_values(), cache=True)
    config = checked_config(settings)
    try:
        runtime = Runtime(settings, config, role=_role(role))
    except (ConfigError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        raise fail(problems) from exc
    reachable(settings)
    # uvicorn's own default, applied behind the webhook fast path instead of in front of it.
    app = create_app(runtime, trusted_proxies=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"))
    bind = host or settings.host
    warn_if_open_beyond_loopback(settings.ops_token, bind)
    typer.echo(_where(bind, port or settings.port, settings), err=True)
    limits = ConnectionLimits(**config.server.model_dump())
    # Everything built so far lives as long as the process: keep it out of the collector's full
    # passes, whose pauses otherwise show up as tail latency.
    gc.collect()
    gc.freeze()
    # Each event allocates a few dozen short-lived containers, nearly all freed by reference
    # counting: a young-generation pass every 700 allocations mostly finds nothing. Every 10,000
    # measured +4 % delivered events/s for the whole service and +5 % for the drain (docs/performance.md).
    gc.set_threshold(10_000, 10, 10)
    uvicorn.run(
        app,
        host=bind,
        port=port or settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # applied inside the app (create_app), not to webhooks
        http=limited_protocol(limits),
        timeout_keep_alive=int(max(1, limits.idle_timeout_seconds)),
    )


def _where(host: str, port: int, settings: Settings) -> str:
    """What a person starting the server needs first: where it listens, and how to get into /ops."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{'127.0.0.1' if shown in ('0.0.0.0', '[::]') else shown}:{port}"  # noqa: S104 - a display name
    if settings.ops_token is None:
        access = "no ops token is set: /ops answers this machine only"
    elif Path(".env").exists() and "FSBRIDGE_OPS_TOKEN" in Path(".env").read_text():
        access = "sign in with FSBRIDGE_OPS_TOKEN from .env"
    else:
        access = "sign in with FSBRIDGE_OPS_TOKEN"
    return f"fsbridge listens on http://{shown}:{port}; dashboard {base}/ops ({access}); docs: make serve-docs"


def _role(role: str) -> Role:
    return "api" if role == "api" else "worker" if role == "worker" else "all"


@app.command("check-config")
def check_config(
    path: Annotated[Path | None, typer.Argument(help="Default: FSBRIDGE_CONFIG.")] = None,
) -> None:
    """Validate the flow configuration; exit 0, or print every problem with its line."""
    settings = checked_settings()
    config = checked_config(settings, path)
    try:
        Runtime(settings, config)
    except (ConfigError, ValueError) as exc:
        raise fail(exc.problems if isinstance(exc, ConfigError) else [str(exc)]) from exc
    typer.echo(f"{path or settings.config}: OK")


@app.command("send-sample")
def send_sample(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SAMPLES)}.")],
    url: Annotated[str, typer.Option(help="Base URL of a running fsbridge.")] = "http://127.0.0.1:8000",
) -> None:
    """Post a correctly signed sample webhook to a running fsbridge."""
    if name not in SAMPLES:
        raise fail([f"Unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}."])
    settings = checked_settings()
    request = SAMPLES[name](settings, time.time())
    try:
        response = httpx.post(url.rstrip("/") + request.path, content=request.body, headers=request.headers, timeout=10)
    except httpx.HTTPError as exc:
        raise fail([f"Could not reach {url}: {exc}"], code=1) from exc
    typer.echo(f"POST {request.path} -> {response.status_code} {response.text}")
    if not response.is_success:
        raise typer.Exit(1)


@dlq.command("list")
def dlq_list(
    flow: Annotated[str | None, typer.Option(help="Only this flow.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List dead letters, newest first."""
    from fsbridge.ops.api import Operations

    async def run(runtime: Runtime) -> None:
        items = await Operations(runtime).deliveries("dead", flow, limit)
        if not items:
            typer.echo("No dead letters.")
        for item in items:
            typer.echo(
                f"{item.id}  {item.flow}  {item.destination}  attempts={item.attempts}  "
                f"status={item.last_status_code}  {item.last_error}"
            )

    with_runtime(run)


@dlq.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Delivery ids to replay.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    flow: Annotated[str | None, typer.Option(help="With --all: only this flow.")] = None,
    destination: Annotated[str | None, typer.Option(help="With --all: only this destination.")] = None,
    since: Annotated[
        str | None, typer.Option(help="With --all: created at or after (ISO 8601 or Unix seconds).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="With --all: created at or before (ISO 8601 or Unix seconds).")
    ] = None,
    status_code: Annotated[
        int | None, typer.Option(help="With --all: only those whose last answer had this status.")
    ] = None,
) -> None:
    """Replay dead letters (by id, or --all, narrowed by every filter given); each keeps its messageId."""
    from fsbridge.ops.api import Operations
    from fsbridge.ops.requests import ReplayRequest

    if not ids and not all_:
        raise fail(["Name delivery ids to replay, or pass --all."])
    try:
        request = ReplayRequest(flow=flow, destination=destination, since=since, until=until, status_code=status_code)
    except ValidationError as exc:
        raise fail([f"--{e['loc'][0]}: {str(e['msg']).removeprefix('Value error, ')}." for e in exc.errors()]) from exc

    async def run(runtime: Runtime) -> None:
        operations = Operations(runtime)
        if all_:
            typer.echo(f"Replayed {await operations.replay_all('dead', flow, request.narrower())} dead letters.")
            return
        for delivery_id in ids or []:
            done = await operations.replay(delivery_id)
            typer.echo(f"{delivery_id}: {'replaying' if done else 'not found, already pending, or never rendered'}")

    with_runtime(run)


@jobs.command("list")
def jobs_list() -> None:
    """Every job: enabled, interval, last run and outcome, what it counted, next run."""

    async def run(runtime: Runtime) -> None:
        for item in await runtime.scheduler.states():
            counts = " ".join(f"{k}={v}" for k, v in item["last_counts"].items())
            typer.echo(
                f"{item['name']}  {'enabled' if item['enabled'] else 'disabled'}  every={item['every']:g}s  "
                f"last_started={_moment(item['last_started_at'])}  last_finished={_moment(item['last_finished_at'])}  "
                f"outcome={item['last_outcome'] or '-'}  {counts}  next={_moment(item['next_run_at'])}".rstrip()
            )

    with_runtime(run)


@jobs.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(help="The job's name (see `fsbridge jobs list`).")],
    allow_mass_exit: Annotated[
        bool,
        typer.Option(
            "--allow-mass-exit",
            help="fullstory_segment_audiences: apply this run even if more than max_exit_fraction of a segment leaves.",
        ),
    ] = False,
) -> None:
    """Run one job now, here, unless a run of it is already in progress somewhere."""
    from fsbridge.jobs.fullstory_segment_audiences import ALLOW_MASS_EXIT

    options = frozenset({ALLOW_MASS_EXIT}) if allow_mass_exit else frozenset()

    async def run(runtime: Runtime) -> None:
        if name not in runtime.scheduler.jobs:
            raise fail([f"No job is called {name!r}; jobs: {', '.join(sorted(runtime.scheduler.jobs))}."])
        result = await runtime.scheduler.run_now(name, options)
        if not result.ran:
            raise fail([f"{name} is running elsewhere right now; try again when it has finished."], code=1)
        counts = " ".join(f"{k}={v}" for k, v in (result.counts or {}).items())
        typer.echo(f"{name}: {result.outcome} {counts}".rstrip())
        if result.outcome != "ok":
            raise typer.Exit(1)

    with_runtime(run)


@users.command("forget")
def users_forget(
    user_id: Annotated[str, typer.Argument(help="The Segment userId (surrounding spaces are ignored).")],
) -> None:
    """Remove everything fsbridge holds that names the user, and keep only a tombstone (a keyed hash)
    so that nothing more is sent about them, as a Segment deletion request does. Fullstory's own copy
    is deleted by the segment_delete_to_fullstory_user flow when the request comes from Segment."""
    if not user_id.strip():
        raise fail(["Name the userId to forget."])

    async def run(runtime: Runtime) -> None:
        from fsbridge.engine.stages.profiles import forget_request

        counts = await runtime.store.forget_user(forget_request(user_id, runtime.router.identity), runtime.clock.now())
        removed = ", ".join(f"{kind}={count}" for kind, count in counts.items())
        typer.echo(f"Forgotten: {removed}; a tombstone keeps anything more being sent about this user.")

    with_runtime(run)


@score.command("explain")
def score_explain(
    user_id: Annotated[
        str, typer.Argument(help="A Segment userId (or a:<anonymousId> for a user Segment does not know).")
    ],
) -> None:
    """Every contribution to a user's score (signal, when, weight, decayed value) and the result."""

    async def run(runtime: Runtime) -> None:
        explained = await explain_user(runtime, user_id)
        if explained is None:
            raise fail([f"No score is kept for {user_id!r} (no signal seen, or flows.health_score is off)."], code=1)
        for c in explained["contributions"]:
            typer.echo(f"{c['signal']:<16} {c['at']}  weight {c['weight']:g}  decayed {c['value']:.2f}")
        typer.echo(f"score {explained['score']} ({explained['band']}) = clamp(0, 100, round(100 - "
                   f"{explained['total']:.2f})), half-life {explained['half_life_seconds']:g} s")  # fmt: skip

    with_runtime(run)


def _moment(value: float | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


app.command("test-mapping")(preview_mapping)
app.command()(replay)
app.command()(backtest)


@app.command("init-env")
def init_env(path: Annotated[Path, typer.Option(help="Where to write.")] = Path(".env")) -> None:
    """Write fresh random webhook secrets, stream tokens, an ops token and a PostgreSQL password to .env:
    a new file, or the ones a file (a copied .env.example) leaves empty or out. Never overwrites a value."""
    generated = (*GENERATED_ENV, "POSTGRES_PASSWORD")
    lines = (
        path.read_text(encoding="utf-8").splitlines()
        if path.exists()
        else ["# Written by `fsbridge init-env`; keep it secret. Real environment variables win."]
    )
    filled = []
    for name in generated:
        value = secrets.token_urlsafe(32)
        at = next((i for i, line in enumerate(lines) if line.split("=", 1)[0].strip() == name), None)
        if at is None:
            lines.append(f"{name}={value}")
        elif lines[at].partition("=")[2].strip():
            continue  # a value someone set: kept
        else:
            lines[at] = f"{name}={value}"
        filled.append(name)
    if not filled:
        typer.echo(f"{path} has every secret fsbridge generates; keeping it.")
        return
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    typer.echo(f"Wrote fresh values for {', '.join(filled)} to {path.resolve()}.")


def main() -> None:
    app(prog_name="fsbridge")


if __name__ == "__main__":
    main()
