"""`gameday run` refuses invalid parameters before anything happens: exit 2, the parameter named,
an archive marked aborted whose journal shows that no partition was applied."""

from __future__ import annotations

import pytest
from runtools import archive_of, journal, run_gameday, scorecard

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["-p", "partition_secs=10"], "partition_secs"),
        (["-p", "partition_seconds=-5"], "partition_seconds"),
        (["-p", "partition_seconds=ten"], "partition_seconds"),
        (["--profile", "chaos"], "profile"),
        (["-p", "lab_retry=maybe"], "lab_retry"),
    ],
)
def test_invalid_parameters_exit_2_naming_the_parameter(tmp_path, args, name) -> None:
    lab_dir = tmp_path / "lab"
    proc = run_gameday("run", *args, "-p", f"lab_dir={lab_dir}", "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert name in proc.stderr
    archive = archive_of(proc)
    assert archive.parent.parent == tmp_path / "out"
    kinds = [e["kind"] for e in journal(archive)]
    assert kinds[0] == "params.invalid"
    assert name in journal(archive)[0]["problems"]
    assert not any(k.startswith("partition.") for k in kinds)
    assert scorecard(archive)["verdict"] == "aborted"
    assert not lab_dir.exists()  # no lab was started either


def test_bad_params_file(tmp_path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("partition_seconds: [10\n")
    proc = run_gameday("run", "--params", str(bad), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "--params" in proc.stderr


def test_history_of_no_runs_and_of_runs(tmp_path) -> None:
    proc = run_gameday("history", "--output-dir", str(tmp_path))
    assert proc.returncode == 0 and "no archived runs" in proc.stdout
    for _ in range(2):
        assert run_gameday("run", "-p", "partition_seconds=0", "--output-dir", str(tmp_path)).returncode == 2
    proc = run_gameday("history", "--output-dir", str(tmp_path))
    assert proc.returncode == 0
    rows = proc.stdout.splitlines()
    assert rows[0].startswith("run_id") and sum("aborted" in r for r in rows) == 2
    assert (tmp_path / "history.png").exists()


def test_archive_refuses_a_folder_that_is_no_archive_and_a_notebook_without_outputs(tmp_path) -> None:
    proc = run_gameday("archive", str(tmp_path))
    assert proc.returncode == 2 and "not a gameday archive" in proc.stderr
    (tmp_path / "journal.jsonl").write_text("", encoding="utf-8")
    proc = run_gameday("archive", str(tmp_path))  # the committed notebook: no outputs
    assert proc.returncode == 2 and "has no outputs" in proc.stderr
    bad = tmp_path / "saved.ipynb"
    bad.write_text("{not json", encoding="utf-8")
    proc = run_gameday("archive", str(tmp_path), "--notebook", str(bad))
    assert proc.returncode == 2 and "cannot read the saved notebook" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.jsonl", "saved.ipynb"]  # nothing written
