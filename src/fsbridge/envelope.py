"""Canonical data model: the `Envelope` every flow sees, whatever the source, and `lookup`, the one
way to read a value from a payload (nested objects, dotted keys, list indices)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from fsbridge.bounds import memo_of_short


class Missing(enum.Enum):
    """A value that is absent, as opposed to present and null."""

    MISSING = enum.auto()


MISSING: Final = Missing.MISSING


@dataclass(frozen=True, slots=True)
class Envelope:
    """One stored inbound event, as the router and the flows see it."""

    event_id: str
    source: str
    stream: str
    kind: str
    dedup_key: str
    received_at: float
    payload: Any
    resolved_user_id: str | None = None  # the Segment userId found through identity links, if any
    # False when no object of the payload has a dotted key (`has_dotted_keys`): then a path that
    # is not there as nested objects is simply missing, and no lookup searches for dotted spellings.
    dotted_keys: bool = True
    # What the flow's enrich steps found, by step name (read as `$enriched.<name>.<field>`); None
    # until a delivery is enriched.
    enriched: Any = None
    user_deleted: bool = False  # the user it names was deleted (a tombstone): nothing is routed

    def get(self, path: str) -> Any:
        """The payload's value at `path`, or MISSING (see `lookup`)."""
        return lookup(self.payload, path, dotted=self.dotted_keys)


def lookup(data: Any, path: str, *, dotted: bool = True) -> Any:
    """The value at `path` ("event.event_type"), or MISSING.

    Fullstory Streams let users flatten fields with dots, so `{"event.event_type": x}` and
    `{"event": {"event_type": x}}` both answer `event.event_type`; the longest dotted key that
    exists at each level wins. A numeric segment indexes a list; any other segment applied to a
    list reads its first element (Streams can send `event` as a one-element list).
    `dotted=False` promises that `data` has no dotted keys, which spares the search for them.
    """
    return read_segments(data, _segments(path), dotted)


def read_segments(data: Any, segments: tuple[str, ...], dotted: bool) -> Any:
    """`lookup` on a path already split at its dots (compiled mappings split theirs once)."""
    node = data
    for segment in segments:
        # The common case first: plain nested objects. Dotted keys and lists take the general walk.
        if type(node) is dict:
            if segment in node:
                node = node[segment]
                continue
            if not dotted or not _has_dotted_key(node):
                return MISSING
        return _walk(data, list(segments))
    return node


def has_dotted_keys(value: Any) -> bool:
    """Whether any object in `value`, at any depth, has a key with a dot in it."""
    stack = [value]  # a loop, not recursion: once per routed event, so its cost counts
    while stack:
        node = stack.pop()
        if type(node) is dict:
            if _has_dotted_key(node):
                return True
            children: Iterable[Any] = node.values()
        elif type(node) is list:
            children = node
        else:
            continue
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append(child)
    return False


def _has_dotted_key(node: dict[Any, Any]) -> bool:
    try:
        return "." in "".join(node)  # JSON keys are strings: one join beats a generator over the keys
    except TypeError:
        return any(isinstance(key, str) and "." in key for key in node)


@memo_of_short(max_chars=256, maxsize=4096)  # paths come from the configuration and the code
def _segments(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _walk(node: Any, segments: list[str]) -> Any:
    if not segments:
        return node
    if isinstance(node, dict):
        for end in range(len(segments), 0, -1):
            key = ".".join(segments[:end])
            if key in node:
                found = _walk(node[key], segments[end:])
                if found is not MISSING:
                    return found
        return MISSING
    if isinstance(node, list) and node:
        if segments[0].isascii() and segments[0].isdigit():  # "²" is a digit to Python, not an index
            index = int(segments[0])
            return _walk(node[index], segments[1:]) if index < len(node) else MISSING
        return _walk(node[0], segments)
    return MISSING
