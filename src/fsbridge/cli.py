"""The `fsbridge` command: serve, check-config, test-mapping, replay, backtest, send-sample,
dlq list|replay, jobs list|run, init-env."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import orjson
import typer
import uvicorn
from pydantic import ValidationError

from fsbridge.config import FsbridgeConfig, load_config
from fsbridge.errors import ConfigError
from fsbridge.log import configure_logging
from fsbridge.ops.users import explain_user
from fsbridge.runtime import Role, Runtime
from fsbridge.samples import SAMPLES
from fsbridge.settings import Settings, load_settings
from fsbridge.store.base import store_problem

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


def _fail(lines: list[str], code: int = 2) -> typer.Exit:
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def _settings() -> Settings:
    """The environment's settings, checked: a wrong variable stops the command with one line each."""
    try:
        return load_settings()
    except ConfigError as exc:
        raise _fail(exc.problems) from exc


def _reachable(settings: Settings) -> None:
    """Stop with one line, not a traceback, when the store cannot be reached (exit 3: try again later)."""
    problem = store_problem(settings.database_url)
    if problem is not None:
        raise _fail([f"FSBRIDGE_DATABASE_URL: {problem}"], code=3)


def _load(settings: Settings, path: Path | None = None) -> FsbridgeConfig:
    try:
        return load_config(path or settings.config)
    except ConfigError as exc:
        raise _fail(exc.problems) from exc


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
        raise _fail([f"--role must be all, api or worker, not {role!r}."])
    settings = _settings()
    configure_logging(settings.log_format, settings.secret_values(), cache=True)
    config = _load(settings)
    try:
        runtime = Runtime(settings, config, role=_role(role))
    except (ConfigError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        raise _fail(problems) from exc
    _reachable(settings)
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
    settings = _settings()
    config = _load(settings, path)
    try:
        Runtime(settings, config)
    except (ConfigError, ValueError) as exc:
        raise _fail(exc.problems if isinstance(exc, ConfigError) else [str(exc)]) from exc
    typer.echo(f"{path or settings.config}: OK")


@app.command("send-sample")
def send_sample(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SAMPLES)}.")],
    url: Annotated[str, typer.Option(help="Base URL of a running fsbridge.")] = "http://127.0.0.1:8000",
) -> None:
    """Post a correctly signed sample webhook to a running fsbridge."""
    if name not in SAMPLES:
        raise _fail([f"Unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}."])
    settings = _settings()
    request = SAMPLES[name](settings, time.time())
    try:
        response = httpx.post(url.rstrip("/") + request.path, content=request.body, headers=request.headers, timeout=10)
    except httpx.HTTPError as exc:
        raise _fail([f"Could not reach {url}: {exc}"], code=1) from exc
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

    _with_runtime(run)


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
        raise _fail(["Name delivery ids to replay, or pass --all."])
    try:
        request = ReplayRequest(flow=flow, destination=destination, since=since, until=until, status_code=status_code)
    except ValidationError as exc:
        raise _fail([f"--{e['loc'][0]}: {str(e['msg']).removeprefix('Value error, ')}." for e in exc.errors()]) from exc

    async def run(runtime: Runtime) -> None:
        operations = Operations(runtime)
        if all_:
            typer.echo(f"Replayed {await operations.replay_all('dead', flow, request.narrower())} dead letters.")
            return
        for delivery_id in ids or []:
            done = await operations.replay(delivery_id)
            typer.echo(f"{delivery_id}: {'replaying' if done else 'not found, already pending, or never rendered'}")

    _with_runtime(run)


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

    _with_runtime(run)


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
            raise _fail([f"No job is called {name!r}; jobs: {', '.join(sorted(runtime.scheduler.jobs))}."])
        result = await runtime.scheduler.run_now(name, options)
        if not result.ran:
            raise _fail([f"{name} is running elsewhere right now; try again when it has finished."], code=1)
        counts = " ".join(f"{k}={v}" for k, v in (result.counts or {}).items())
        typer.echo(f"{name}: {result.outcome} {counts}".rstrip())
        if result.outcome != "ok":
            raise typer.Exit(1)

    _with_runtime(run)


