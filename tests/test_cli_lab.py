"""`gameday lab ...` without a running lab: help, knob parsing, refusals and exit statuses.
(The commands against a real lab are exercised in tests/lab/test_supervisor.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.lab.cli import parse_knob_assignments

pytestmark = pytest.mark.timeout(60)


def gameday(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gamedaylib.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_every_lab_command() -> None:
    result = gameday("lab", "--help")
    assert result.returncode == 0
    for command in ("up", "down", "status", "partition"):
        assert command in result.stdout
    up_help = gameday("lab", "up", "--help").stdout
    assert "lab_NAME=VALUE" in up_help and "--lab-dir" in up_help
    assert "--for SECONDS" in gameday("lab", "partition", "--help").stdout


def test_knob_assignments_are_read_as_yaml_scalars() -> None:
    knobs = parse_knob_assignments(["lab_retry=false", "lab_buffer_capacity=50", "lab_overflow=drop"])
    assert knobs == {"lab_retry": False, "lab_buffer_capacity": 50, "lab_overflow": "drop"}


def test_non_lab_parameters_and_malformed_assignments_are_refused() -> None:
    with pytest.raises(InvalidParameters) as info:
        parse_knob_assignments(["partition_seconds=5", "lab_retry"])
    assert set(info.value.problems) == {"partition_seconds", "lab_retry"}


def test_up_with_an_invalid_knob_exits_2_naming_it_and_starts_nothing(tmp_path: Path) -> None:
    result = gameday("lab", "up", "-p", "lab_overflow=sometimes", "--lab-dir", str(tmp_path / "lab"))
    assert result.returncode == 2
    assert "lab_overflow" in result.stderr
    assert not (tmp_path / "lab" / "supervisor.pid").exists()
    assert not (tmp_path / "lab" / "config.json").exists()


def test_status_of_no_lab(tmp_path: Path) -> None:
    result = gameday("lab", "status", "--json", "--lab-dir", str(tmp_path / "lab"))
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert status["up"] is False
    assert status["gateway_url"] is None and status["prometheus_url"] is None
    human = gameday("lab", "status", "--lab-dir", str(tmp_path / "lab"))
    assert human.returncode == 1 and "lab down" in human.stdout


def test_down_with_no_lab_is_a_no_op(tmp_path: Path) -> None:
    result = gameday("lab", "down", "--lab-dir", str(tmp_path / "lab"))
    assert result.returncode == 0
    assert "no lab was up" in result.stdout


def test_partition_without_a_lab_exits_2(tmp_path: Path) -> None:
    result = gameday("lab", "partition", "on", "--for", "5", "--lab-dir", str(tmp_path / "lab"))
    assert result.returncode == 2
    assert "no lab is up" in result.stderr
