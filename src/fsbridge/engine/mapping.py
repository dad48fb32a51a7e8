"""The directives a flow's mapping is made of, and `resolve`, which evaluates a mapping against an
envelope. `engine.language` compiles the YAML of `config/fsbridge.yaml` into these objects; code
that needs a directive directly (identity rules) uses them too.

    Path("user.user_id", "user.uid")          the first of these paths present in the payload
    Path("user.user_email", cast="email")     ... passed through a named cast
    Meta("kind")                              a field of the envelope (kind, received_at, stream, ...)
    Const("fullstory")                        a constant
    Lookup(Meta("kind"), {"rage_click": "Rage Click Detected"})   a table lookup
    First(Path("event.event_time", cast="timestamp"), Meta("received_at", cast="timestamp"))
    StableId(Path("session.session_id"), namespace="anonymous")   a UUID derived from the value

`resolve` walks the mapping; a key whose directive resolves to MISSING is left out, and so is a
nested object that ends up empty. The output is validated into the target's request model later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from fsbridge.bounds import memo_of_short
from fsbridge.envelope import MISSING, Envelope, read_segments
from fsbridge.user_keys import stable_uuid


def _as_email(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) and value.strip() else MISSING


def _as_string(value: Any) -> Any:
    if value is None or isinstance(value, (dict, list)):  # a tuple: `dict | list` builds a union per call
        return MISSING
    return str(value)


def as_iso_timestamp(value: Any) -> Any:
    """ISO-8601 in UTC with milliseconds (the form segment-analytics-python sends), or MISSING."""
    if isinstance(value, str):
        return _iso_from_text(value)
    return _as_iso_timestamp(value)


@memo_of_short(max_chars=64, maxsize=8192)  # no timestamp is longer: the memo stays under 1 MiB
def _iso_from_text(value: str) -> Any:
    # The mapping and the request model both normalise the same strings, and events of a batch
    # share their seconds: a small cache saves most of the parsing.
    return _as_iso_timestamp(value) if len(value) <= 64 else MISSING


# Epoch numbers are read by magnitude: seconds, then milliseconds, microseconds and nanoseconds
# (senders use all four). Anything larger, or a moment outside years 1-9999 in UTC, is no timestamp.
_EPOCH_SCALES = ((1e11, 1), (1e14, 1e3), (1e17, 1e6), (1e20, 1e9))


def _as_iso_timestamp(value: Any) -> Any:
    """Never raises: a value that names no representable moment is MISSING, so the flow's fallback
    (or its validation error) decides, and one odd event cannot fail a batch."""
    moment: datetime
    if isinstance(value, bool):
        return MISSING
    if isinstance(value, int | float):
        return _from_epoch(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isascii() and text.isdigit():  # str.isdigit() is also true of "²" and "٣"
            return _from_epoch(int(text)) if len(text) <= 21 else MISSING
        try:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC).isoformat(timespec="milliseconds")
        except (ValueError, OverflowError):  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            return MISSING
    return MISSING


def _from_epoch(number: float) -> Any:
    if number != number:  # NaN
        return MISSING
    for below, per_second in _EPOCH_SCALES:
        if abs(number) < below:
            try:
                return datetime.fromtimestamp(number / per_second, tz=UTC).isoformat(timespec="milliseconds")
            except (ValueError, OverflowError, OSError):
                return MISSING
    return MISSING


Cast = Literal["email", "string", "timestamp"]
CASTS: dict[str, Callable[[Any], Any]] = {
    "email": _as_email,
    "string": _as_string,
    "timestamp": as_iso_timestamp,
}


class Directive(Protocol):
    def resolve(self, envelope: Envelope) -> Any:
        """The value for this envelope, or MISSING."""
        ...


def _cast(value: Any, cast: str | None) -> Any:
    if value is MISSING or cast is None:
        return value
    return CASTS[cast](value)


@dataclass(frozen=True)
class Path:
    paths: tuple[str, ...]
    cast: Cast | None = None
    # Split once: the identity rules read the user id of every routed click through a Path.
    segments: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __init__(self, *paths: str, cast: Cast | None = None) -> None:
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "cast", cast)
        object.__setattr__(self, "segments", tuple(tuple(path.split(".")) for path in paths))

    def resolve(self, envelope: Envelope) -> Any:
        payload, dotted, cast = envelope.payload, envelope.dotted_keys, self.cast
        for segments in self.segments:
            value = _cast(read_segments(payload, segments, dotted), cast)
            if value is not MISSING and value is not None and value != "":
                return value
        return MISSING


@dataclass(frozen=True)
class Meta:
    field: Literal["event_id", "source", "stream", "kind", "received_at", "dedup_key", "resolved_user_id"]
    cast: Cast | None = None

    def resolve(self, envelope: Envelope) -> Any:
        value = getattr(envelope, self.field)
        return MISSING if value is None else _cast(value, self.cast)


@dataclass(frozen=True)
class Const:
    value: Any

    def resolve(self, envelope: Envelope) -> Any:
        return self.value


@dataclass(frozen=True)
class Lookup:
    key: Directive
    table: Mapping[str, Any]
    default: Any = MISSING

    def resolve(self, envelope: Envelope) -> Any:
        key = self.key.resolve(envelope)
        if key is MISSING:
            return self.default
        return self.table.get(str(key), self.default)


@dataclass(frozen=True)
class First:
    options: tuple[Directive, ...]

    def __init__(self, *options: Directive) -> None:
        object.__setattr__(self, "options", options)

    def resolve(self, envelope: Envelope) -> Any:
        for option in self.options:
            value = option.resolve(envelope)
            if value is not MISSING:
                return value
        return MISSING


@dataclass(frozen=True)
class StableId:
    """A UUID derived from a value, so the same session always yields the same anonymousId."""

    of: Directive
    namespace: str = field(default="anonymous")

    def resolve(self, envelope: Envelope) -> Any:
        value = self.of.resolve(envelope)
        if value is MISSING:
            return MISSING
        return stable_uuid(self.namespace, value)


MappingSpec = Mapping[str, "Directive | MappingSpec"]


@dataclass(frozen=True)
class Filter:
    """A named predicate; `explain` says why an envelope was held back (it shows in logs and stats)."""

    name: str
    test: Callable[[Envelope], bool]
    explain: Callable[[Envelope], str]


def resolve(mapping: MappingSpec, envelope: Envelope) -> dict[str, Any]:
    """Evaluate every directive of `mapping` against `envelope`."""
    out: dict[str, Any] = {}
    for key, spec in mapping.items():
        # Directives have `resolve`; nested objects are mappings (an ABC isinstance check per key
        # would cost more than most directives).
        directive = getattr(spec, "resolve", None)
        if directive is None:
            nested = resolve(spec, envelope)  # type: ignore[arg-type]
            if nested:
                out[key] = nested
            continue
        value = directive(envelope)
        if value is not MISSING:
            out[key] = value
    return out