@users.command("forget")
def users_forget(
    user_id: Annotated[str, typer.Argument(help="The Segment userId (surrounding spaces are ignored).")],
) -> None:
    """Remove everything fsbridge holds that names the user, and keep only a tombstone (a keyed hash)
    so that nothing more is sent about them, as a Segment deletion request does. Fullstory's own copy
    is deleted by the segment_delete_to_fullstory_user flow when the request comes from Segment."""
    if not user_id.strip():
        raise _fail(["Name the userId to forget."])

    async def run(runtime: Runtime) -> None:
        from fsbridge.engine.stages.profiles import forget_request

        counts = await runtime.store.forget_user(forget_request(user_id, runtime.router.identity), runtime.clock.now())
        removed = ", ".join(f"{kind}={count}" for kind, count in counts.items())
        typer.echo(f"Forgotten: {removed}; a tombstone keeps anything more being sent about this user.")

    _with_runtime(run)


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
            raise _fail([f"No score is kept for {user_id!r} (no signal seen, or flows.health_score is off)."], code=1)
        for c in explained["contributions"]:
            typer.echo(f"{c['signal']:<16} {c['at']}  weight {c['weight']:g}  decayed {c['value']:.2f}")
        typer.echo(f"score {explained['score']} ({explained['band']}) = clamp(0, 100, round(100 - "
                   f"{explained['total']:.2f})), half-life {explained['half_life_seconds']:g} s")  # fmt: skip

    _with_runtime(run)


