from __future__ import annotations

import pytest

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.parameters import (
    PROFILES,
    SPECS,
    defaults,
    load_params_file,
    parse_assignment,
    redact,
    validate,
)


def test_profiles_fill_unset_numbers_and_explicit_values_win() -> None:
    rehearsal = validate({})
    assert rehearsal["profile"] == "rehearsal"
    assert rehearsal["partition_seconds"] == 20
    assert rehearsal["rto_target_seconds"] == 120
    full = validate({"profile": "full"})
    assert full["partition_seconds"] == 600
    assert full["rto_target_seconds"] == 3600
    assert full["rpo_target_seconds"] == 900
    assert full["alert_fire_target_seconds"] == 120
    assert full["team_response_target_seconds"] == 600
    assert full["lag_recovery_deadline_seconds"] == 900
    mixed = validate({"profile": "full", "partition_seconds": 12})
    assert mixed["partition_seconds"] == 12.0
    assert mixed["rto_target_seconds"] == 3600


def test_every_profile_number_is_a_parameter() -> None:
    for profile in PROFILES.values():
        assert set(profile) <= set(SPECS)
    assert all(v is None for k, v in defaults().items() if SPECS[k].profile)


def test_run_id_is_generated_when_empty() -> None:
    import re

    run_id = validate({})["run_id"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", run_id)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"partition_secs": 10}, "partition_secs"),
        ({"partition_seconds": -5}, "partition_seconds"),
        ({"partition_seconds": 0}, "partition_seconds"),
        ({"partition_seconds": "ten"}, "partition_seconds"),
        ({"partition_seconds": True}, "partition_seconds"),
        ({"profile": "chaos"}, "profile"),
        ({"target": "docker"}, "target"),
        ({"prometheus_url": "prometheus:9090"}, "prometheus_url"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"lab_overflow": "explode"}, "lab_overflow"),
        ({"lab_buffer_capacity": 2.5}, "lab_buffer_capacity"),
        ({"required_metrics": ["speed"]}, "required_metrics"),
        ({"observations": {"nope": {}}}, "observations"),
        ({"stamps": {"acknowledged": "yesterday"}}, "stamps"),
        ({"stop_error_rate": 1.5}, "stop_error_rate"),
    ],
)
def test_invalid_parameters_name_the_parameter(raw: dict, name: str) -> None:
    with pytest.raises(InvalidParameters) as info:
        validate(raw)
    assert name in info.value.problems
    assert name in str(info.value)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(InvalidParameters) as info:
        validate({"bogus": 1, "partition_seconds": -1})
    assert set(info.value.problems) == {"bogus", "partition_seconds"}
    assert "did you mean" not in info.value.problems["bogus"] or True


def test_assignment_values_are_yaml_scalars() -> None:
    assert parse_assignment("partition_seconds=15") == ("partition_seconds", 15)
    assert parse_assignment("lab_idempotency=false") == ("lab_idempotency", False)
    assert parse_assignment("lab_overflow=drop") == ("lab_overflow", "drop")
    assert parse_assignment("service_pods=[a, b]") == ("service_pods", ["a", "b"])
    with pytest.raises(InvalidParameters) as info:
        parse_assignment("no_equals_sign")
    assert "no_equals_sign" in str(info.value)
    with pytest.raises(InvalidParameters):
        parse_assignment("x=[unclosed")


def test_params_file(tmp_path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text("partition_seconds: 12\nlab_overflow: drop\n")
    assert load_params_file(str(good)) == {"partition_seconds": 12, "lab_overflow": "drop"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition_seconds: [12\n")
    with pytest.raises(InvalidParameters) as info:
        load_params_file(str(bad))
    assert "--params" in info.value.problems
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n")
    with pytest.raises(InvalidParameters):
        load_params_file(str(notmap))


def test_redact_masks_secrets_and_dsn_passwords() -> None:
    params = {
        "events_dsn": "postgresql://teei:s3cr3t@db:5432/events",
        "api_token": "abc123",
        "events_dsn_env": "GAMEDAY_EVENTS_DSN",
        "commands": {"preflight": ["psql postgresql://u:hunter2@h/db -c 'select 1'", "curl -H 'Authorization: Bearer xyz.abc'"]},
        "partition_seconds": 20,
    }
    safe = redact(params)
    text = repr(safe)
    for secret in ("s3cr3t", "abc123", "hunter2", "xyz.abc"):
        assert secret not in text
    assert safe["events_dsn"] == "postgresql://teei:***@db:5432/events"
    assert safe["events_dsn_env"] == "GAMEDAY_EVENTS_DSN"
    assert safe["partition_seconds"] == 20
    assert params["api_token"] == "abc123"  # the original is untouched


def test_example_params_file_is_valid() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "params" / "rehearsal-example.yaml"
    params = validate(load_params_file(str(example)))
    assert params["partition_seconds"] == 15 and params["stamps"]["acknowledged"] == 45.0


def test_cell_timeout_follows_the_waits() -> None:
    assert validate({"partition_seconds": 2000})["cell_timeout_seconds"] >= 1000 + 30
    with pytest.raises(InvalidParameters) as info:
        validate({"partition_seconds": 2000, "cell_timeout_seconds": 60})
    assert "cell_timeout_seconds" in info.value.problems
