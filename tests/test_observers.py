"""Observers of a run: every hook reaches every observer; one that fails is journaled and skipped,
never failing the gameday."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runfakes import kinds, start_run

from gamedaylib.journal import Journal
from gamedaylib.observers import Observers, RunObserver


class Recorder(RunObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def phase_started(self, run: Any, phase_id: str) -> None:
        self.calls.append(("phase_started", phase_id))

    def fault_injected(self, run: Any, t0: Any) -> None:
        self.calls.append(("fault_injected", t0))

    def fault_healed(self, run: Any, at: Any, by: str) -> None:
        self.calls.append(("fault_healed", by))

    def run_finished(self, run: Any, scorecard: dict[str, Any]) -> None:
        self.calls.append(("run_finished", scorecard["verdict"]))


class Broken(RunObserver):
    def phase_started(self, run: Any, phase_id: str) -> None:
        raise RuntimeError("the chart backend is gone")


def test_a_failing_observer_is_journaled_and_the_others_still_hear(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    recorder = Recorder()
    observers = Observers([Broken(), recorder], journal)
    observers.phase_started(None, "buffering")
    assert recorder.calls == [("phase_started", "buffering")]
    (error,) = journal.entries()
    assert error["kind"] == "error" and error["error"] == "observer Broken.phase_started"
    assert error["message"] == "RuntimeError: the chart backend is gone"
    with pytest.raises(AttributeError):
        observers.no_such_hook  # noqa: B018 - only the hooks a run calls exist


def test_a_run_tells_its_observers_each_moment_once(tmp_path: Path) -> None:
    recorder = Recorder()
    run, _ = start_run(tmp_path, observers=[Broken(), recorder])
    run.take_baseline(0)
    run.phase("injection")
    run.heal()
    run.heal()  # safe twice, told once
    card = run.finish()
    assert [c[0] for c in recorder.calls] == ["phase_started", "fault_injected", "fault_healed", "run_finished"]
    assert recorder.calls[1][1] == run.clock.t0 and recorder.calls[2][1] == "runbook"
    assert recorder.calls[3][1] == card["verdict"]
    assert "error" in kinds(run) and kinds(run)[-1] == "run.finished"  # the broken one did not stop the run
