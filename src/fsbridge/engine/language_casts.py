"""What the flow language does to one value: the casts a directive may name (`cast: integer`) and
the predicates a filter may test (`gt: 3`, `matches: ...`), each a small function on that value."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Any

from fsbridge.engine.mapping import (
    CASTS as BASIC_CASTS,
)
from fsbridge.envelope import MISSING

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]


# -- casts ------------------------------------------------------------------------------------------


def _integer(value: Any) -> Any:
    if isinstance(value, bool):
        return MISSING
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return MISSING
        return int(number) if number.is_integer() else MISSING
    return MISSING


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return MISSING
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return MISSING
        return number if math.isfinite(number) else MISSING
    return MISSING


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off", ""):
            return False
    return MISSING


def _text_cast(transform: Callable[[str], str]) -> Callable[[Any], Any]:
    return lambda value: transform(value) if isinstance(value, str) else MISSING


def _email_sha256(value: Any) -> Any:
    email = BASIC_CASTS["email"](value)
    return MISSING if email is MISSING else hashlib.sha256(email.encode()).hexdigest()


CASTS: dict[str, Callable[[Any], Any]] = {
    "string": BASIC_CASTS["string"],
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "timestamp": BASIC_CASTS["timestamp"],
    "lowercase": _text_cast(str.lower),
    "uppercase": _text_cast(str.upper),
    "trim": _text_cast(str.strip),
    "email": BASIC_CASTS["email"],
    "email_sha256": _email_sha256,
}


# -- filter predicates -------------------------------------------------------------------------------


def _equals(arg: Any, loc: Loc, problems: list[Problem]) -> Callable[[Any], bool]:
    return lambda value: value is not MISSING and value == arg


def _one_of(arg: Any, loc: Loc, problems: list[Problem]) -> Callable[[Any], bool]:
    if not isinstance(arg, list) or not arg:
        problems.append((loc, "one_of takes a non-empty list"))
        return lambda value: False
    allowed = list(arg)
    return lambda value: value is not MISSING and value in allowed


def _matches(arg: Any, loc: Loc, problems: list[Problem]) -> Callable[[Any], bool]:
    try:
        pattern = re.compile(str(arg))
    except re.error as exc:
        problems.append((loc, f"invalid regular expression: {exc}"))
        return lambda value: False
    return lambda value: isinstance(value, str) and pattern.search(value) is not None


def _exists(arg: Any, loc: Loc, problems: list[Problem]) -> Callable[[Any], bool]:
    if not isinstance(arg, bool):
        problems.append((loc, "exists takes true or false"))
    wanted = bool(arg)
    return lambda value: (value is not MISSING) == wanted


def _compare(op: Callable[[float, float], bool]) -> Callable[[Any, Loc, list[Problem]], Callable[[Any], bool]]:
    def build(arg: Any, loc: Loc, problems: list[Problem]) -> Callable[[Any], bool]:
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            problems.append((loc, "numeric comparisons take a number"))
            return lambda value: False

        def check(value: Any) -> bool:
            number = _number(value)
            return number is not MISSING and op(number, arg)

        return check

    return build


PREDICATES: dict[str, Callable[[Any, Loc, list[Problem]], Callable[[Any], bool]]] = {
    "equals": _equals,
    "one_of": _one_of,
    "matches": _matches,
    "exists": _exists,
    "gt": _compare(lambda a, b: a > b),
    "gte": _compare(lambda a, b: a >= b),
    "lt": _compare(lambda a, b: a < b),
    "lte": _compare(lambda a, b: a <= b),
}
