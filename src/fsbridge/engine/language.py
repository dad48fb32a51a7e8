"""The mapping and filter language of `config/fsbridge.yaml`, compiled into directives and filters.

A mapping is a YAML tree. A plain scalar is a constant; a dict holding one directive key is a
directive; any other dict is a nested object of the output. Directives:

    {path: a.b}  {path: [a.b, c]}       the first present of these paths ($kind, $received_at... for metadata)
    {const: value}                      a constant (also for objects that would look like a directive)
    {template: "Note by {data.author}"} text with {path} placeholders (a missing one renders empty)
    {lookup: $kind, table: {a: b}}      a value looked up in a table
    {first: [<value>, <value>]}         the first that is present
    {stable_id: session.session_id, namespace: session}   a UUID derived from a value
    {function: full_name}               a named function, for rules that are computation

Modifiers on any directive: `cast` (one name or a list: string, integer, number, boolean,
timestamp, lowercase, uppercase, trim, email, email_sha256), `default` (when missing), `unless`
(only when that value is missing). On `path`: `rename` {old: new} and `drop` [keys] for objects.

A target whose text is markup (Slack's mrkdwn) escapes what the event puts into it: every value a
path, first, function or template placeholder reads is escaped (`&`, `<`, `>` for Slack), except
under `url` keys; constants and the template's own text are not. `trusted: true` on a directive
turns that off for it, for values an operator vouches for.

Filters (`when`) are a list; each is a predicate on one value, or a combination:

    {path: x, equals: v}  {path: x, one_of: [..]}  {path: x, matches: regex}  {path: x, exists: true}
    {path: x, gt: n} (gte, lt, lte)   {all: [...]}  {any: [...]}  {not: {...}}

Every problem is reported with its location (`mapping.properties.page_url: unknown directive 'pathh'`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from fsbridge.bounds import quote
from fsbridge.engine.language_casts import CASTS, PREDICATES, Loc, Problem
from fsbridge.engine.language_nodes import (
    ENRICHED_PREFIX,
    PLACEHOLDER,
    Escaped,
    Functions,
    Modified,
    NamedFunction,
    PathRead,
    PathsRead,
    Reshape,
    Template,
)
from fsbridge.engine.mapping import (
    Const,
    Directive,
    Filter,
    First,
    Lookup,
    MappingSpec,
    StableId,
)
from fsbridge.envelope import MISSING, Envelope

DIRECTIVES = ("path", "const", "template", "lookup", "first", "stable_id", "function")
MODIFIERS = {
    "path": {"cast", "default", "unless", "rename", "drop", "trusted"},
    "const": set(),
    "template": {"cast", "default", "unless", "trusted"},
    "lookup": {"table", "cast", "default", "unless"},
    "first": {"cast", "default", "unless", "trusted"},
    "stable_id": {"namespace", "cast", "default", "unless"},
    "function": {"cast", "default", "unless", "trusted"},
}
ALL_MODIFIERS = set().union(*MODIFIERS.values())
META_FIELDS = ("event_id", "source", "stream", "kind", "received_at", "dedup_key", "resolved_user_id")


class LanguageError(Exception):
    """A mapping or filter that does not compile; `problems` are (location, message) pairs."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = problems


# -- compiler ---------------------------------------------------------------------------------------


