"""Runs whose runner died are found by the next `gameday run` or `gameday history` and completed as
``aborted`` with the reason; a run whose runner lives, or runs elsewhere, is left alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.lock import process_start_ticks
from gamedaylib.orphans import find_orphaned_runs, mark_orphaned, mark_orphaned_runs

pytestmark = pytest.mark.timeout(120)


def archive(root: Path, run_id: str, entries: list[tuple[str, dict[str, Any]]], *, gameday: str = "GAMEDAY-001",
            params: bool = True) -> Path:
    run_dir = root / gameday / run_id
    journal = Journal(run_dir / JOURNAL_FILE)
    for kind, fields in entries:
        journal.record(kind, **fields)
    if params:
        (run_dir / "params.yaml").write_text(f"gameday_id: {gameday}\nrun_id: {run_id}\ntarget: lab\n"
                                             "profile: rehearsal\n", encoding="utf-8")
    return run_dir


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_orphans_are_found_and_marked_aborted_once(tmp_path: Path, dead_pid: int, live_pid: int) -> None:
    orphan = archive(tmp_path, "orphan", [("note", {"note": "runner", "runner_pid": dead_pid}),
                                          ("run.started", {"run_id": "orphan", "pid": dead_pid}),
                                          ("fault.requested", {"deadline_seconds": 18, "dry_run": False})])
    archive(tmp_path, "running", [("note", {"note": "runner", "runner_pid": live_pid,
                                            "runner_start": process_start_ticks(live_pid)})])
    archive(tmp_path, "done", [("run.started", {"pid": dead_pid}), ("run.finished", {"verdict": "pass"})])
    found = find_orphaned_runs(tmp_path)
    assert [(o.path, o.run_id) for o in found] == [(orphan, "orphan")]
    assert f"the runner (pid {dead_pid}) died" in found[0].reason
    assert "its fault had a deadline of 18s" in found[0].reason and "heals it by itself" in found[0].reason
    assert [o.run_id for o in mark_orphaned_runs(tmp_path)] == ["orphan"]
    assert find_orphaned_runs(tmp_path) == [], "marked once"
    card = json.loads((orphan / "scorecard.json").read_text())
    assert card["verdict"] == "aborted" and "died" in card["reason"]
    last = list(Journal.read(orphan / JOURNAL_FILE))[-1]
    assert last["kind"] == "run.finished" and last["verdict"] == "aborted" and "died" in last["reason"]
    for name in ("report.html", "incident-report.md", "runbook.ipynb", "samples.csv", "action-items.csv"):
        assert (orphan / name).exists(), name


def test_a_reused_pid_does_not_keep_an_orphan_alive(tmp_path: Path, live_pid: int) -> None:
    """The recorded runner's PID now belongs to another process (started at another time): dead."""
    reused = archive(tmp_path, "reused", [("note", {"note": "runner", "runner_pid": live_pid,
                                                    "runner_start": (process_start_ticks(live_pid) or 0) - 1})])
    assert [o.path for o in find_orphaned_runs(tmp_path)] == [reused]


def test_runners_elsewhere_and_fresh_silent_journals_are_left_alone(tmp_path: Path, dead_pid: int) -> None:
    archive(tmp_path, "elsewhere", [("note", {"note": "runner", "runner_pid": dead_pid,
                                              "host": socket.gethostname() + "-other"})])
    silent = archive(tmp_path, "silent", [("note", {"note": "no runner recorded"})])
    assert find_orphaned_runs(tmp_path) == []  # quiet for less than 30 s: it may be starting
    old = time.time() - 120
    os.utime(silent / JOURNAL_FILE, (old, old))
    assert [o.path for o in find_orphaned_runs(tmp_path)] == [silent]
    assert find_orphaned_runs(tmp_path, min_age_seconds=600) == []


def test_marking_needs_no_params_file_and_skips_the_current_run(tmp_path: Path, dead_pid: int) -> None:
    bare = archive(tmp_path, "bare", [("run.started", {"pid": dead_pid})], params=False)
    current = archive(tmp_path, "current", [("run.started", {"pid": dead_pid})])
    assert [o.run_id for o in mark_orphaned_runs(tmp_path, exclude=current)] == ["bare"]
    card = json.loads((bare / "scorecard.json").read_text())
    assert (card["gameday_id"], card["run_id"], card["verdict"]) == ("GAMEDAY-001", "bare", "aborted")
    assert not (current / "scorecard.json").exists()


def test_an_orphan_of_a_gameday_this_installation_lacks_is_still_completed(tmp_path: Path, dead_pid: int) -> None:
    other = archive(tmp_path, "x", [("run.started", {"pid": dead_pid})], gameday="GAMEDAY-999")
    card = mark_orphaned(other, "orphaned: test")
    assert (card["verdict"], card["gameday_id"], card["reason"]) == ("aborted", "GAMEDAY-999", "orphaned: test")
    assert (other / "report.html").is_file()
