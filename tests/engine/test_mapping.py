"""Mapping directives: each resolves from the envelope, and missing values are left out."""

from __future__ import annotations

from typing import Any

import pytest

from fsbridge.engine.mapping import (
    Const,
    First,
    Lookup,
    MappingSpec,
    Meta,
    Path,
    StableId,
    as_iso_timestamp,
    resolve,
)
from fsbridge.envelope import MISSING, Envelope, lookup


def env(payload: Any) -> Envelope:
    return Envelope("evt_1", "fullstory_stream", "s", "rage_click", "k", 1_795_000_000.0, payload)


class TestLookup:
    @pytest.mark.parametrize(
        ("payload", "path", "expected"),
        [
            ({"a": {"b": 1}}, "a.b", 1),
            ({"a.b": 2}, "a.b", 2),
            ({"a": {"b.c": 3}}, "a.b.c", 3),
            ({"a.b": {"c": 4}}, "a.b.c", 4),
            ({"a": [{"b": 5}, {"b": 6}]}, "a.b", 5),
            ({"a": [{"b": 5}, {"b": 6}]}, "a.1.b", 6),
            ({"a": {"b": None}}, "a.b", None),
        ],
    )
    def test_nested_dotted_and_listed_paths(self, payload: Any, path: str, expected: Any) -> None:
        """A path reads nested objects, dotted keys, list indices, and the first element of a list."""
        assert expected == lookup(payload, path)

    @pytest.mark.parametrize(
        ("payload", "path"), [({"a": 1}, "a.b"), ({}, "a"), ({"a": []}, "a.b"), ({"a": [1]}, "a.3"), ("s", "a")]
    )
    def test_absent_paths_are_missing(self, payload: Any, path: str) -> None:
        """A path that does not exist resolves to MISSING, not None."""
        assert lookup(payload, path) is MISSING

    def test_non_ascii_digits_are_not_list_indices(self) -> None:
        """A segment such as "²" (a digit to Python, not to int()) is a missing key, not a crash."""
        assert lookup({"a": [1, 2]}, "a.²") is MISSING

    def test_dotted_key_falls_back_to_nested(self) -> None:
        """When the dotted key exists but lacks the rest of the path, the nested reading is tried."""
        assert 7 == lookup({"a.b": {}, "a": {"b": {"c": 7}}}, "a.b.c")


class TestDirectives:
    def test_path_takes_the_first_present_non_empty_value(self) -> None:
        """Path falls back through its paths, skipping missing, null and empty values."""
        assert "x" == Path("a", "b", "c").resolve(env({"a": None, "b": "", "c": "x"}))
        assert Path("a").resolve(env({})) is MISSING

    def test_path_cast(self) -> None:
        """A cast transforms the value, and a failing cast counts as missing."""
        assert "a@b.co" == Path("e", cast="email").resolve(env({"e": " A@B.co "}))
        assert "3" == Path("n", cast="string").resolve(env({"n": 3}))
        assert Path("t", cast="timestamp").resolve(env({"t": "yesterday"})) is MISSING

    def test_meta_const_lookup(self) -> None:
        """Meta reads the envelope, Const is constant, Lookup maps through a table with a default."""
        e = env({})
        assert "rage_click" == Meta("kind").resolve(e)
        assert {"x": 1} == Const({"x": 1}).resolve(e)
        assert "Rage" == Lookup(Meta("kind"), {"rage_click": "Rage"}).resolve(e)
        assert "?" == Lookup(Const("nope"), {"rage_click": "Rage"}, default="?").resolve(e)
        assert Lookup(Const("nope"), {}).resolve(e) is MISSING

    def test_first(self) -> None:
        """First returns the first present option."""
        e = env({"a": 1})
        assert 1 == First(Path("z"), Path("a"), Const(9)).resolve(e)
        assert First(Path("z"), Path("y")).resolve(e) is MISSING

    def test_stable_id_is_deterministic_per_value_and_namespace(self) -> None:
        """StableId gives the same UUID for the same value, a different one per value or namespace."""
        a = StableId(Path("s")).resolve(env({"s": "1"}))
        assert a == StableId(Path("s")).resolve(env({"s": "1"}))
        assert a != StableId(Path("s")).resolve(env({"s": "2"}))
        assert a != StableId(Path("s"), namespace="other").resolve(env({"s": "1"}))
        assert StableId(Path("nope")).resolve(env({})) is MISSING

    def test_resolve_drops_missing_keys_and_empty_objects(self) -> None:
        """Missing leaves are omitted and so are nested objects that end up empty."""
        mapping: MappingSpec = {"a": Path("x"), "b": {"c": Path("nope")}, "d": {"e": Const(0)}}
        assert {"a": 1, "d": {"e": 0}} == resolve(mapping, env({"x": 1}))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-26T10:15:02.120Z", "2026-11-26T10:15:02.120+00:00"),
        ("2026-11-26T11:15:02+01:00", "2026-11-26T10:15:02.000+00:00"),
        ("2026-11-26T10:15:02", "2026-11-26T10:15:02.000+00:00"),
        (1795000000, "2026-11-18T11:06:40.000+00:00"),
        (1795000000123, "2026-11-18T11:06:40.123+00:00"),
        ("1795000000", "2026-11-18T11:06:40.000+00:00"),
    ],
)
def test_timestamps_become_utc_iso_with_milliseconds(value: Any, expected: str) -> None:
    """ISO strings with any offset, naive ISO (taken as UTC) and epoch seconds or ms all normalise."""
    assert expected == as_iso_timestamp(value)


@pytest.mark.parametrize("value", [True, None, "", "soon", {"t": 1}])
def test_non_timestamps_are_missing(value: Any) -> None:
    """Values that are not a time are MISSING rather than an error."""
    assert as_iso_timestamp(value) is MISSING