class _Compiler:
    def __init__(
        self,
        functions: Functions,
        enrich_steps: tuple[str, ...] | None = None,
        escape: Callable[[str], str] | None = None,
    ) -> None:
        self.functions = functions
        self.enrich_steps = enrich_steps  # None: any `$enriched.<step>` is accepted
        self.escape = escape  # the target's markup escaping, for values read from the event
        self.operand_depth = 0  # inside a lookup key, stable_id, unless or a trusted value: nothing is escaped
        self.problems: list[Problem] = []

    def fail(self, loc: Loc, message: str) -> Directive:
        self.problems.append((loc, message))
        return Const(MISSING)

    def value(self, node: Any, loc: Loc) -> Directive | MappingSpec:
        """A mapping value: a constant, a directive, or a nested object."""
        if isinstance(node, dict):
            if self._looks_like_directive(node):
                return self.directive(node, loc)
            return {str(key): self.value(child, (*loc, str(key))) for key, child in node.items()}
        if isinstance(node, list):
            return Const([self._constant(item, (*loc, i)) for i, item in enumerate(node)])
        return Const(node)

    def _constant(self, node: Any, loc: Loc) -> Any:
        if isinstance(node, dict | list):
            self.problems.append((loc, "lists hold constants only; use {first: [...]} to choose between values"))
        return node

    @staticmethod
    def _looks_like_directive(node: dict[Any, Any]) -> bool:
        keys = {str(k) for k in node}
        if keys & set(DIRECTIVES) or keys & ALL_MODIFIERS:
            return True
        # A one-key object whose key is a near-miss of a directive name is almost surely a typo.
        return len(keys) == 1 and bool(difflib.get_close_matches(next(iter(keys)), DIRECTIVES, n=1, cutoff=0.75))

    def directive(self, node: dict[Any, Any], loc: Loc) -> Directive:
        keys = [str(k) for k in node]
        names = [k for k in keys if k in DIRECTIVES]
        if not names:
            unknown = next((k for k in keys if k not in ALL_MODIFIERS), None)
            if unknown is None:
                return self.fail(loc, f"'{keys[0]}' modifies a directive, and there is none ({', '.join(DIRECTIVES)})")
            hint = difflib.get_close_matches(unknown, DIRECTIVES, n=1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else f"; directives are {', '.join(DIRECTIVES)}"
            return self.fail(loc, f"unknown directive '{unknown}'{suffix}")
        if len(names) > 1:
            return self.fail(loc, f"one directive per value, found {', '.join(names)}")
        name = names[0]
        extra = [k for k in keys if k != name and k not in MODIFIERS[name]]
        if extra:
            allowed = ", ".join(sorted(MODIFIERS[name])) or "none"
            return self.fail((*loc, extra[0]), f"'{extra[0]}' is not an option of {name} (options: {allowed})")
        builders: dict[str, Callable[[Any, dict[str, Any], Loc], Directive]] = {
            "path": self._path,
            "const": self._const,
            "template": self._template,
            "lookup": self._lookup,
            "first": self._first,
            "stable_id": self._stable_id,
            "function": self._function,
        }
        trusted = node.get("trusted", False)
        if not isinstance(trusted, bool):
            return self.fail((*loc, "trusted"), "trusted takes true or false")
        self.operand_depth += trusted  # a trusted `first` vouches for its options too
        try:
            inner = builders[name](node[name], node, (*loc, name))
        finally:
            self.operand_depth -= trusted
        if name == "const":
            return inner
        # Escaped where a value is output, not where it is an operand (a lookup's key, an `unless`),
        # and once: `first` escapes through its options.
        escape = self.escape if not trusted and not self.operand_depth else None
        if escape is not None and isinstance(inner, Template):
            inner = Template(inner.text, escape)
        casts = self._casts(node.get("cast"), (*loc, "cast"))
        unless = self._operand(node["unless"], (*loc, "unless")) if "unless" in node else None
        if casts or "default" in node or unless is not None:
            inner = Modified(inner, casts, node.get("default", MISSING), unless)
        return Escaped(inner, escape) if escape is not None and name in ("path", "function") else inner

    def _casts(self, node: Any, loc: Loc) -> tuple[str, ...]:
        if node is None:
            return ()
        names = node if isinstance(node, list) else [node]
        for name in names:
            if name not in CASTS:
                self.problems.append((loc, f"unknown cast '{name}' (casts: {', '.join(CASTS)})"))
        return tuple(str(n) for n in names if n in CASTS)

    def _operand(self, node: Any, loc: Loc) -> Directive:
        """Where a directive expects a value: a path string, or a directive."""
        if isinstance(node, str):
            return self._read(node, loc)
        if isinstance(node, dict):
            self.operand_depth += 1
            try:
                return self.directive(node, loc)
            finally:
                self.operand_depth -= 1
        return self.fail(loc, "expected a path or a directive")

    def _read(self, path: str, loc: Loc) -> Directive:
        if not path.strip():
            return self.fail(loc, "a path cannot be empty")
        if path.startswith(ENRICHED_PREFIX):
            step = path.removeprefix(ENRICHED_PREFIX).split(".")[0]
            if self.enrich_steps is not None and step not in self.enrich_steps:
                known = ", ".join(self.enrich_steps) or "none"
                return self.fail(loc, f"'{path}' reads enrich step '{step}', which the flow does not have ({known})")
            return PathRead(path.strip())
        if path.startswith("$") and path[1:] not in META_FIELDS:
            names = ", ".join(["$" + f for f in META_FIELDS] + ["$enriched.<step>"])
            return self.fail(loc, f"unknown metadata '{path}' (metadata: {names})")
        return PathRead(path.strip())

    def _path(self, node: Any, spec: dict[str, Any], loc: Loc) -> Directive:
        paths = node if isinstance(node, list) else [node]
        if not paths or not all(isinstance(p, str) for p in paths):
            return self.fail(loc, "path takes a string or a list of strings")
        reads = [self._read(p, (*loc, i) if isinstance(node, list) else loc) for i, p in enumerate(paths)]
        inner: Directive = reads[0] if len(reads) == 1 else First(*reads)
        if len(reads) > 1 and all(isinstance(r, PathRead) and not r.path.startswith("$") for r in reads):
            inner = PathsRead(tuple(r.path for r in reads if isinstance(r, PathRead)))
        if "rename" in spec or "drop" in spec:
            rename, drop = spec.get("rename", {}), spec.get("drop", [])
            if not isinstance(rename, dict) or not all(isinstance(v, str) for v in rename.values()):
                return self.fail((*loc[:-1], "rename"), "rename takes a mapping of old name: new name")
            if not isinstance(drop, list) or not all(isinstance(v, str) for v in drop):
                return self.fail((*loc[:-1], "drop"), "drop takes a list of names")
            inner = Reshape(inner, {str(k): v for k, v in rename.items()}, frozenset(drop))
        return inner

    def _const(self, node: Any, spec: dict[str, Any], loc: Loc) -> Directive:
        return Const(node)

    def _template(self, node: Any, spec: dict[str, Any], loc: Loc) -> Directive:
        if not isinstance(node, str):
            return self.fail(loc, "template takes a string with {path} placeholders")
        for placeholder in PLACEHOLDER.findall(node):
            self._read(placeholder.strip(), loc)
        return Template(node)

    def _lookup(self, node: Any, spec: dict[str, Any], loc: Loc) -> Directive:
        key = self._operand(node, loc)
        table = spec.get("table")
        if not isinstance(table, dict) or not table:
            return self.fail((*loc[:-1], "table"), "lookup needs a non-empty table of key: value")
        return Lookup(key, {str(k): v for k, v in table.items()})

    def _first(self, node: Any, spec: dict[str, Any], loc: Loc) -> Directive:
        if not isinstance(node, list) or not node:
            return self.fail(loc, "first takes a non-empty list of values")
        options = []
        for i, item in enumerate(node):
            compiled = self.value(item, (*loc, i))
            options.append(Const(dict(item)) if isinstance(compiled, Mapping) else compiled)
        return First(*options)

    def _stable_id(self, node: Any, spec: dict[str, Any], loc: Loc) -> Directive:
        namespace = spec.get("namespace", "anonymous")
        if not isinstance(namespace, str):
            return self.fail((*loc[:-1], "namespace"), "namespace takes a string")
        return StableId(self._operand(node, loc), namespace)

    def _function(self, node: Any, spec: dict[str, Any], loc: Loc) -> Directive:
        if not isinstance(node, str) or node not in self.functions:
            known = ", ".join(sorted(self.functions)) or "none"
            return self.fail(loc, f"unknown function '{node}' (functions: {known})")
        return NamedFunction(node, self.functions[node])

    # -- filters ------------------------------------------------------------------------------------

    def filters(self, node: Any, loc: Loc) -> tuple[Filter, ...]:
        if node is None:
            return ()
        if not isinstance(node, list):
            self.problems.append((loc, "when takes a list of filters"))
            return ()
        return tuple(self.filter(item, (*loc, i)) for i, item in enumerate(node))

    def filter(self, node: Any, loc: Loc) -> Filter:
        never = Filter("invalid", lambda e: False, lambda e: "invalid filter")
        if not isinstance(node, dict):
            self.problems.append((loc, "a filter is a mapping such as {path: x, equals: y}"))
            return never
        name = node.get("name")
        body = {k: v for k, v in node.items() if k != "name"}
        combinators = [k for k in ("all", "any", "not") if k in body]
        if combinators:
            return self._combination(combinators[0], body, loc, name)
        if "path" not in body:
            self.problems.append((loc, "a filter needs a path (or all, any, not)"))
            return never
        path = self._read(str(body.pop("path")), (*loc, "path"))
        tests = [k for k in body if k in PREDICATES]
        unknown = [k for k in body if k not in PREDICATES]
        if unknown or len(tests) != 1:
            what = f"unknown test '{unknown[0]}'" if unknown else "exactly one test per filter"
            self.problems.append((loc, f"{what} (tests: {', '.join(PREDICATES)})"))
            return never
        test = tests[0]
        check = PREDICATES[test](body[test], (*loc, test), self.problems)
        label = name or f"{test}({node['path']})"

        def passes(envelope: Envelope) -> bool:
            return check(path.resolve(envelope))

        def explain(envelope: Envelope) -> str:
            value = path.resolve(envelope)
            shown = "missing" if value is MISSING else quote(value)
            return f"{node['path']} is {shown}, which fails {test} {body[test]!r}"

        return Filter(str(label), passes, explain)

    def _combination(self, kind: str, body: dict[str, Any], loc: Loc, name: Any) -> Filter:
        inner_node = body[kind]
        if kind == "not":
            inner = self.filter(inner_node, (*loc, "not"))
            return Filter(
                str(name or f"not({inner.name})"),
                lambda e: not inner.test(e),
                lambda e: f"{inner.name} passed, and this filter negates it",
            )
        if not isinstance(inner_node, list) or not inner_node:
            self.problems.append(((*loc, kind), f"{kind} takes a non-empty list of filters"))
            return Filter("invalid", lambda e: False, lambda e: "invalid filter")
        parts = [self.filter(item, (*loc, kind, i)) for i, item in enumerate(inner_node)]
        if kind == "all":

            def explain_all(e: Envelope) -> str:
                failed = next(p for p in parts if not p.test(e))
                return f"{failed.name}: {failed.explain(e)}"

            return Filter(str(name or "all"), lambda e: all(p.test(e) for p in parts), explain_all)
        return Filter(
            str(name or "any"),
            lambda e: any(p.test(e) for p in parts),
            lambda e: "none of " + ", ".join(p.name for p in parts) + " passed",
        )


def compile_mapping(
    node: Any,
    functions: Functions,
    loc: Loc = ("mapping",),
    *,
    enrich_steps: tuple[str, ...] | None = None,
    escape: Callable[[str], str] | None = None,
) -> MappingSpec:
    """`enrich_steps`: the flow's enrich step names, the only ones `$enriched.<step>` may read;
    `escape`: the target's escaping of text read from the event (Slack's mrkdwn), if it has one."""
    compiler = _Compiler(functions, enrich_steps, escape)
    if not isinstance(node, dict) or not node:
        raise LanguageError([(loc, "a mapping is an object of output fields")])
    compiled = compiler.value(node, loc)
    if compiler.problems:
        raise LanguageError(compiler.problems)
    assert isinstance(compiled, Mapping)
    return compiled


def compile_filters(
    node: Any, loc: Loc = ("when",), *, functions: Functions | None = None, enrich_steps: tuple[str, ...] | None = ()
) -> tuple[Filter, ...]:
    compiler = _Compiler(functions or {}, enrich_steps)
    filters = compiler.filters(node, loc)
    if compiler.problems:
        raise LanguageError(compiler.problems)
    return filters
