"""Parameters: one typed definition per parameter, validated strictly into a frozen object, with the
profiles, the command line's YAML values, files, merging, --help and the notebook's parameters cell
made from it (GAMEDAY-001's parameters as the example)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.lab.knobs import LabKnobs, validate_knobs
from gamedaylib.parameters import (
    PROFILE_NAMES,
    RunParams,
    as_dict,
    defaults,
    from_namespace,
    help_lines,
    load_params_file,
    merge,
    parameters_cell,
    parse_assignment,
    specs,
    validate,
)

P = NatsPartitionParams
ROOT = Path(__file__).resolve().parent.parent


def problems_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidParameters) as info:
        validate(P, raw)
    for name in info.value.problems:
        assert name in str(info.value)
    return info.value.problems


def test_validation_gives_a_typed_frozen_object_not_a_dict() -> None:
    params = validate(P, {"partition_seconds": 12})
    assert isinstance(params, NatsPartitionParams) and isinstance(params, RunParams)
    assert params.partition_seconds == 12.0 and isinstance(params.partition_seconds, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.partition_seconds = 3  # type: ignore[misc]
    assert validate(P, as_dict(params)) == params  # what Papermill is handed validates to the same object


def test_profiles_fill_unset_numbers_and_explicit_values_win() -> None:
    rehearsal = validate(P, {})
    assert rehearsal.profile == "rehearsal" and rehearsal.gameday_id == "GAMEDAY-001"
    assert (rehearsal.partition_seconds, rehearsal.rto_target_seconds, rehearsal.rpo_target_seconds) == (20, 120, 30)
    full = validate(P, {"profile": "full"})
    # the playbook's own numbers
    assert full.partition_seconds == 600
    assert full.rto_target_seconds == 3600
    assert full.rpo_target_seconds == 900
    assert full.alert_fire_target_seconds == 120
    assert full.team_response_target_seconds == 600
    assert full.lag_recovery_deadline_seconds == 900
    assert full.lag_threshold == 10
    assert full.required == ["rto_seconds", "rpo_seconds", "event_loss_count", "user_facing_errors",
                             "alert_fire_seconds", "team_response_seconds"]
    mixed = validate(P, {"profile": "full", "partition_seconds": 12})
    assert mixed.partition_seconds == 12.0 and mixed.rto_target_seconds == 3600
    assert validate(P, {"required_metrics": ["rto_seconds"]}).required == ["rto_seconds"]


def test_every_profile_value_is_a_parameter_whose_notebook_default_is_none() -> None:
    table = specs(P)
    notebook_defaults = defaults(P)
    assert set(P.PROFILES) == set(PROFILE_NAMES)
    assert set(P.PROFILES["full"]) == set(P.PROFILES["rehearsal"])
    for name in P.PROFILES["full"]:
        assert name in table, name
        assert notebook_defaults[name] is None, name
        assert table[name][1].type.startswith("Optional"), name
    for profile in PROFILE_NAMES:  # each profile's values pass their own parameter's checks
        validate(P, {"profile": profile, **P.PROFILES[profile]})


def test_targets_follow_the_profile() -> None:
    targets = validate(P, {"profile": "full"}).targets()
    assert targets["rto_seconds"] == 3600 and targets["rpo_seconds"] == 900
    assert targets["event_loss_count"] == 0 and targets["user_facing_errors"] == 0
    assert set(targets) == set(P.METRIC_NAMES)


def test_run_id_is_generated_when_empty_and_kept_when_given() -> None:
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", validate(P, {}).run_id)
    assert validate(P, {"run_id": "rehearsal-7"}).run_id == "rehearsal-7"


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"partition_secs": 10}, "partition_secs"),
        ({"partition_seconds": -5}, "partition_seconds"),
        ({"partition_seconds": 0}, "partition_seconds"),
        ({"partition_seconds": "ten"}, "partition_seconds"),
        ({"partition_seconds": True}, "partition_seconds"),
        ({"partition_seconds": float("nan")}, "partition_seconds"),
        ({"profile": "chaos"}, "profile"),
        ({"target": "docker"}, "target"),
        ({"prometheus_url": "prometheus:9090"}, "prometheus_url"),
        ({"nats_monitor_urls": ["http://nats-0:8222", "nats-1:8222"]}, "nats_monitor_urls"),
        ({"dashboards": {"NATS": "grafana/d/x"}}, "dashboards"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"lab_overflow": "explode"}, "lab_overflow"),
        ({"lab_buffer_capacity": 2.5}, "lab_buffer_capacity"),
        ({"lab_retry": "true"}, "lab_retry"),  # a string is not a boolean, on every path (issue 14)
        ({"lab_nats_nodes": 9}, "lab_nats_nodes"),
        ({"required_metrics": ["speed"]}, "required_metrics"),
        ({"observations": {"nope": {}}}, "observations"),
        ({"observations": {"buffering": "not a mapping"}}, "observations"),
        ({"commands": {"replay": "kubectl get pods"}}, "commands"),
        ({"commands": {"nope": ["true"]}}, "commands"),
        ({"stamps": {"acknowledged": "yesterday"}}, "stamps"),
        ({"stamps": {"coffee": 10}}, "stamps"),
        ({"action_items": [{"owner": "sre"}]}, "action_items"),
        ({"stop_error_rate": 1.5}, "stop_error_rate"),
        ({"stop_buffer_fraction": 0}, "stop_buffer_fraction"),
        ({"run_id": "../escape"}, "run_id"),
        ({"events_dsn_env": "not a variable"}, "events_dsn_env"),
        ({"fault_phase": "nope"}, "fault_phase"),
        ({"fault_phase": "heal:explode"}, "fault_phase"),
        ({"gameday_id": "GAMEDAY-002"}, "gameday_id"),
        ({"nats_selector": {"app": []}}, "nats_selector"),
    ],
)
def test_invalid_parameters_name_the_parameter(raw: dict[str, Any], name: str) -> None:
    assert name in problems_of(raw)


def test_every_problem_is_reported_at_once_with_did_you_mean() -> None:
    problems = problems_of({"partiton_seconds": 1, "partition_seconds": -1, "profile": "chaos", "zzz": 0})
    assert set(problems) == {"partiton_seconds", "partition_seconds", "profile", "zzz"}
    assert "did you mean 'partition_seconds'" in problems["partiton_seconds"]
    assert problems["zzz"] == "unknown parameter"
    assert "between 1 and 86400" in problems["partition_seconds"]


def test_lab_partitions_are_capped_by_the_proxy_but_clusters_are_not() -> None:
    long = {"partition_seconds": 3500, "partition_safety_margin_seconds": 200}
    assert "3700s exceeds the lab proxy's maximum of 3600s" in problems_of(long)["partition_seconds"]
    assert validate(P, {**long, "target": "kubernetes"}).fault_deadline_seconds == 3700


def test_cell_timeout_follows_the_waits() -> None:
    params = validate(P, {"partition_seconds": 2000})
    assert params.cell_timeout_seconds is not None
    assert params.cell_timeout_seconds >= params.longest_wait_seconds() >= 1000 + 30
    problems = problems_of({"partition_seconds": 2000, "cell_timeout_seconds": 60})
    assert "shorter than the longest phase may wait" in problems["cell_timeout_seconds"]


def test_lab_knobs_are_checked_by_the_same_rules_on_every_path() -> None:
    """Knobs are declared once (``LabKnobs``): a gameday's parameters and ``gameday lab up`` agree."""
    for knob, bad in (("lab_retry", "true"), ("lab_buffer_capacity", 0), ("lab_overflow", "explode"),
                      ("lab_service_replicas", 9)):
        with pytest.raises(InvalidParameters) as via_knobs:
            validate_knobs({knob: bad})
        assert problems_of({knob: bad})[knob] == via_knobs.value.problems[knob]
    knob_names = {f.name for f in dataclasses.fields(LabKnobs)}
    assert knob_names <= set(specs(P))
    assert validate_knobs({}) == {k: getattr(validate(P, {}), k) for k in knob_names}


