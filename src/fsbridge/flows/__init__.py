"""The business flows: the built-in ones and those defined in the configuration, all compiled from
the same flow language. `build_flows(config)` returns the enabled ones, built-in first."""

from __future__ import annotations

from fsbridge.config import FlowSpec, FsbridgeConfig
from fsbridge.engine.flow import Flow
from fsbridge.engine.language import LanguageError
from fsbridge.engine.language_casts import Loc
from fsbridge.flows.builtin import (
    AUDIENCE_TRACKS,
    AUDIENCE_TRAITS,
    DELETION,
    FLAGGED_SESSION,
    FRUSTRATION,
    HIGH_VALUE_SESSION,
    IDENTIFY,
    SESSION_URL,
    audience_tracks_spec,
    audience_traits_spec,
    deletion_spec,
    flagged_session_spec,
    frustration_spec,
    high_value_session_spec,
    identify_spec,
    session_url_spec,
    trend_alert_spec,
)
from fsbridge.flows.functions import functions
from fsbridge.flows.spec import compile_flow


def flow_specs(config: FsbridgeConfig) -> dict[str, FlowSpec]:
    """Every flow's spec by name, enabled or not."""
    flows, identity = config.flows, config.identity
    specs = {
        FRUSTRATION: frustration_spec(flows.frustration_to_segment_track, identity),
        IDENTIFY: identify_spec(flows.segment_identify_to_fullstory_user, identity),
        DELETION: deletion_spec(flows.segment_delete_to_fullstory_user, identity),
        SESSION_URL: session_url_spec(flows.session_url_to_segment, identity),
        FLAGGED_SESSION: flagged_session_spec(flows.flagged_session_to_segment, identity),
    }
    specs[FRUSTRATION].enabled = flows.frustration_to_segment_track.enabled
    specs[IDENTIFY].enabled = flows.segment_identify_to_fullstory_user.enabled
    specs[DELETION].enabled = flows.segment_delete_to_fullstory_user.enabled
    specs[SESSION_URL].enabled = flows.session_url_to_segment.enabled
    # The flows behind the scheduled Fullstory jobs are on when their job is.
    audiences, sessions = config.jobs.fullstory_segment_audiences, config.jobs.high_value_sessions
    specs[AUDIENCE_TRAITS] = audience_traits_spec()
    specs[AUDIENCE_TRAITS].enabled = audiences.enabled
    specs[AUDIENCE_TRACKS] = audience_tracks_spec()
    specs[AUDIENCE_TRACKS].enabled = audiences.enabled and audiences.send_tracks
    specs[HIGH_VALUE_SESSION] = high_value_session_spec()
    specs[HIGH_VALUE_SESSION].enabled = sessions.enabled
    # Feature adoption also alerts on a Fullstory segment alert that a segment fell BELOW its threshold.
    adoption = config.flows.feature_adoption
    for target in ("slack", "jira"):
        spec = trend_alert_spec(target)
        spec.enabled = adoption.enabled and target in adoption.notify
        specs[f"feature_adoption_trend_alert_to_{target}"] = spec
    return specs | flows.custom


def build_flows(config: FsbridgeConfig) -> tuple[Flow, ...]:
    named = functions(config.identity)
    return tuple(compile_flow(name, spec, named) for name, spec in flow_specs(config).items() if spec.enabled)


def build_flow(config: FsbridgeConfig, name: str) -> Flow | None:
    """One flow by name, enabled or not (a backtest judges a flow before it is enabled)."""
    spec = flow_specs(config).get(name)
    return None if spec is None else compile_flow(name, spec, functions(config.identity))


def check_flows(config: FsbridgeConfig) -> list[tuple[Loc, str]]:
    """Every problem in every flow (enabled or not), located from the top of the file."""
    named = functions(config.identity)
    problems: list[tuple[Loc, str]] = []
    for name, spec in flow_specs(config).items():
        try:
            compile_flow(name, spec, named)
        except LanguageError as exc:
            problems += [(("flows", name, *loc), message) for loc, message in exc.problems]
    return problems


__all__ = ["Flow", "build_flow", "build_flows", "check_flows", "flow_specs"]
