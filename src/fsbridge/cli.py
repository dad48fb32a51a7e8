"""The `fsbridge` command: serve, check-config, send-sample, dlq list|replay, init-env."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import httpx
import typer
import uvicorn

from fsbridge.config import FsbridgeConfig, load_config
from fsbridge.errors import ConfigError
from fsbridge.log import configure_logging
from fsbridge.runtime import Role, Runtime
from fsbridge.samples import SAMPLES
from fsbridge.settings import Settings

app = typer.Typer(help="fsbridge: Fullstory ⇄ Segment bridge.", no_args_is_help=True, add_completion=False)
dlq = typer.Typer(help="Dead letters: list them, replay them.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")

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

    if role not in ("all", "api", "worker"):
        raise _fail([f"--role must be all, api or worker, not {role!r}."])
    settings = Settings()
    configure_logging(settings.log_format, settings.secret_values())
    config = _load(settings)
    try:
        runtime = Runtime(settings, config, role=_role(role))
    except (ConfigError, ValueError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        raise _fail(problems) from exc
    uvicorn.run(
        create_app(runtime),
        host=host or settings.host,
        port=port or settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def _role(role: str) -> Role:
    return "api" if role == "api" else "worker" if role == "worker" else "all"


@app.command("check-config")
def check_config(
    path: Annotated[Path | None, typer.Argument(help="Default: FSBRIDGE_CONFIG.")] = None,
) -> None:
    """Validate the flow configuration; exit 0, or print every problem with its line."""
    settings = Settings()
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
    settings = Settings()
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
) -> None:
    """Replay dead letters (by id, or --all); each keeps its messageId."""
    from fsbridge.ops.api import Operations

    if not ids and not all_:
        raise _fail(["Name delivery ids to replay, or pass --all."])

    async def run(runtime: Runtime) -> None:
        operations = Operations(runtime)
        if all_:
            typer.echo(f"Replayed {await operations.replay_all('dead', flow)} dead letters.")
            return
        for delivery_id in ids or []:
            done = await operations.replay(delivery_id)
            typer.echo(f"{delivery_id}: {'replaying' if done else 'not found or already pending'}")

    _with_runtime(run)


def _with_runtime(action: Callable[[Runtime], Awaitable[None]]) -> None:
    settings = Settings()
    configure_logging("console", settings.secret_values(), level=30)
    runtime = Runtime(settings, _load(settings))

    async def main() -> None:
        await runtime.store.open()
        try:
            await action(runtime)
        finally:
            await runtime.stop()

    asyncio.run(main())


@app.command("init-env")
def init_env(path: Annotated[Path, typer.Option(help="Where to write.")] = Path(".env")) -> None:
    """Write fresh random webhook secrets, stream tokens and an ops token to .env (never overwrites)."""
    if path.exists():
        typer.echo(f"{path} exists; keeping it.")
        return
    lines = ["# Written by `fsbridge init-env`; keep it secret. Real environment variables win."]
    lines += [f"{name}={secrets.token_urlsafe(32)}" for name in GENERATED_ENV]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    typer.echo(f"Wrote fresh webhook secrets, stream tokens and an ops token to {path.resolve()}.")


def main() -> None:
    app(prog_name="fsbridge")


if __name__ == "__main__":
    main()
