"""`gameday` as a user types it, without a lab: refusals write nothing, help lists the parameters,
`list`, `live` (with a fake JupyterLab launcher), `history` and `compare` over archived runs."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from runtools import ROOT, run_gameday

from gamedaylib.archive import SCORECARD_FILE
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.journal import Journal
from gamedaylib.scorecard import Metric, Scorecard

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["-p", "partition_secs=10"], "partition_secs"),
        (["-p", "partition_seconds=-5"], "partition_seconds"),
        (["-p", "partition_seconds=ten"], "partition_seconds"),
        (["--profile", "chaos"], "profile"),
        (["-p", "lab_retry=maybe"], "lab_retry"),
        (["--gameday", "GAMEDAY-999"], "gameday_id"),
        (["--target", "kubernetes", "-p", "namespace=teei-prod"], "confirm_production"),
    ],
)
def test_a_refused_run_exits_2_naming_the_parameter_and_writes_nothing(tmp_path: Path, args: list[str],
                                                                       name: str) -> None:
    lab_dir, out = tmp_path / "lab", tmp_path / "out"
    proc = run_gameday("run", *args, "-p", f"lab_dir={lab_dir}", "--output-dir", str(out))
    assert proc.returncode == 2, proc.stderr
    assert name in proc.stderr
    assert not out.exists(), "a refused run leaves no archive"
    assert not lab_dir.exists(), "and starts no lab"
    history = run_gameday("history", "--output-dir", str(out))
    assert history.returncode == 0 and "no archived runs" in history.stdout


def test_bad_params_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("partition_seconds: [10\n")
    proc = run_gameday("run", "--params", str(bad), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "--params" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_run_help_lists_every_parameter_with_its_default(tmp_path: Path) -> None:
    proc = run_gameday("run", "--help")
    assert proc.returncode == 0
    for text in ("partition_seconds", "rehearsal 20.0 / full 600.0", "lab_overflow", "'reject'",
                 "stop_buffer_fraction", "exit status: 0"):
        assert text in proc.stdout, text
    assert "kill " not in proc.stdout, "only the default gameday's parameters"
    assert "--gameday GAMEDAY-002 --help" in proc.stdout
    g2 = run_gameday("run", "--gameday", "GAMEDAY-002", "--help")
    assert g2.returncode == 0
    assert "parameters of GAMEDAY-002" in g2.stdout and "failover_target_seconds" in g2.stdout
    assert "partition_seconds" not in g2.stdout
    version = run_gameday("--version")
    assert version.returncode == 0 and version.stdout.startswith("gameday ")


def test_list_names_each_gameday_with_its_notebook() -> None:
    proc = run_gameday("list", "--json")
    assert proc.returncode == 0, proc.stderr
    found = {g["id"]: g for g in json.loads(proc.stdout)}
    assert "GAMEDAY-001" in found
    notebook = Path(found["GAMEDAY-001"]["notebook"])
    assert notebook.is_absolute() and notebook.is_file()
    assert found["GAMEDAY-001"]["title"] == PLAYBOOK.title


def test_live_prepares_a_parameterized_copy_and_leaves_the_tracked_notebook_alone(tmp_path: Path) -> None:
    """`gameday live` with a fake launcher (it records what it was asked to open)."""
    tracked = ROOT / "notebooks" / "nats_partition_gameday.ipynb"
    before = tracked.read_bytes()
    opened = tmp_path / "opened.txt"
    launcher = f"{sys.executable} -c \"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\""
    proc = run_gameday("live", "--target", "kubernetes", "-p", "namespace=teei-staging", "-p", "dry_run=true",
                       "-p", "partition_seconds=30", "--output-dir", str(tmp_path / "out"), "--launcher", launcher)
    assert proc.returncode == 0, proc.stderr
    copy = Path(proc.stdout.strip().splitlines()[-1])
    assert copy.name == "runbook.ipynb" and copy.parent.parent == tmp_path / "out" / "GAMEDAY-001"
    assert opened.read_text() == str(copy)
    nb = nbformat.read(str(copy), as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    given: dict[str, object] = {}
    exec(injected.source, given)  # the literals Papermill wrote
    assert given["partition_seconds"] == 30 and given["namespace"] == "teei-staging"
    assert given["archive_dir"] == str(copy.parent) and given["live"] is None
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "prepared, not run"
    assert tracked.read_bytes() == before, "the tracked notebook is never written"
    assert subprocess.run(["git", "status", "--porcelain", "notebooks", "gamedaylib/gamedays"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout == ""


def test_live_refuses_bad_parameters_and_writes_nothing(tmp_path: Path) -> None:
    proc = run_gameday("live", "-p", "partition_seconds=-1", "--output-dir", str(tmp_path / "out"),
                       "--launcher", "false")
    assert proc.returncode == 2 and "partition_seconds" in proc.stderr
    assert not (tmp_path / "out").exists()


def _archived(root: Path, run_id: str, started: str, verdict_fail: bool, rto: float) -> Path:
    run_dir = root / "GAMEDAY-001" / run_id
    Journal(run_dir / "journal.jsonl").record("run.started", run_id=run_id)
    card = Scorecard("GAMEDAY-001", run_id, "lab", "rehearsal", started, finished_at=started, completed=True,
                     metric_names=PLAYBOOK.metric_names, labels={m.name: m.label for m in PLAYBOOK.metrics})
    card.set_metric(Metric.judged("rto_seconds", rto, 120, "test", unit="s"))
    card.set_metric(Metric.judged("event_loss_count", 5 if verdict_fail else 0, 0, "test", comparison="=="))
    card.write(run_dir / SCORECARD_FILE)
    return run_dir


def test_history_json_and_csv_round_trip_and_compare_shows_the_change(tmp_path: Path) -> None:
    a = _archived(tmp_path, "run-a", "2026-11-01T10:00:00+00:00", False, 40.0)
    b = _archived(tmp_path, "run-b", "2026-11-02T10:00:00+00:00", True, 55.5)
    never = tmp_path / "GAMEDAY-001" / "never-started"
    never.mkdir(parents=True)
    (never / "runbook.ipynb").write_text("{}")  # a live copy nobody ran: not a run
    as_json = json.loads(run_gameday("history", "--json", "--output-dir", str(tmp_path)).stdout)
    assert [r["run_id"] for r in as_json] == ["run-a", "run-b"]
    assert [r["verdict"] for r in as_json] == ["pass", "fail"]
    assert as_json[1]["rto_seconds"] == 55.5 and as_json[1]["event_loss_count_status"] == "fail"
    rows = list(csv.DictReader(io.StringIO(run_gameday("history", "--csv", "--output-dir", str(tmp_path)).stdout)))
    assert [r["run_id"] for r in rows] == ["run-a", "run-b"] and rows[0]["rto_seconds"] == "40.0"
    only_fail = json.loads(run_gameday("history", "--json", "--verdict", "fail", "--output-dir",
                                       str(tmp_path)).stdout)
    assert [r["run_id"] for r in only_fail] == ["run-b"]
    since = json.loads(run_gameday("history", "--json", "--since", "2026-11-02", "--output-dir", str(tmp_path)).stdout)
    assert [r["run_id"] for r in since] == ["run-b"]
    text = run_gameday("history", "--output-dir", str(tmp_path))
    assert text.returncode == 0 and "run-a" in text.stdout and (tmp_path / "history.png").exists()
    cmp_ = run_gameday("compare", "run-a", str(b), "--json", "--output-dir", str(tmp_path))
    assert cmp_.returncode == 0, cmp_.stderr
    by_metric = {r["metric"]: r for r in json.loads(cmp_.stdout)}
    assert by_metric["RTO (Recovery Time)"]["change"] == 15.5
    assert by_metric["Event Loss Count"]["status"] == "pass → fail"
    assert by_metric["verdict"]["a"] == "pass" and by_metric["verdict"]["b"] == "fail"
    assert a.exists()


def test_archive_refuses_a_folder_that_is_no_archive_and_a_notebook_without_outputs(tmp_path: Path) -> None:
    proc = run_gameday("archive", str(tmp_path))
    assert proc.returncode == 2 and "not a gameday archive" in proc.stderr
    (tmp_path / "journal.jsonl").write_text("", encoding="utf-8")
    blank = tmp_path / "blank.ipynb"
    blank.write_bytes((ROOT / "notebooks" / "nats_partition_gameday.ipynb").read_bytes())
    proc = run_gameday("archive", str(tmp_path), "--notebook", str(blank))
    assert proc.returncode == 2 and "has no outputs" in proc.stderr
    bad = tmp_path / "saved.ipynb"
    bad.write_text("{not json", encoding="utf-8")
    proc = run_gameday("archive", str(tmp_path), "--notebook", str(bad))
    assert proc.returncode == 2 and "cannot read the saved notebook" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.ipynb", "journal.jsonl", "saved.ipynb"]
