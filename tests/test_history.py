"""The history of archived runs for analysts: one row per run that started, newest last, filtered;
two runs compared side by side; RTO, RPO and loss charted with their targets."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gamedaylib.exceptions import GamedayError
from gamedaylib.history import chart as history_chart
from gamedaylib.history import compare, find_run, runs, table
from gamedaylib.journal import JOURNAL_FILE, Journal


def archived(root: Path, run_id: str, started: str, verdict: str, rto: float | None, *, gameday: str = "GAMEDAY-001",
             target: str = "lab", started_run: bool = True, loss: int = 3) -> Path:
    run_dir = root / gameday / run_id
    run_dir.mkdir(parents=True)
    if started_run:
        Journal(run_dir / JOURNAL_FILE).record("run.started", run_id=run_id)
    metrics: list[dict[str, Any]] = [
        {"name": "rto_seconds", "label": "RTO (Recovery Time)", "value": rto, "target": 120, "comparison": "<=",
         "status": "not_measured" if rto is None else ("pass" if rto <= 120 else "fail"), "evidence": "e",
         "unit": "s"},
        {"name": "event_loss_count", "label": "Event Loss Count", "value": loss, "target": 0, "comparison": "==",
         "status": "pass" if loss == 0 else "fail", "evidence": "e", "unit": "events"}]
    (run_dir / "scorecard.json").write_text(json.dumps({
        "gameday_id": gameday, "run_id": run_id, "target": target, "profile": "rehearsal", "started_at": started,
        "finished_at": started, "verdict": verdict, "reason": "" if verdict != "aborted" else "interrupted",
        "metrics": metrics, "events": {}}))
    return run_dir


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    archived(tmp_path, "b", "2026-01-02T00:00:00+00:00", "fail", 130.0)
    archived(tmp_path, "a", "2026-01-01T00:00:00+00:00", "pass", 20.0, loss=0)
    archived(tmp_path, "k", "2026-01-03T00:00:00+00:00", "aborted", None, target="kubernetes")
    archived(tmp_path, "refused", "2026-01-04T00:00:00+00:00", "aborted", None, started_run=False)
    (tmp_path / "GAMEDAY-001" / "torn").mkdir()
    (tmp_path / "GAMEDAY-001" / "torn" / "scorecard.json").write_text("{not json")
    return tmp_path


def test_runs_that_started_newest_last(outputs: Path) -> None:
    frame = runs(outputs)
    assert frame["run_id"].tolist() == ["a", "b", "k"]  # never-started and unreadable folders left out
    assert frame.loc[0, "rto_seconds"] == 20.0 and frame.loc[1, "rto_seconds_status"] == "fail"
    assert frame.loc[1, "rto_seconds_target"] == 120 and pd.isna(frame.loc[2, "rto_seconds"])
    assert frame.loc[2, "path"] == str(outputs / "GAMEDAY-001" / "k")
    assert runs(outputs, include_unstarted=True)["run_id"].tolist() == ["a", "b", "k", "refused"]
    assert runs(outputs / "nothing-here").empty


def test_filters(outputs: Path) -> None:
    assert runs(outputs, verdict="fail")["run_id"].tolist() == ["b"]
    assert runs(outputs, target="kubernetes")["run_id"].tolist() == ["k"]
    assert runs(outputs, since=datetime(2026, 1, 2, tzinfo=timezone.utc))["run_id"].tolist() == ["b", "k"]
    assert runs(outputs, gameday="GAMEDAY-002").empty


def test_table_marks_misses(outputs: Path) -> None:
    lines = table(runs(outputs), ["rto_seconds", "event_loss_count"]).splitlines()
    assert lines[0].split() == ["gameday_id", "run_id", "started_at", "target", "profile", "verdict", "rto_seconds",
                                "event_loss_count"]
    assert lines[1].split()[1:] == ["a", "2026-01-01T00:00:00", "lab", "rehearsal", "pass", "20", "0"]
    assert lines[2].split()[-2:] == ["130!", "3!"]  # missed targets are marked
    assert lines[3].split()[-2:] == ["-", "3!"]  # not measured is a dash, never a number


def test_find_a_run_by_folder_or_id(outputs: Path) -> None:
    assert find_run(outputs, "b") == outputs / "GAMEDAY-001" / "b"
    assert find_run(outputs, str(outputs / "GAMEDAY-001" / "a")) == outputs / "GAMEDAY-001" / "a"
    with pytest.raises(GamedayError, match="no archived run 'zzz'"):
        find_run(outputs, "zzz")
    archived(outputs, "b", "2026-01-05T00:00:00+00:00", "pass", 10.0, gameday="GAMEDAY-002")
    with pytest.raises(GamedayError, match="several gamedays"):
        find_run(outputs, "b")


def test_compare_two_runs_side_by_side_with_the_change(outputs: Path) -> None:
    frame = compare(outputs / "GAMEDAY-001" / "a", outputs / "GAMEDAY-001" / "b")
    rows = {r["metric"]: r for r in frame.to_dict(orient="records")}
    assert (rows["RTO (Recovery Time)"]["a"], rows["RTO (Recovery Time)"]["b"]) == (20.0, 130.0)
    assert rows["RTO (Recovery Time)"]["change"] == 110.0
    assert rows["RTO (Recovery Time)"]["status"] == "pass → fail"
    assert rows["RTO (Recovery Time)"]["target"] == "<= 120" and rows["RTO (Recovery Time)"]["unit"] == "s"
    assert rows["Event Loss Count"]["change"] == 3.0
    assert rows["verdict"]["status"] == "pass → fail"
    unmeasured = compare(outputs / "GAMEDAY-001" / "a", outputs / "GAMEDAY-001" / "k")
    assert pd.isna(unmeasured.iloc[0]["change"])  # no number to subtract from: no change invented


def test_the_chart_across_runs(outputs: Path, tmp_path: Path) -> None:
    frame = runs(outputs)
    png = history_chart(frame, tmp_path / "history.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert history_chart(frame.head(1), tmp_path / "one.png") is None
    assert not (tmp_path / "one.png").exists()
