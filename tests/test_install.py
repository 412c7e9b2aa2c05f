"""gameday installed as a user installs it: a wheel built from this checkout, installed into a fresh
venv outside the repository, run from an empty directory; and plain Papermill on the installed
notebook producing the same archive as `gameday run`.

Nothing here may read the checkout: the venv's `gameday` finds its notebook, NetworkChaos template,
alert rules, incident template and SQL in the installed package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gamedaylib.archive import ARCHIVE_FILES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv outside the repository with the wheel of this checkout installed; its bin folder."""
    tmp = tmp_path_factory.mktemp("install")
    dist = tmp / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)], tmp)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("gameday-*.whl")
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    made = _run([base, "-m", "venv", str(venv)], tmp)
    assert made.returncode == 0, made.stderr
    pip = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], tmp, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    yield venv / "bin"


def _archive(proc: subprocess.CompletedProcess[str]) -> Path:
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-3000:]
    return Path(lines[-1])


def _card(archive: Path) -> dict:
    return json.loads((archive / "scorecard.json").read_text(encoding="utf-8"))


def test_the_wheel_runs_a_gameday_from_an_empty_directory_and_plain_papermill_does_the_same(
    installed: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = _run([str(installed / "gameday"), "list", "--json"], empty)
    assert listed.returncode == 0, listed.stderr
    gamedays = {g["id"]: g for g in json.loads(listed.stdout)}
    notebook = Path(gamedays["GAMEDAY-001"]["notebook"])
    assert notebook.is_file() and ROOT not in notebook.parents, "the notebook comes from the installed package"

    lab = tmp_path / "lab"
    short = ["-p", "partition_seconds=8", "-p", f"lab_dir={lab}"]
    proc = _run([str(installed / "gameday"), "run", *short, "--output-dir", "out"], empty)
    archive = _archive(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert archive.parent.parent == empty / "out", "relative to where it was run"
    assert sorted(p.name for p in archive.iterdir() if p.name in ARCHIVE_FILES) == sorted(ARCHIVE_FILES)
    card = _card(archive)
    assert card["verdict"] == "pass"
    assert not lab.exists() or not (lab / "state.json").exists(), "the lab it started was stopped"

    # plain Papermill, as an Airflow PapermillOperator or a CI job calls it, on the installed notebook
    up = _run([str(installed / "gameday"), "lab", "up", "--lab-dir", str(lab)], empty, timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        plain = empty / "plain"
        plain.mkdir()  # Papermill writes its output notebook into an existing folder only (README says mkdir -p)
        pm = _run([str(installed / "papermill"), str(notebook), str(plain / "runbook.ipynb"),
                   "-p", "archive_dir", str(plain), "-p", "lab_dir", str(lab), "-p", "partition_seconds", "8"],
                  empty)
        assert pm.returncode == 0, pm.stderr[-3000:]
    finally:
        _run([str(installed / "gameday"), "lab", "down", "--lab-dir", str(lab)], empty, timeout=120)
    same = [name for name in ARCHIVE_FILES if (plain / name).is_file()]
    assert sorted(same) == sorted(ARCHIVE_FILES), "the same archive files as gameday run"
    plain_card = _card(plain)
    assert plain_card["verdict"] == card["verdict"] == "pass"
    assert {m["name"] for m in plain_card["metrics"]} == {m["name"] for m in card["metrics"]}
    kinds = [json.loads(line)["kind"] for line in (plain / "journal.jsonl").read_text().splitlines()]
    assert "fault.healed" in kinds and kinds[-1] == "run.finished"
    live_only = "gd.rollback" in (plain / "runbook.ipynb").read_text(encoding="utf-8")
    assert live_only, "plain Papermill runs every cell, the rollback cell included (a no-op then)"
