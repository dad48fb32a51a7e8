"""The commands that try a flow without sending anything live: test-mapping (one input), replay
(stored events through today's configuration) and backtest (what a flow would have sent)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import orjson
import typer

from fsbridge.cli_support import checked_config, checked_settings, fail, parse_since, with_runtime
from fsbridge.runtime import Runtime


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

    settings = checked_settings()
    flows = {f.name: f for f in build_flows(checked_config(settings, config))}
    if flow not in flows:
        raise fail([f"No enabled flow is called {flow!r}; flows: {', '.join(flows) or 'none'}."])
    chosen = flows[flow]
    try:
        payload = orjson.loads(input_file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise fail([f"{input_file}: cannot read JSON ({exc})."]) from exc
    try:
        envelope = envelope_for(chosen.trigger.source, payload)
    except ShapeError as exc:
        raise fail([f"{input_file}: {chosen.trigger.source} would quarantine this payload: {exc}"], code=1) from exc
    if not chosen.trigger.matches(envelope):
        kinds = ", ".join(sorted(chosen.trigger.kinds)) or "any"
        typer.echo(f"not triggered: {flow} takes {chosen.trigger.source} events of kind {kinds}, not {envelope.kind!r}")
        return
    answers = None
    if enriched is not None:
        try:
            answers = orjson.loads(enriched.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise fail([f"{enriched}: cannot read JSON ({exc})."]) from exc
        if not isinstance(answers, dict):
            raise fail([f"{enriched}: expected an object of enrich step: answer."])
    rendering = render_flow(chosen, envelope, offline_limits(chosen.target.destination), answers=answers)
    if rendering.held_back is not None:
        typer.echo(f"filtered: {rendering.held_back}")
        return
    if rendering.awaiting_lookups and rendering.body is not None:
        typer.echo("awaiting look-ups (made when the delivery is sent; --enriched FILE renders with answers):")
        typer.echo(orjson.dumps(orjson.loads(rendering.body), option=orjson.OPT_INDENT_2).decode())
        return
    if rendering.error is not None or rendering.body is None:
        raise fail([f"mapping error: {rendering.error}"], code=1)
    typer.echo(f"{chosen.target.destination}.{chosen.target.action}:")
    typer.echo(orjson.dumps(orjson.loads(rendering.body), option=orjson.OPT_INDENT_2).decode())


def replay(
    flow: Annotated[str, typer.Option(help="The flow to run the stored events through.")],
    since: Annotated[str, typer.Option(help="ISO-8601 time, or an age such as 30m, 6h, 7d.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would change.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many stored events.")] = 10_000,
) -> None:
    """Run stored events through the current configuration; show, and unless --dry-run enqueue, the changes."""
    from fsbridge.engine.replay import replay_flow

    started = parse_since(since)

    async def run(runtime: Runtime) -> None:
        chosen = next((f for f in runtime.flows if f.name == flow), None)
        if chosen is None:
            raise fail([f"No enabled flow is called {flow!r}."])

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

    with_runtime(run)


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

    started = parse_since(since)

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
                raise fail([f"No flow is called {flow!r}; flows: {known}."])
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

    with_runtime(run)