def test_assignment_values_are_yaml() -> None:
    assert parse_assignment("partition_seconds=15") == ("partition_seconds", 15)
    assert parse_assignment("lab_idempotency=false") == ("lab_idempotency", False)
    assert parse_assignment("lab_overflow=drop") == ("lab_overflow", "drop")
    assert parse_assignment("service_pods=[a, b]") == ("service_pods", ["a", "b"])
    assert parse_assignment("run_id=") == ("run_id", "")
    assert parse_assignment("observations={replay: {q: a}}") == ("observations", {"replay": {"q": "a"}})
    with pytest.raises(InvalidParameters) as info:
        parse_assignment("no_equals_sign")
    assert "no_equals_sign" in str(info.value)
    with pytest.raises(InvalidParameters) as info:
        parse_assignment("x=[unclosed")
    assert "x" in info.value.problems


def test_params_file(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text("partition_seconds: 12\nlab_overflow: drop\n")
    assert load_params_file(str(good)) == {"partition_seconds": 12, "lab_overflow": "drop"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_params_file(str(empty)) == {}
    for name, text in (("bad.yaml", "partition_seconds: [12\n"), ("list.yaml", "- 1\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidParameters) as info:
            load_params_file(str(tmp_path / name))
        assert "--params" in info.value.problems and name in str(info.value)
    with pytest.raises(InvalidParameters) as info:
        load_params_file(str(tmp_path / "missing.yaml"))
    assert "cannot read" in info.value.problems["--params"]


def test_command_line_mappings_are_merged_into_the_files_key_by_key() -> None:
    """``-p 'observations={replay: ...}'`` adds to the file's answers instead of dropping them (issue 13)."""
    from_file = {"partition_seconds": 12, "observations": {"buffering": {"q1": "a1"}, "replay": {"q2": "a2"}}}
    given = {"partition_seconds": 15, "observations": {"replay": {"q3": "a3"}}}
    merged = merge(from_file, given)
    assert merged == {"partition_seconds": 15,
                      "observations": {"buffering": {"q1": "a1"}, "replay": {"q2": "a2", "q3": "a3"}}}
    assert from_file["observations"]["replay"] == {"q2": "a2"}  # the inputs are not changed
    assert merge({"service_pods": ["a"]}, {"service_pods": ["b"]}) == {"service_pods": ["b"]}  # lists replace


def test_example_params_file_is_valid() -> None:
    params = validate(P, load_params_file(str(ROOT / "params" / "rehearsal-example.yaml")))
    assert params.partition_seconds == 15 and params.stamps["acknowledged"] == 45.0
    assert params.action_items[0]["ticket"] == "OPS-123"


def test_a_notebook_namespace_is_read_as_parameters() -> None:
    import json

    namespace = {"partition_seconds": 12, "injected_typo": 1, "_hidden": 2, "json": json, "validate": validate,
                 "In": [], "Out": {}, "get_ipython": lambda: None}
    assert from_namespace(namespace) == {"partition_seconds": 12, "injected_typo": 1}
    assert "injected_typo" in problems_of(from_namespace(namespace))  # an injected typo is still refused


def test_help_lines_list_every_parameter_with_profile_values() -> None:
    lines = help_lines(P)
    text = "\n".join(lines)
    for name, (_, spec) in specs(P).items():
        line = next((x for x in lines if x.split() and x.split()[0] == name), None)
        assert line is not None, name
        assert spec.help in line, name
    assert "rehearsal 20.0 / full 600.0" in next(x for x in lines if x.split()[0] == "partition_seconds")
    assert "Stop conditions:" in text and "Lab:" in text
    skipped = help_lines(P, skip={"partition_seconds": 1})
    assert not any(x.split()[0] == "partition_seconds" for x in skipped if x.strip())


def test_parameters_cell_is_one_annotated_literal_per_parameter() -> None:
    import ast

    cell = parameters_cell(P)
    assigned: dict[str, Any] = {}
    for node in ast.parse(cell).body:
        assert isinstance(node, ast.AnnAssign), ast.dump(node)  # literals only, annotated
        assert isinstance(node.target, ast.Name)
        assigned[node.target.id] = ast.literal_eval(node.value) if node.value is not None else None
        annotation = ast.literal_eval(node.annotation)
        assert annotation == specs(P)[node.target.id][1].type
    assert sorted(assigned) == sorted(specs(P))  # grouped by section, each parameter once
    assert assigned == {**defaults(P), "gameday_id": "GAMEDAY-001"}
    assert validate(P, assigned) is not None  # the cell as it stands is a valid run
