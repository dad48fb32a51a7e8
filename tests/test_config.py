"""Configuration file: the shipped file is valid, and every problem is reported with its line and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsbridge.config import load_config, parse_config
from fsbridge.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "fsbridge.yaml"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml")
    return caught.value.problems


def test_shipped_config_is_valid_and_enables_the_frustration_flow() -> None:
    """config/fsbridge.yaml loads, with the frustration flow on and the contract's event names."""
    config = load_config(SHIPPED)
    flow = config.flows.frustration_to_segment_track
    assert flow.enabled
    assert "Dead Click Detected" == flow.event_names["dead_click"]


def test_empty_file_means_defaults() -> None:
    """An empty file is the defaults."""
    assert parse_config("").flows.frustration_to_segment_track.enabled


def test_unknown_setting_names_its_line_and_path() -> None:
    """A misspelt key is reported with its line and dotted path."""
    text = "version: 1\nflows:\n  frustration_to_segment_track:\n    enabeld: true\n"
    assert ["f.yaml:4: flows.frustration_to_segment_track.enabeld: unknown setting 'enabeld'"] == problems(text)


def test_every_problem_is_listed() -> None:
    """Several mistakes are all reported, each on its own line."""
    text = "worker:\n  poll_interval_seconds: -1\ndestinations:\n  segment:\n    max_batch_messages: 9000\n"
    found = problems(text)
    assert 2 == len(found)
    assert found[0].startswith("f.yaml:2: worker.poll_interval_seconds:")
    assert found[1].startswith("f.yaml:5: destinations.segment.max_batch_messages:")
    assert "2500" in found[1]


def test_signal_without_event_name() -> None:
    """A signal with no Segment event name is refused, pointing at the flow."""
    text = "flows:\n  frustration_to_segment_track:\n    signals: [rage_click, scroll_rage]\n"
    [problem] = problems(text)
    assert "f.yaml:2: flows.frustration_to_segment_track:" in problem
    assert "scroll_rage" in problem


def test_lease_must_outlive_the_request_timeout() -> None:
    """A lease shorter than the destination timeout + 5 s is refused."""
    [problem] = problems("worker:\n  lease_seconds: 5\n")
    assert "lease_seconds" in problem


@pytest.mark.parametrize(("text", "line"), [("flows: [\n", 2), ("a: b\n c: d\n", 2), ("- 1\n", 1)])
def test_broken_yaml_and_non_mapping(text: str, line: int) -> None:
    """Broken YAML and a top level that is not a mapping are reported with a line."""
    [problem] = problems(text)
    assert problem.startswith(f"f.yaml:{line}:")


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


USER_FLOW = """\
flows:
  rage_to_track:
    trigger: {source: fullstory_stream, kinds: [rage-click]}
    target: segment.track
    mapping:
      event: Rage
      userId: {path: user.user_id}
      properties:
        page_url: {pathh: event.url}
"""


def test_user_flow_directive_typo_names_line_and_path() -> None:
    """The issue's own example: a misspelt directive is reported with its line and the flow path."""
    [problem] = problems(USER_FLOW)
    assert problem.startswith("f.yaml:9: flows.rage_to_track.mapping.properties.page_url: unknown directive 'pathh'")


def test_user_flow_is_compiled_and_kept() -> None:
    """A valid user flow is kept with its spec; its trigger kinds are normalised like intake's."""
    config = parse_config(USER_FLOW.replace("pathh", "path"))
    spec = config.flows.custom["rage_to_track"]
    assert "segment.track" == spec.target


@pytest.mark.parametrize(
    ("original", "replacement", "expected"),
    [
        ("target: segment.track", "target: segment.page", "f.yaml:4: flows.rage_to_track.target: Input should be"),
        (
            "source: fullstory_stream",
            "source: hubspot",
            "f.yaml:3: flows.rage_to_track.trigger.source: Input should be",
        ),
        (
            "    mapping:",
            "    sample: 2\n    mapping:",
            "f.yaml:5: flows.rage_to_track.sample: Input should be less than",
        ),
        (
            "{path: user.user_id}",
            "{function: nope}",
            "f.yaml:7: flows.rage_to_track.mapping.userId.function: unknown function",
        ),
        (
            "    mapping:",
            "    when: [{path: a, equal: 1}]\n    mapping:",
            "f.yaml:5: flows.rage_to_track.when.0: unknown test 'equal'",
        ),
        (
            "    target:",
            "    colour: red\n    target:",
            "f.yaml:4: flows.rage_to_track.colour: unknown setting 'colour'",
        ),
    ],
)
def test_each_kind_of_flow_error(original: str, replacement: str, expected: str) -> None:
    """Bad target, bad source, sample out of range, unknown function, bad filter, unknown key: each located."""
    text = USER_FLOW.replace("pathh", "path").replace(original, replacement, 1)
    [problem] = problems(text)
    assert problem.startswith(expected), problem


def test_disabled_user_flow_is_still_checked() -> None:
    """A disabled flow is still validated, so it is right when someone enables it."""
    text = USER_FLOW.replace("  rage_to_track:\n", "  rage_to_track:\n    enabled: false\n")
    [problem] = problems(text)
    assert "unknown directive 'pathh'" in problem


def test_durations_are_read_and_a_bad_one_names_its_line() -> None:
    """Retention and job intervals take 30s, 15m, 2h, 7d or seconds; anything else is a located error."""
    config = parse_config("retention:\n  inbox: 2d\n  dead: 90\njobs:\n  retention: {every: 15m}\n")
    assert (172800.0, 90.0, 900.0) == (config.retention.inbox, config.retention.dead, config.jobs.retention.every)
    [problem] = problems("retention:\n  inbox: soon\n")
    assert problem.startswith("f.yaml:2: retention.inbox:")
    assert "retention.inbox" in problem
    assert "not a duration" in problem
