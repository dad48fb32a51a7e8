"""What a compiled mapping is made of beyond `engine.mapping`'s directives: path reads that know
their metadata fields, reshaping, templates, escaping for markup targets, modifiers and named functions."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fsbridge.engine.language_casts import CASTS
from fsbridge.engine.mapping import (
    Directive,
    Meta,
)
from fsbridge.envelope import MISSING, Envelope, read_segments

ENRICHED_PREFIX = "$enriched."  # what the flow's enrich steps found: $enriched.<step>.<field>
PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


# -- compiled directives -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PathRead:
    """A path, or `$field` for envelope metadata (decided once, when the mapping is compiled)."""

    path: str

    def __post_init__(self) -> None:
        enriched = self.path.startswith(ENRICHED_PREFIX)
        meta = Meta(self.path[1:]) if self.path.startswith("$") and not enriched else None  # type: ignore[arg-type]
        object.__setattr__(self, "_meta", meta)
        object.__setattr__(self, "_enriched", enriched)
        path = self.path.removeprefix(ENRICHED_PREFIX)
        object.__setattr__(self, "_segments", tuple(path.split(".")))  # split once, not per event

    def resolve(self, envelope: Envelope) -> Any:
        meta: Meta | None = self._meta  # type: ignore[attr-defined]
        if meta is not None:
            return meta.resolve(envelope)
        if self._enriched:  # type: ignore[attr-defined]
            if envelope.enriched is None:
                return MISSING
            value = read_segments(envelope.enriched, self._segments, False)  # type: ignore[attr-defined]
        else:
            value = read_segments(envelope.payload, self._segments, envelope.dotted_keys)  # type: ignore[attr-defined]
        return MISSING if value is None or value == "" else value


@dataclass(frozen=True)
class PathsRead:
    """The first of several payload paths with a value: what `First` over `PathRead`s answers, in
    one call instead of one per path (a mapping reads most of its fields this way)."""

    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_segments", tuple(tuple(path.split(".")) for path in self.paths))

    def resolve(self, envelope: Envelope) -> Any:
        payload, dotted = envelope.payload, envelope.dotted_keys
        for segments in self._segments:  # type: ignore[attr-defined]
            value = read_segments(payload, segments, dotted)
            if value is not MISSING and value is not None and value != "":
                return value
        return MISSING


@dataclass(frozen=True)
class Reshape:
    """An object read from a path with keys renamed and dropped."""

    inner: Directive
    rename: Mapping[str, str]
    drop: frozenset[str]

    def resolve(self, envelope: Envelope) -> Any:
        value = self.inner.resolve(envelope)
        if not isinstance(value, dict):
            return value
        return {self.rename.get(k, k): v for k, v in value.items() if k not in self.drop}


@dataclass(frozen=True)
class Template:
    text: str
    escape: Callable[[str], str] | None = None  # applied to each placeholder's value, not to the text

    def resolve(self, envelope: Envelope) -> Any:
        escape = self.escape

        def fill(match: re.Match[str]) -> str:
            value = PathRead(match.group(1).strip()).resolve(envelope)
            text = "" if value is MISSING else str(value)
            return escape(text) if escape is not None else text

        return PLACEHOLDER.sub(fill, self.text)


URL_KEYS = frozenset({"url", "image_url"})  # link targets, not text: escaping would break them


@dataclass(frozen=True)
class Escaped:
    """A value from the event, with every string in it escaped for a markup target."""

    inner: Directive
    escape: Callable[[str], str]

    def resolve(self, envelope: Envelope) -> Any:
        return self._escaped(self.inner.resolve(envelope))

    def _escaped(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.escape(value)
        if isinstance(value, dict):
            return {k: v if k in URL_KEYS else self._escaped(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._escaped(v) for v in value]
        return value


@dataclass(frozen=True)
class Modified:
    """A directive with casts, a default, and an `unless` condition."""

    inner: Directive
    casts: tuple[str, ...] = ()
    default: Any = MISSING
    unless: Directive | None = None

    def resolve(self, envelope: Envelope) -> Any:
        if self.unless is not None and self.unless.resolve(envelope) is not MISSING:
            return MISSING
        value = self.inner.resolve(envelope)
        for cast in self.casts:
            if value is MISSING:
                break
            value = CASTS[cast](value)
        if value is MISSING or value == "":
            return self.default
        return value


@dataclass(frozen=True)
class NamedFunction:
    name: str
    function: Callable[[Envelope], Any]

    def resolve(self, envelope: Envelope) -> Any:
        return self.function(envelope)


Functions = Mapping[str, Callable[[Envelope], Any]]
