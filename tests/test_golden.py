"""Golden examples: every `config/examples/golden/<flow>/<case>.in.json` gives exactly `<case>.out.json`
(or, with no .out file, is held back by the flow). A flow that enriches reads its look-ups' answers
from `<case>.enriched.json` (by enrich step; null for nothing found). Adding an example adds a test.

Run with FSBRIDGE_UPDATE_GOLDEN=1 to write the .out files after a deliberate change; review the diff."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from fsbridge.config import load_config, parse_config
from fsbridge.engine.rendering import offline_limits, render_flow
from fsbridge.flows import Flow, build_flows
from fsbridge.sources.envelopes import envelope_for
from tests.fullstory_spec import validate_create_event, validate_create_user

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "config" / "examples"
GOLDEN = EXAMPLES / "golden"
UPDATE = os.environ.get("FSBRIDGE_UPDATE_GOLDEN") == "1"


def all_flows() -> dict[str, Flow]:
    """The shipped configuration with every example flow added."""
    merged: dict[str, Any] = yaml.safe_load((ROOT / "config" / "fsbridge.yaml").read_text())
    for example in sorted(EXAMPLES.glob("*.yaml")):
        merged["flows"].update(yaml.safe_load(example.read_text())["flows"])
    # The flows behind the scheduled Fullstory jobs run when their job is enabled.
    merged["jobs"]["fullstory_segment_audiences"] = {"enabled": True, "segments": [{"id": "s", "key": "power_users"}]}
    merged["jobs"]["high_value_sessions"] = {"enabled": True, "audiences": ["vip"]}
    return {flow.name: flow for flow in build_flows(parse_config(yaml.safe_dump(merged)))}


FLOWS = all_flows()
CASES = sorted(GOLDEN.glob("*/*.in.json"))


def render(flow: Flow, payload: Any, answers: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What dispatch and then delivery would make of this input: the same rendering path, limits
    included, with `answers` standing in for the flow's look-ups (none given: nothing found)."""
    answers = answers if answers is not None else {}
    envelope = envelope_for(flow.trigger.source, payload)
    if not flow.trigger.matches(envelope):
        return None
    rendering = render_flow(flow, envelope, offline_limits(flow.target.destination), answers=answers)
    if rendering.held_back is not None:
        return None
    assert rendering.error is None, rendering.error
    assert rendering.body is not None
    body: dict[str, Any] = orjson.loads(rendering.body)
    return body


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name.removesuffix('.in.json')}")
def test_golden_example(case: Path) -> None:
    """The flow named by the folder turns the input into exactly the expected output (or holds it back)."""
    flow = FLOWS[case.parent.name]
    expected_file = case.with_name(case.name.replace(".in.json", ".out.json"))
    stub = case.with_name(case.name.replace(".in.json", ".enriched.json"))
    answers = orjson.loads(stub.read_bytes()) if stub.exists() else None
    actual = render(flow, orjson.loads(case.read_bytes()), answers)
    if UPDATE:
        if actual is None:
            expected_file.unlink(missing_ok=True)
        else:
            expected_file.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    if not expected_file.exists():
        assert actual is None, f"{case.name} has no .out.json, so {flow.name} must hold it back"
        return
    assert orjson.loads(expected_file.read_bytes()) == actual
    if flow.target.destination == "fullstory" and flow.target.action == "users.create":
        validate_create_user(actual)
    if flow.target.destination == "fullstory" and flow.target.action == "events.create":
        validate_create_event(actual)


def test_every_flow_has_an_example() -> None:
    """Each built-in and example flow has at least one golden example."""
    assert set(FLOWS) == {case.parent.name for case in CASES}


def test_example_files_load_on_their_own() -> None:
    """Each example file is a valid configuration by itself (a user can use it as is)."""
    for example in EXAMPLES.glob("*.yaml"):
        assert load_config(example).flows.custom
