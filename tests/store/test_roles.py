"""The store is split by role: each role's SQL lives in its own module, and `SqlStore` only routes."""

from __future__ import annotations

import ast
import inspect

from fsbridge.store import sql


def _sql_strings(tree: ast.AST) -> list[str]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE"))
    ]


def test_sql_store_methods_hold_no_role_sql() -> None:
    """Every query `SqlStore` runs, except the readiness ping and restart recovery, comes from a role module."""
    cls = ast.parse(inspect.getsource(sql.SqlStore)).body[0]
    assert isinstance(cls, ast.ClassDef)
    methods = [m for m in cls.body if isinstance(m, ast.AsyncFunctionDef | ast.FunctionDef)]
    assert {"ping", "recover_after_restart", "accept", "record_dispatch"} <= {m.name for m in methods}
    found = {m.name: _sql_strings(m) for m in methods}
    assert ["SELECT 1"] == found.pop("ping")
    assert found.pop("recover_after_restart")  # the one place that touches every role's leases at once
    assert {} == {name: queries for name, queries in found.items() if queries}
