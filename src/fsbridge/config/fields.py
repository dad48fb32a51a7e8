"""What every section of the configuration shares: the strict model (an unknown key is an error),
durations written as 30s, 15m, 2h, 7d, and trait-value lists where one value needs no list."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """`30s`, `15m`, `2h`, `7d` or a number of seconds, as seconds; anything else is left for the
    model to refuse with its line."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1)) * _UNITS[match.group(2)]
    msg = f"{value!r} is not a duration: write 30s, 15m, 2h, 7d or a number of seconds"
    raise ValueError(msg)


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _values_as_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
    return value


# Profile traits and their accepted values: `{plan: [enterprise, business]}`; one value needs no list.
TraitValues = Annotated[dict[str, list[Any]], BeforeValidator(_values_as_lists)]
