"""A flow as data: the `flows.<name>` block of the configuration, and its compiler.

trigger: {source: fullstory_stream, kinds: [checkout_abandoned]}   # `streams: [name]`: only those Streams
also_on: [{source: fullstory, kinds: [note.created]}]              # more triggers: any of them
when: [{path: event.cart_value, gte: 100}]
sample: 0.5              # keep half, chosen by the event's identity (stable across replays)
max_per_minute: 600      # hold back what exceeds this rate (counted, with the reason)
aggregate: {key: {template: "{user.user_id}|{session.session_id}"}, threshold: 3}   # once per key
enrich:                  # look-ups made when the delivery is sent, read as $enriched.<name>.<field>
  session: {lookup: fullstory.latest_session, with: {uid: {path: userId}}, max_age: 30d}
when_enriched: [{path: $enriched.session.url, exists: true}]
target: segment.track
mapping: {event: Checkout Abandoned, userId: {path: user.user_id}, ...}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import orjson

from fsbridge.config import FlowSpec
from fsbridge.engine.flow import Aggregate, EnrichStep, Flow, RateCap, Trigger
from fsbridge.engine.language import LanguageError, compile_filters, compile_mapping
from fsbridge.engine.language_casts import Problem
from fsbridge.engine.language_nodes import ENRICHED_PREFIX
from fsbridge.engine.lookups import LOOKUP_TYPES
from fsbridge.engine.mapping import Directive, Filter, MappingSpec
from fsbridge.envelope import Envelope
from fsbridge.flows.targets import TARGETS
from fsbridge.sources.fullstory import signal_name


def trigger_kinds(source: str, kinds: list[str]) -> frozenset[str]:
    # Streams event types are normalised (Checkout Abandoned -> checkout_abandoned) like at intake.
    if source == "fullstory_stream":
        return frozenset(signal_name(k) for k in kinds)
    if source == "segment":
        return frozenset(k.strip().lower() for k in kinds)
    return frozenset(k.strip() for k in kinds)


def trigger_of(spec: FlowSpec) -> Trigger:
    """The first trigger of the spec, with the others as its alternatives."""
    triggers = [
        Trigger(t.source, trigger_kinds(t.source, t.kinds), frozenset(t.streams)) for t in [spec.trigger, *spec.also_on]
    ]
    return replace(triggers[0], alternatives=tuple(triggers[1:]))


def compile_flow(name: str, spec: FlowSpec, functions: dict[str, Callable[[Envelope], Any]]) -> Flow:
    """The Flow a spec describes; LanguageError lists every problem with its location in the spec."""
    problems: list[Problem] = []
    mapping: MappingSpec = {}
    when: tuple[Filter, ...] = ()
    when_enriched: tuple[Filter, ...] = ()
    steps = tuple(spec.enrich)
    try:
        escape = TARGETS[spec.target].escape if spec.target in TARGETS else None
        mapping = compile_mapping(spec.mapping, functions, ("mapping",), enrich_steps=steps, escape=escape)
    except LanguageError as exc:
        problems += exc.problems
    try:
        when = compile_filters(spec.when, ("when",))
    except LanguageError as exc:
        problems += exc.problems
    try:
        when_enriched = compile_filters(spec.when_enriched, ("when_enriched",), enrich_steps=steps)
    except LanguageError as exc:
        problems += exc.problems
    enrich = _enrich_steps(spec, functions, problems)
    if enrich and spec.aggregate is not None and ENRICHED_PREFIX.encode() in orjson.dumps(spec.aggregate.key):
        # The aggregate is decided when the event is dispatched, so that only the event that reaches
        # the threshold waits for look-ups; what they find is known only when it is sent.
        problems.append(
            (
                ("aggregate", "key"),
                "the aggregate is decided when the event is dispatched, before any look-up: its key cannot read "
                "$enriched (only the event that reaches the threshold is looked up)",
            )
        )
    aggregate = None
    if spec.aggregate is not None:
        try:
            key = compile_mapping({"key": spec.aggregate.key}, functions, ("aggregate",))["key"]
        except LanguageError as exc:
            problems += exc.problems
        else:
            if not hasattr(key, "resolve"):
                problems.append((("aggregate", "key"), "the key must be a directive (path, template, ...)"))
            else:
                a = spec.aggregate
                aggregate = Aggregate(cast(Directive, key), a.threshold, a.window, a.keep_for)
    if problems:
        raise LanguageError(problems)
    return Flow(
        name=name,
        trigger=trigger_of(spec),
        when=when,
        mapping=mapping,
        target=TARGETS[spec.target],
        skip_unchanged=spec.skip_unchanged,
        sample=spec.sample,
        rate_cap=RateCap(spec.max_per_minute) if spec.max_per_minute else None,
        aggregate=aggregate,
        enrich=enrich,
        when_enriched=when_enriched,
    )


def _enrich_steps(
    spec: FlowSpec, functions: dict[str, Callable[[Envelope], Any]], problems: list[Problem]
) -> tuple[EnrichStep, ...]:
    steps: list[EnrichStep] = []
    earlier: list[str] = []
    for name, step in spec.enrich.items():
        loc: tuple[str | int, ...] = ("enrich", name)
        kind = LOOKUP_TYPES.get(step.lookup)
        if kind is None:
            known = ", ".join(LOOKUP_TYPES)
            problems.append(((*loc, "lookup"), f"unknown look-up '{step.lookup}' (look-ups: {known})"))
            continue
        unknown = sorted(set(step.with_) - kind.parameters)
        if unknown or not step.with_:
            what = f"unknown argument '{unknown[0]}'" if unknown else "no arguments"
            problems.append(((*loc, "with"), f"{what} ({step.lookup} takes {', '.join(sorted(kind.parameters))})"))
            continue
        try:
            # A step may read what the steps before it found.
            arguments = compile_mapping(step.with_, functions, (*loc, "with"), enrich_steps=tuple(earlier))
            unless = None
            if step.unless is not None:
                # Compiled as a field named `skip_when`: a field named `unless` would read as a modifier.
                read = compile_mapping({"skip_when": step.unless}, functions, loc, enrich_steps=tuple(earlier))
                unless = read["skip_when"]
        except LanguageError as exc:
            problems += exc.problems
            continue
        if not all(hasattr(d, "resolve") for d in arguments.values()) or (unless and not hasattr(unless, "resolve")):
            problems.append(((*loc, "with"), "each argument (and unless) is a directive (path, template, ...)"))
            continue
        options: dict[str, Any] = {}
        if step.max_age is not None:
            options["max_age"] = step.max_age
        if step.key_accounts is not None:
            options["key_accounts"] = step.key_accounts.model_dump()
        arguments_of = {k: cast(Directive, v) for k, v in arguments.items()}
        unless_of = cast(Directive, unless) if unless is not None else None
        reads_earlier = "$enriched." in orjson.dumps([step.with_, step.unless], default=str).decode()
        steps.append(
            EnrichStep(
                name, step.lookup, arguments_of, step.required, unless_of, step.cache_for, options, reads_earlier
            )
        )
        earlier.append(name)
    return tuple(steps)
