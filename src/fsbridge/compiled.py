"""The build's compiled part: the per-user decision (`fsbridge.flows.aggregations`, run in the
dispatch transaction for every signal) is compiled with mypyc by `make` (`setup.py`), from the
same typed source. This module says whether a process runs that build, whether the build is
older than its source (edited since `make`: the stale build would shadow the edit), and can make a
process import the Python source instead (`prefer_source`: the test that runs the golden
examples both ways)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = "fsbridge.flows.aggregations"
DIRECTORY = Path(__file__).parent / "flows" / "aggregations"


def builds(directory: Path = DIRECTORY) -> dict[str, Path]:
    """The decision's compiled modules in the source tree, by module name (none: not compiled)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return {
        path.name.split(".", 1)[0]: path
        for path in directory.iterdir()
        if any(path.name.endswith(suffix) for suffix in suffixes)
    }


def stale_builds(directory: Path = DIRECTORY) -> list[str]:
    """Sources newer than their compiled module, or without one while others are compiled."""
    built = builds(directory)
    if not built:
        return []
    return [
        source.name
        for source in sorted(directory.glob("*.py"))
        if source.stem not in built or built[source.stem].stat().st_mtime < source.stat().st_mtime
    ]


def is_compiled(module: ModuleType) -> bool:
    spec = module.__spec__
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the decision's modules as Python source, ahead of any compiled build beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == PACKAGE:
            return importlib.util.spec_from_file_location(
                fullname, DIRECTORY / "__init__.py", submodule_search_locations=[str(DIRECTORY)]
            )
        if fullname.startswith(PACKAGE + "."):
            return importlib.util.spec_from_file_location(fullname, DIRECTORY / f"{fullname.rpartition('.')[2]}.py")
        return None


def prefer_source() -> None:
    """Import the decision from its Python source from now on (before anything imports it)."""
    if PACKAGE in sys.modules:
        raise RuntimeError(f"{PACKAGE} is imported already: call prefer_source before it is")
    sys.meta_path.insert(0, _SourceFirst())
