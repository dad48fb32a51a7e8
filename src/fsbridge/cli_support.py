"""What every `fsbridge` command shares: one-line failures, checked settings and configuration,
a reachable store, a started runtime and the --since option's parsing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import typer

from fsbridge.config import FsbridgeConfig, load_config
from fsbridge.errors import ConfigError
from fsbridge.log import configure_logging
from fsbridge.runtime import Runtime
from fsbridge.settings import Settings, load_settings
from fsbridge.store.base import store_problem


def fail(lines: list[str], code: int = 2) -> typer.Exit:
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def checked_settings() -> Settings:
    """The environment's settings, checked: a wrong variable stops the command with one line each."""
    try:
        return load_settings()
    except ConfigError as exc:
        raise fail(exc.problems) from exc


def reachable(settings: Settings) -> None:
    """Stop with one line, not a traceback, when the store cannot be reached (exit 3: try again later)."""
    problem = store_problem(settings.database_url)
    if problem is not None:
        raise fail([f"FSBRIDGE_DATABASE_URL: {problem}"], code=3)


def checked_config(settings: Settings, path: Path | None = None) -> FsbridgeConfig:
    try:
        return load_config(path or settings.config)
    except ConfigError as exc:
        raise fail(exc.problems) from exc


def with_runtime(action: Callable[[Runtime], Awaitable[None]]) -> None:
    settings = checked_settings()
    configure_logging("console", settings.secret_values(), level=30)
    runtime = Runtime(settings, checked_config(settings))
    reachable(settings)

    async def main() -> None:
        await runtime.store.open()
        try:
            await action(runtime)
        finally:
            await runtime.stop()

    asyncio.run(main())


def parse_since(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return time.time() - int(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise fail([f"--since takes an ISO-8601 time or an age such as 30m, 6h, 7d, not {text!r}."]) from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
