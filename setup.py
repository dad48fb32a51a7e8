"""The build's one step beyond pyproject.toml: with FSBRIDGE_COMPILE=1, the per-user decision
(`fsbridge.flows.aggregations`, run inside the dispatch transaction for every signal) is compiled
to C with mypyc from the same typed source. `make` runs it after installing the dependencies,
since mypyc type-checks the modules with everything they import:

    FSBRIDGE_COMPILE=1 python setup.py build_ext --inplace

Without it (a plain `pip install`), the same modules run as Python; both give the same messages
and states (tests/test_compiled.py runs the golden examples both ways)."""

import os
from pathlib import Path
from typing import Any

from setuptools import setup  # type: ignore[import-untyped]

from_here = Path(__file__).parent
DECISION = sorted(str(p.relative_to(from_here)) for p in (from_here / "src/fsbridge/flows/aggregations").glob("*.py"))


def decision_extensions() -> list[Any]:
    if os.environ.get("FSBRIDGE_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(DECISION, opt_level="3", group_name="fsbridge_decision"))


setup(ext_modules=decision_extensions())
