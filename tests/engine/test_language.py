"""The flow language: every directive, cast and filter, valid and invalid, with the exact error text."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import pytest

from fsbridge.engine.language import LanguageError, compile_filters, compile_mapping
from fsbridge.engine.mapping import resolve
from fsbridge.envelope import MISSING, Envelope
from fsbridge.targets.slack import escape_mrkdwn

PAYLOAD: dict[str, Any] = {
    "data": {
        "author": "ada@example.com",
        "text": "  Look at this  ",
        "count": "42",
        "ratio": "0.5",
        "flag": "yes",
        "when": 1795000000,
        "email": " Ada@Example.COM ",
        "props": {"keep": 1, "old_name": 2, "secret": 3},
        "empty": "",
    },
    "event.event_type": "rage-click",
}


def env(payload: Any = PAYLOAD) -> Envelope:
    return Envelope("evt_1", "fullstory", "s", "note.created", "k1", 1_795_000_000.0, payload, resolved_user_id="u9")


def out(mapping: dict[str, Any], payload: Any = PAYLOAD) -> dict[str, Any]:
    return resolve(compile_mapping(mapping, {"shout": lambda e: "HI"}), env(payload))


def errors(mapping: Any) -> list[str]:
    with pytest.raises(LanguageError) as caught:
        compile_mapping(mapping, {"shout": lambda e: "HI"})
    return [f"{'.'.join(map(str, loc))}: {message}" for loc, message in caught.value.problems]


class TestDirectives:
    def test_constants_and_nested_objects(self) -> None:
        """Plain scalars are constants; dicts without a directive are nested output objects."""
        assert {"a": "x", "b": {"c": 3, "d": True}} == out({"a": "x", "b": {"c": 3, "d": True}})

    def test_path_nested_dotted_and_fallback(self) -> None:
        """path reads nested and dotted keys; a list of paths takes the first present one."""
        assert {"a": "ada@example.com", "b": "rage-click", "c": "ada@example.com"} == out(
            {"a": {"path": "data.author"}, "b": {"path": "event.event_type"}, "c": {"path": ["nope", "data.author"]}}
        )

    def test_missing_null_and_empty_are_left_out(self) -> None:
        """A path that is missing, null or empty leaves the field out."""
        assert {} == out({"a": {"path": "nope"}, "b": {"path": "data.empty"}})

    def test_metadata(self) -> None:
        """$kind, $source, $received_at, $resolved_user_id... read the envelope."""
        assert {"k": "note.created", "s": "fullstory", "r": 1_795_000_000.0, "u": "u9"} == out(
            {
                "k": {"path": "$kind"},
                "s": {"path": "$source"},
                "r": {"path": "$received_at"},
                "u": {"path": "$resolved_user_id"},
            }
        )

    def test_const_keeps_objects_that_look_like_directives(self) -> None:
        """const returns its value as is, even an object with directive-like keys."""
        assert {"a": {"path": "not read"}} == out({"a": {"const": {"path": "not read"}}})

    def test_template(self) -> None:
        """template fills {path} placeholders; a missing one renders empty."""
        assert {"t": "Note by ada@example.com on note.created ()"} == out(
            {"t": {"template": "Note by {data.author} on {$kind} ({nope})"}}
        )

    def test_lookup(self) -> None:
        """lookup maps a value through a table, with a default for unknown keys."""
        table = {"note.created": "Session Note Added"}
        assert {"a": "Session Note Added", "b": "?"} == out(
            {"a": {"lookup": "$kind", "table": table}, "b": {"lookup": "data.author", "table": table, "default": "?"}}
        )

    def test_first(self) -> None:
        """first takes the first present of its values, constants included."""
        assert {"a": "ada@example.com", "b": "fallback"} == out(
            {"a": {"first": [{"path": "nope"}, {"path": "data.author"}]}, "b": {"first": [{"path": "x"}, "fallback"]}}
        )

    def test_stable_id_and_unless(self) -> None:
        """stable_id gives the same UUID for the same value; unless suppresses it when a value exists."""
        first = out({"id": {"stable_id": "data.author", "namespace": "people"}})["id"]
        assert first == out({"id": {"stable_id": "data.author", "namespace": "people"}})["id"]
        assert first != out({"id": {"stable_id": "data.author"}})["id"]
        assert {} == out({"id": {"stable_id": "data.author", "unless": "data.text"}})
        assert "id" in out({"id": {"stable_id": "data.author", "unless": "nope"}})

    def test_function(self) -> None:
        """function calls a named function of the envelope."""
        assert {"a": "HI"} == out({"a": {"function": "shout"}})

    def test_default(self) -> None:
        """default fills a missing value, and a value whose cast failed."""
        assert {"a": "n/a", "b": 0} == out(
            {"a": {"path": "nope", "default": "n/a"}, "b": {"path": "data.author", "cast": "integer", "default": 0}}
        )

    def test_rename_and_drop(self) -> None:
        """rename and drop reshape an object read by path."""
        assert {"p": {"keep": 1, "new_name": 2}} == out(
            {"p": {"path": "data.props", "rename": {"old_name": "new_name"}, "drop": ["secret"]}}
        )


@pytest.mark.parametrize(
    ("path", "cast", "expected"),
    [
        ("data.count", "integer", 42),
        ("data.ratio", "integer", MISSING),
        ("data.ratio", "number", 0.5),
        ("data.count", "number", 42.0),
        ("data.flag", "boolean", True),
        ("data.when", "timestamp", "2026-11-18T11:06:40.000+00:00"),
        ("data.when", "string", "1795000000"),
        ("data.text", "trim", "Look at this"),
        ("data.author", "uppercase", "ADA@EXAMPLE.COM"),
        ("data.email", "lowercase", " ada@example.com "),
        ("data.email", "email", "ada@example.com"),
        ("data.email", "email_sha256", hashlib.sha256(b"ada@example.com").hexdigest()),
        ("data.props", "string", MISSING),
        ("data.author", "boolean", MISSING),
    ],
)
def test_casts(path: str, cast: str, expected: Any) -> None:
    """Each cast converts what it can; what it cannot is missing."""
    result = out({"v": {"path": path, "cast": cast}})
    assert expected == result.get("v", MISSING)


def test_cast_chain() -> None:
    """A list of casts applies in order."""
    assert {"v": "LOOK AT THIS"} == out({"v": {"path": "data.text", "cast": ["trim", "uppercase"]}})


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"page_url": {"pathh": "event.url"}}, "mapping.page_url: unknown directive 'pathh' (did you mean 'path'?)"),
        (
            {"a": {"cast": "string"}},
            "mapping.a: 'cast' modifies a directive, and there is none (path, const, template, lookup, first, stable_id, function)",
        ),
        ({"a": {"path": "x", "const": 1}}, "mapping.a: one directive per value, found path, const"),
        ({"a": {"lookupp": "x"}}, "mapping.a: unknown directive 'lookupp' (did you mean 'lookup'?)"),
        (
            {"a": {"path": "x", "table": {}}},
            "mapping.a.table: 'table' is not an option of path (options: cast, default, drop, rename, trusted, unless)",
        ),
        (
            {"a": {"path": "x", "cast": "float"}},
            "mapping.a.cast: unknown cast 'float' (casts: string, integer, number, boolean, timestamp, lowercase, uppercase, trim, email, email_sha256)",
        ),
        ({"a": {"path": 3}}, "mapping.a.path: path takes a string or a list of strings"),
        ({"a": {"path": ""}}, "mapping.a.path: a path cannot be empty"),
        (
            {"a": {"path": "$nope"}},
            "mapping.a.path: unknown metadata '$nope' (metadata: $event_id, $source, $stream, $kind, $received_at, $dedup_key, $resolved_user_id, $enriched.<step>)",
        ),
        ({"a": {"template": 5}}, "mapping.a.template: template takes a string with {path} placeholders"),
        ({"a": {"lookup": "x"}}, "mapping.a.table: lookup needs a non-empty table of key: value"),
        ({"a": {"first": []}}, "mapping.a.first: first takes a non-empty list of values"),
        ({"a": {"stable_id": 5}}, "mapping.a.stable_id: expected a path or a directive"),
        ({"a": {"function": "nope"}}, "mapping.a.function: unknown function 'nope' (functions: shout)"),
        ({"a": {"path": "x", "rename": ["a"]}}, "mapping.a.rename: rename takes a mapping of old name: new name"),
        ({"a": [{"path": "x"}]}, "mapping.a.0: lists hold constants only; use {first: [...]} to choose between values"),
        ({}, "mapping: a mapping is an object of output fields"),
    ],
)
def test_invalid_mappings_say_exactly_what_and_where(mapping: Any, message: str) -> None:
    """Each kind of mistake is reported with its location and an exact message."""
    assert [message] == errors(mapping)


def test_every_problem_is_reported() -> None:
    """Several mistakes in one mapping are all reported."""
    assert 2 == len(errors({"a": {"pathh": "x"}, "b": {"c": {"path": "y", "cast": "nope"}}}))


def test_nested_objects_with_ordinary_keys_are_not_taken_for_directives() -> None:
    """Keys such as `source` or `paths_taken` in a nested object are output fields, not typos."""
    assert {"p": {"source": "fullstory", "paths_taken": 2}} == out({"p": {"source": "fullstory", "paths_taken": 2}})


def passes(filters: Any, payload: Any = PAYLOAD) -> bool:
    return all(f.test(env(payload)) for f in compile_filters(filters))


class TestFilters:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ({"path": "$kind", "equals": "note.created"}, True),
            ({"path": "$kind", "equals": "x"}, False),
            ({"path": "$kind", "one_of": ["a", "note.created"]}, True),
            ({"path": "data.author", "matches": "@example\\.com$"}, True),
            ({"path": "data.author", "matches": "^bob"}, False),
            ({"path": "data.author", "exists": True}, True),
            ({"path": "nope", "exists": False}, True),
            ({"path": "data.count", "gt": 41}, True),
            ({"path": "data.count", "gte": 42}, True),
            ({"path": "data.count", "lt": 42}, False),
            ({"path": "data.count", "lte": 42}, True),
            ({"path": "data.author", "gt": 1}, False),
            ({"path": "nope", "equals": None}, False),
            ({"all": [{"path": "data.count", "gt": 1}, {"path": "$kind", "equals": "note.created"}]}, True),
            ({"all": [{"path": "data.count", "gt": 1}, {"path": "$kind", "equals": "x"}]}, False),
            ({"any": [{"path": "nope", "exists": True}, {"path": "$kind", "equals": "note.created"}]}, True),
            ({"not": {"path": "$kind", "equals": "note.created"}}, False),
        ],
    )
    def test_predicates(self, spec: dict[str, Any], expected: bool) -> None:
        """Each predicate and combinator decides as documented."""
        assert expected is passes([spec])

    def test_explanation_names_the_filter_and_value(self) -> None:
        """A failing filter explains itself with its name, the path, the value and the test."""
        [f] = compile_filters([{"name": "big_orders", "path": "data.count", "gt": 100}])
        assert "big_orders" == f.name
        assert "data.count is '42', which fails gt 100" == f.explain(env())

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("nope", "when.0: a filter is a mapping such as {path: x, equals: y}"),
            ({"equals": 1}, "when.0: a filter needs a path (or all, any, not)"),
            (
                {"path": "a", "equal": 1},
                "when.0: unknown test 'equal' (tests: equals, one_of, matches, exists, gt, gte, lt, lte)",
            ),
            (
                {"path": "a", "equals": 1, "gt": 2},
                "when.0: exactly one test per filter (tests: equals, one_of, matches, exists, gt, gte, lt, lte)",
            ),
            (
                {"path": "a", "matches": "("},
                "when.0.matches: invalid regular expression: missing ), unterminated subpattern at position 0",
            ),
            ({"path": "a", "gt": "ten"}, "when.0.gt: numeric comparisons take a number"),
            ({"path": "a", "one_of": []}, "when.0.one_of: one_of takes a non-empty list"),
            ({"path": "a", "exists": "yes"}, "when.0.exists: exists takes true or false"),
            ({"all": []}, "when.0.all: all takes a non-empty list of filters"),
        ],
    )
    def test_invalid_filters(self, spec: Any, message: str) -> None:
        """Each kind of filter mistake is reported with its location and an exact message."""
        with pytest.raises(LanguageError) as caught:
            compile_filters([spec])
        assert [message] == [f"{'.'.join(map(str, loc))}: {m}" for loc, m in caught.value.problems]


class TestMarkupEscaping:
    HOSTILE: ClassVar[dict[str, Any]] = {
        "name": "<!channel> & <@U123>",
        "link": "<https://evil.example|Click here>",
        "blocks": [{"text": "<!here>", "url": "https://x.example/?a=1&b=2"}],
    }

    def escaped(self, mapping: dict[str, Any]) -> dict[str, Any]:
        compiled = compile_mapping(mapping, {"blocks": lambda e: e.payload["blocks"]}, escape=escape_mrkdwn)
        return resolve(compiled, env(self.HOSTILE))

    def test_values_from_the_event_are_escaped_in_every_directive(self) -> None:
        """path, first, function and template placeholders are escaped for a markup target; URLs under url keys,
        constants and the template's own text are not."""
        result = self.escaped(
            {
                "a": {"path": "name"},
                "b": {"first": [{"path": "missing"}, {"path": "link"}]},
                "c": {"template": "<{link}|*{name}*> &"},
                "d": {"function": "blocks"},
                "e": "<!channel>",
            }
        )
        assert "&lt;!channel&gt; &amp; &lt;@U123&gt;" == result["a"]
        assert "&lt;https://evil.example|Click here&gt;" == result["b"]
        assert "<&lt;https://evil.example|Click here&gt;|*&lt;!channel&gt; &amp; &lt;@U123&gt;*> &" == result["c"]
        assert [{"text": "&lt;!here&gt;", "url": "https://x.example/?a=1&b=2"}] == result["d"]
        assert "<!channel>" == result["e"]

    def test_trusted_turns_escaping_off_for_one_directive(self) -> None:
        """`trusted: true` keeps a value as it is; its neighbours stay escaped."""
        result = self.escaped(
            {
                "a": {"path": "link", "trusted": True},
                "b": {"path": "link"},
                "c": {"first": [{"path": "link"}], "trusted": True},
            }
        )
        assert "<https://evil.example|Click here>" == result["c"]
        assert ("<https://evil.example|Click here>", "&lt;https://evil.example|Click here&gt;") == (
            result["a"],
            result["b"],
        )
        assert ["mapping.a.trusted: trusted takes true or false"] == [
            f"{'.'.join(map(str, loc))}: {m}" for loc, m in _problems({"a": {"path": "link", "trusted": "yes"}})
        ]

    def test_targets_without_markup_are_not_escaped(self) -> None:
        """Without a target escaping (Segment, Fullstory, Jira), values pass unchanged."""
        assert {"a": "<!channel> & <@U123>"} == resolve(compile_mapping({"a": {"path": "name"}}, {}), env(self.HOSTILE))


def _problems(mapping: dict[str, Any]) -> list[tuple[Any, str]]:
    with pytest.raises(LanguageError) as caught:
        compile_mapping(mapping, {}, escape=escape_mrkdwn)
    return list(caught.value.problems)