def _moment(value: float | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_runtime(action: Callable[[Runtime], Awaitable[None]]) -> None:
    settings = _settings()
    configure_logging("console", settings.secret_values(), level=30)
    runtime = Runtime(settings, _load(settings))
    _reachable(settings)

    async def main() -> None:
        await runtime.store.open()
        try:
            await action(runtime)
        finally:
            await runtime.stop()

    asyncio.run(main())


@app.command("test-mapping")
def preview_mapping(
    flow: Annotated[str, typer.Argument(help="The flow's name.")],
    input_file: Annotated[Path, typer.Argument(help="A JSON payload as the flow's source would send it.")],
    config: Annotated[Path | None, typer.Option(help="Default: FSBRIDGE_CONFIG.")] = None,
    enriched: Annotated[
        Path | None,
        typer.Option(help="JSON answers for the flow's look-ups, by enrich step (null: nothing found)."),
    ] = None,
) -> None:
    """Print what a flow would send for an input (or why it holds it back). Nothing is sent or stored,
    and no look-up is made: a flow that enriches shows its plan, or renders with --enriched answers."""
    from fsbridge.engine.rendering import offline_limits, render_flow
    from fsbridge.flows import build_flows
    from fsbridge.sources.envelopes import envelope_for
    from fsbridge.sources.fullstory import ShapeError

    settings = _settings()
    flows = {f.name: f for f in build_flows(_load(settings, config))}
    if flow not in flows:
        raise _fail([f"No enabled flow is called {flow!r}; flows: {', '.join(flows) or 'none'}."])
    chosen = flows[flow]
    try:
        payload = orjson.loads(input_file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise _fail([f"{input_file}: cannot read JSON ({exc})."]) from exc
    try:
        envelope = envelope_for(chosen.trigger.source, payload)
    except ShapeError as exc:
        raise _fail([f"{input_file}: {chosen.trigger.source} would quarantine this payload: {exc}"], code=1) from exc
    if not chosen.trigger.matches(envelope):
        kinds = ", ".join(sorted(chosen.trigger.kinds)) or "any"
        typer.echo(f"not triggered: {flow} takes {chosen.trigger.source} events of kind {kinds}, not {envelope.kind!r}")
        return
    answers = None
    if enriched is not None:
        try:
            answers = orjson.loads(enriched.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise _fail([f"{enriched}: cannot read JSON ({exc})."]) from exc
        if not isinstance(answers, dict):
            raise _fail([f"{enriched}: expected an object of enrich step: answer."])
    rendering = render_flow(chosen, envelope, offline_limits(chosen.target.destination), answers=answers)
    if rendering.held_back is not None:
        typer.echo(f"filtered: {rendering.held_back}")
        return
    if rendering.awaiting_lookups and rendering.body is not None:
        typer.echo("awaiting look-ups (made when the delivery is sent; --enriched FILE renders with answers):")
        typer.echo(orjson.dumps(orjson.loads(rendering.body), option=orjson.OPT_INDENT_2).decode())
        return
    if rendering.error is not None or rendering.body is None:
        raise _fail([f"mapping error: {rendering.error}"], code=1)
    typer.echo(f"{chosen.target.destination}.{chosen.target.action}:")
    typer.echo(orjson.dumps(orjson.loads(rendering.body), option=orjson.OPT_INDENT_2).decode())


@app.command()
def replay(
    flow: Annotated[str, typer.Option(help="The flow to run the stored events through.")],
    since: Annotated[str, typer.Option(help="ISO-8601 time, or an age such as 30m, 6h, 7d.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would change.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many stored events.")] = 10_000,
) -> None:
    """Run stored events through the current configuration; show, and unless --dry-run enqueue, the changes."""
    from fsbridge.engine.replay import replay_flow

    started = _parse_since(since)

    async def run(runtime: Runtime) -> None:
        chosen = next((f for f in runtime.flows if f.name == flow), None)
        if chosen is None:
            raise _fail([f"No enabled flow is called {flow!r}."])

        items = await replay_flow(
            runtime.store,
            chosen,
            started,
            resolve_identities=runtime.worker.resolve_identities,
            apply=not dry_run,
            limits=runtime.router.destinations[chosen.target.destination],
            now=runtime.clock.now(),
            limit=limit,
        )
        counts: dict[str, int] = {}
        for item in items:
            counts[item.outcome] = counts.get(item.outcome, 0) + 1
            if item.outcome == "unchanged":
                continue
            typer.echo(f"{item.event_id}: {item.outcome}{': ' + item.detail if item.detail else ''}")
            for line in item.diff:
                typer.echo(f"    {line}")
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no stored events"
        action = (
            "nothing enqueued (--dry-run)" if dry_run else f"{counts.get('changed', 0) + counts.get('new', 0)} enqueued"
        )
        typer.echo(f"{flow} since {since}: {summary}; {action}.")

    _with_runtime(run)


@app.command()
def backtest(
    flow: Annotated[str, typer.Argument(help="The flow's name (an aggregation flow too); it need not be enabled.")],
    since: Annotated[str, typer.Option(help="ISO-8601 time, or an age such as 30m, 6h, 7d.")] = "7d",
    limit: Annotated[int, typer.Option(help="At most this many stored events.")] = 100_000,
) -> None:
    """Run a flow over the stored raw events and print what it would have sent. Reads only."""
    from fsbridge.engine.backtest import backtest_flow
    from fsbridge.engine.dispatch import envelope_of
    from fsbridge.flows import build_flow, flow_specs
    from fsbridge.flows.aggregations.backtest import PER_USER_FLOWS, backtest_feature_adoption, backtest_user_flow

    started = _parse_since(since)

    async def run(runtime: Runtime) -> None:
        if flow in (*PER_USER_FLOWS, "feature_adoption"):
            stored = [envelope_of(e) for e in await runtime.store.list_inbox(started, limit)]
            envelopes = await runtime.worker.resolve_identities(stored)
            flows, identity = runtime.config.flows, runtime.config.identity
            if flow == "feature_adoption":
                result = backtest_feature_adoption(flows.feature_adoption, identity, envelopes, time.time())
                target = "alert"
                if not flows.feature_adoption.cohorts.counts_all:
                    typer.echo("Cohorts are backtested as `all`: their members are known as of today, not then.")
            else:
                result = backtest_user_flow(flows, identity, flow, envelopes)
                target = "segment"
        else:
            chosen = build_flow(runtime.config, flow)
            if chosen is None:
                known = ", ".join([*PER_USER_FLOWS, "feature_adoption", *flow_specs(runtime.config)])
                raise _fail([f"No flow is called {flow!r}; flows: {known}."])
            result = await backtest_flow(
                runtime.store,
                chosen,
                started,
                resolve_identities=runtime.worker.resolve_identities,
                limits=runtime.router.destinations[chosen.target.destination],
                limit=limit,
            )
            target = f"{chosen.target.destination}.{chosen.target.action}"
        sent = result.would_send.total()
        typer.echo(f"{flow} over {result.events} stored events since {since}: would send {sent}, "
                   f"hold back {result.held_back.total()}, fail {result.errors.total()}.")  # fmt: skip
        for label, counts in (("would send", result.would_send), ("held back by", result.held_back)):
            for name, count in counts.most_common():
                typer.echo(f"  {label} {name}: {count}")
        for error, count in result.errors.most_common(5):
            typer.echo(f"  error ({count}): {error}")
        for n, example in enumerate(result.examples, 1):
            typer.echo(f"example {n}, {target}:")
            typer.echo(orjson.dumps(example, option=orjson.OPT_INDENT_2).decode())

    _with_runtime(run)


def _parse_since(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return time.time() - int(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _fail([f"--since takes an ISO-8601 time or an age such as 30m, 6h, 7d, not {text!r}."]) from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


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
