"""A flow as data: the `flows.<name>` block of the configuration, and its compiler.

trigger: {source: fullstory_stream, kinds: [checkout_abandoned]}
when: [{path: event.cart_value, gte: 100}]
sample: 0.5              # keep half, chosen by the event's identity (stable across replays)
max_per_minute: 600      # hold back what exceeds this rate (counted, with the reason)
aggregate: {key: {template: "{user.user_id}|{session.session_id}"}, threshold: 3}   # once per key
target: segment.track
mapping: {event: Checkout Abandoned, userId: {path: user.user_id}, ...}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from fsbridge.config import FlowSpec
from fsbridge.engine.flow import Aggregate, Flow, RateCap, Trigger
from fsbridge.engine.language import LanguageError, Problem, compile_filters, compile_mapping
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


def compile_flow(name: str, spec: FlowSpec, functions: dict[str, Callable[[Envelope], Any]]) -> Flow:
    """The Flow a spec describes; LanguageError lists every problem with its location in the spec."""
    problems: list[Problem] = []
    mapping: MappingSpec = {}
    when: tuple[Filter, ...] = ()
    try:
        mapping = compile_mapping(spec.mapping, functions, ("mapping",))
    except LanguageError as exc:
        problems += exc.problems
    try:
        when = compile_filters(spec.when, ("when",))
    except LanguageError as exc:
        problems += exc.problems
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
        trigger=Trigger(spec.trigger.source, trigger_kinds(spec.trigger.source, spec.trigger.kinds)),
        when=when,
        mapping=mapping,
        target=TARGETS[spec.target],
        skip_unchanged=spec.skip_unchanged,
        sample=spec.sample,
        rate_cap=RateCap(spec.max_per_minute) if spec.max_per_minute else None,
        aggregate=aggregate,
    )
