"""What a flow is: *on* a trigger (source + event kind), *when* its named filters pass, *enrich*
with look-ups (made when the delivery is sent), *aggregate* per key, *map* the envelope through a
mapping of directives, *send to* a target action. These are the types the engine runs, so the
engine never imports from `flows/`, which holds the built-in flows and compiles flows from the
configuration. Flows never touch HTTP: a look-up is named here and made by the enricher."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from fsbridge.engine.mapping import Directive, Filter, MappingSpec, resolve
from fsbridge.envelope import MISSING, Envelope
from fsbridge.errors import MappingError


@dataclass(frozen=True)
class Trigger:
    """Events of `source` (of these `kinds`, from these Streams when set), or of any `alternatives`."""

    source: str
    kinds: frozenset[str] = frozenset()
    streams: frozenset[str] = frozenset()
    alternatives: tuple[Trigger, ...] = ()

    def matches(self, envelope: Envelope) -> bool:
        if (
            envelope.source == self.source
            and (not self.kinds or envelope.kind in self.kinds)
            and (not self.streams or envelope.stream in self.streams)
        ):
            return True
        return any(alternative.matches(envelope) for alternative in self.alternatives)


@dataclass(frozen=True)
class TargetAction:
    """A call a flow can make: the destination and the request model its output must satisfy.

    `id_field` is the body field that carries the stable message id (Segment's messageId); None
    when the id travels in a header instead (Fullstory's Idempotency-Key). `scope_field` names
    the body field that identifies what an update is about (a uid), for redundant-call suppression.
    """

    destination: str
    action: str
    model: type[BaseModel]
    id_field: str | None = None
    exclude_none: bool = False
    scope_field: str | None = None
    escape: Callable[[str], str] | None = None  # how text read from the event is escaped (markup targets)

    def render(self, output: dict[str, Any], message_id: str) -> bytes:
        """Validate the mapped output into the request model and serialise it; MappingError if invalid."""
        values = {**output, self.id_field: message_id} if self.id_field else output
        try:
            message = self.model.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
            )
            raise MappingError(f"{self.destination}.{self.action} rejected the mapped message: {problems}") from exc
        # Serialised by pydantic's core straight to JSON, without building an intermediate dict.
        return message.model_dump_json(by_alias=True, exclude_none=self.exclude_none).encode()

    def scope_of(self, body: bytes) -> str | None:
        if self.scope_field is None:
            return None
        return f"{self.destination}.{self.action}:{orjson.loads(body)[self.scope_field]}"


@dataclass(frozen=True)
class Aggregate:
    """The aggregate stage: events are counted per `key` (and window, when set); the message is sent
    once, by the event that makes a key's count reach `threshold` (decided in the store)."""

    key: Directive
    threshold: int
    window: float | None = None
    keep_for: float = 7 * 86400.0


@dataclass(frozen=True)
class EnrichStep:
    """One look-up a flow makes before it maps: `lookup` (a name in the look-up registry) with
    `arguments` read from the event (and earlier steps), its answer readable as `$enriched.<name>`.
    A required step that finds nothing ends the delivery as filtered with the look-up's reason; an
    optional one leaves `$enriched.<name>` missing. `unless`: the step is skipped when that value is
    present (an event whose user is known needs no look-up)."""

    name: str
    lookup: str
    arguments: Mapping[str, Directive]
    required: bool = True
    unless: Directive | None = None
    cache_for: float = 300.0
    options: Mapping[str, Any] = field(default_factory=dict)  # the look-up's own settings (max_age)
    reads_earlier: bool = False  # an argument reads what an earlier step found ($enriched...)

    def applies(self, envelope: Envelope) -> bool:
        return self.unless is None or self.unless.resolve(envelope) is MISSING

    def arguments_for(self, envelope: Envelope) -> dict[str, Any]:
        """The arguments that have a value for this event (missing ones are left out)."""
        found = {name: d.resolve(envelope) for name, d in self.arguments.items()}
        return {name: value for name, value in found.items() if value is not MISSING}


@dataclass(frozen=True)
class Flow:
    name: str
    trigger: Trigger
    when: tuple[Filter, ...]
    mapping: MappingSpec
    target: TargetAction
    skip_unchanged: bool = False  # do not resend what was last delivered for the same scope
    sample: float | None = None  # keep this share of the events that pass the filters
    rate_cap: RateCap | None = None
    aggregate: Aggregate | None = None
    enrich: tuple[EnrichStep, ...] = ()
    when_enriched: tuple[Filter, ...] = ()  # filters on what the enrich steps found, at delivery time

    def held_back_by(self, envelope: Envelope) -> str | None:
        """Why this flow holds the envelope back (first failing filter, sampling, rate cap), or None."""
        for check in self.when:
            if not check.test(envelope):
                return f"{check.name}: {check.explain(envelope)}"
        if self.sample is not None and not sampled_in(envelope, self.name, self.sample):
            return f"sample: outside the sampled {self.sample:.0%}"
        if self.rate_cap is not None and not self.rate_cap.admit(envelope):
            return f"max_per_minute: over the cap of {self.rate_cap.per_minute} events a minute"
        return None

    def render(self, envelope: Envelope, message_id: str | None = None) -> bytes:
        """The target's request body; `message_id` when the caller has computed it already."""
        return self.target.render(resolve(self.mapping, envelope), message_id or stable_message_id(envelope, self.name))


class RateCap:
    """At most `per_minute` events a minute pass, by receipt time; the rest are held back.
    The count is per process: with several workers each one admits up to the cap."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._minute = -1
        self._count = 0

    def admit(self, envelope: Envelope) -> bool:
        minute = int(envelope.received_at // 60)
        if minute != self._minute:
            self._minute, self._count = minute, 0
        self._count += 1
        return self._count <= self.per_minute


def sampled_in(envelope: Envelope, flow: str, rate: float) -> bool:
    """Deterministic by event identity, so a replay samples the same events."""
    digest = hashlib.sha256(f"{envelope.source}\n{envelope.dedup_key}\n{flow}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def stable_message_id(envelope: Envelope, flow: str) -> str:
    """The same inbound event through the same flow always yields the same id (≤ 100 chars)."""
    digest = hashlib.sha256(f"{envelope.source}\n{envelope.dedup_key}\n{flow}".encode()).hexdigest()
    return f"fsb-{digest[:40]}"
