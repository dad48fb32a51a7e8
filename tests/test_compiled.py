"""The compiled decision (`setup.py`, `fsbridge/compiled.py`): what `make` builds is what runs, a
build older than its source is found, and the Python source gives the same golden messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fsbridge.flows.aggregations.state
from fsbridge import compiled

ROOT = Path(__file__).resolve().parents[1]


def test_the_decision_runs_compiled_where_make_built_it() -> None:
    """With the decision's modules compiled in the tree, the process imports the compiled build, and it is current."""
    if not compiled.builds():
        pytest.skip("built without compiling the decision (make COMPILE=0)")
    assert compiled.is_compiled(fsbridge.flows.aggregations.state)
    assert set(compiled.builds()) == {p.stem for p in compiled.DIRECTORY.glob("*.py")}
    assert compiled.stale_builds() == []


def test_a_source_edited_after_its_build_is_stale(tmp_path: Path) -> None:
    """A source newer than its build, or one without a build beside built ones, is reported; nothing built is not."""
    for name in ("score", "state", "outbox"):
        (tmp_path / f"{name}.py").write_text("")
    assert compiled.stale_builds(tmp_path) == []
    for name in ("score", "state"):
        (tmp_path / f"{name}.cpython-311-x86_64-linux-gnu.so").write_text("")
    os.utime(tmp_path / "state.py", (2e9, 2e9))
    assert compiled.stale_builds(tmp_path) == ["outbox.py", "state.py"]


def test_prefer_source_refuses_once_the_decision_is_imported() -> None:
    """Switching to the source after the decision was imported would mix the two: it is refused."""
    with pytest.raises(RuntimeError, match="imported already"):
        compiled.prefer_source()


def test_the_python_source_gives_the_same_golden_messages() -> None:
    """The aggregation tests (golden sequences, messages, states) pass on the Python source too, which they import."""
    if not compiled.builds():
        pytest.skip("the decision is not compiled: the suite runs the source already")
    script = (
        "import sys\n"
        "from fsbridge import compiled\n"
        "compiled.prefer_source()\n"
        "import pytest\n"
        "code = pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/flows/test_aggregation_golden.py',\n"
        "                    'tests/flows/test_aggregation_messages.py', 'tests/flows/test_aggregation_state.py',\n"
        "                    'tests/flows/test_aggregations.py'])\n"
        "import fsbridge.flows.aggregations.state as state\n"
        "print('compiled:', compiled.is_compiled(state))\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "compiled: False" in run.stdout
    assert " passed" in run.stdout
