"""Safety mechanisms that need no target: the lock, the production guard, stop conditions, and a
journal that survives being killed at any moment."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gamedaylib.exceptions import GamedayInProgress, ProductionGuard
from gamedaylib.journal import Journal
from gamedaylib.safety import GamedayLock, StopConditions, guard_production, is_production


def test_second_gameday_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = GamedayLock(tmp_path / "gameday.lock")
    first.acquire("run-A")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # the lock names a live process that is not us: a second run is refused
        (tmp_path / "gameday.lock").write_text(
            '{"run_id": "run-A", "pid": %d, "since": "x"}' % holder.pid, encoding="utf-8"
        )
        with pytest.raises(GamedayInProgress, match="run-A"):
            GamedayLock(tmp_path / "gameday.lock").acquire("run-B")
    finally:
        holder.kill()
        holder.wait()
    # its holder is dead now: the lock is stale and is taken over
    second = GamedayLock(tmp_path / "gameday.lock")
    second.acquire("run-B")
    assert second.stale_holder and second.stale_holder["run_id"] == "run-A"
    assert second.holder()["run_id"] == "run-B"
    second.release()
    assert not (tmp_path / "gameday.lock").exists()


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [("teei-prod", True), ("prod", True), ("production-eu", True), ("teei-staging", False), ("dev", False)],
)
def test_production_patterns(namespace: str, expected: bool) -> None:
    assert is_production(namespace) is expected


def test_production_namespace_needs_confirmation() -> None:
    with pytest.raises(ProductionGuard, match="confirm_production"):
        guard_production("teei-prod", ["*-prod"], confirm_production=False)
    guard_production("teei-prod", ["*-prod"], confirm_production=True)
    guard_production("teei-staging", ["*-prod"], confirm_production=False)


def test_stop_conditions_fire_on_the_first_limit_crossed() -> None:
    stop = StopConditions(error_rate=0.5, lag_limit=1000, buffer_fraction=0.9)
    assert stop.check({"requests_total": 100, "requests_failed": 10, "lag_pending": 5}) is None
    assert stop.check({"requests_total": 100, "requests_failed": 60})[0] == "stop_error_rate"
    assert stop.check({"requests_total": 4, "requests_failed": 4}) is None  # too few to judge
    assert stop.check({"lag_pending": 1001})[0] == "stop_lag_limit"
    assert stop.check({"buffer_size": 95, "buffer_capacity": 100})[0] == "stop_buffer_fraction"
    assert stop.check({"buffer_size": "", "buffer_capacity": 100, "lag_pending": None}) is None


WRITER = """
import sys
from gamedaylib.journal import Journal
j = Journal(sys.argv[1])
i = 0
while True:
    i += 1
    j.record("note", "buffering", text="x" * (i % 300), i=i)
"""


def test_journal_survives_kill_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(1234)
    path = tmp_path / "journal.jsonl"
    total = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        time.sleep(0.3 + rng.random() * 0.7)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        entries = list(Journal.read(path))
        assert len(entries) > total, "the writer made progress and every earlier entry is readable"
        seqs = [e["seq"] for e in entries]
        assert seqs == list(range(1, len(seqs) + 1)), "no entry lost or torn in the middle"
        total = len(entries)
        # a torn last line (if any) does not break the next writer: it appends on a line of its own


def _archive(root: Path, run_id: str, entries: list[tuple[str, dict]]) -> Path:
    run_dir = root / "GAMEDAY-001" / run_id
    journal = Journal(run_dir / "journal.jsonl")
    for kind, fields in entries:
        journal.record(kind, **fields)
    (run_dir / "params.yaml").write_text(f"run_id: {run_id}\ntarget: lab\nprofile: rehearsal\n", encoding="utf-8")
    return run_dir


def test_orphaned_runs_are_found_and_marked_aborted(tmp_path: Path) -> None:
    from gamedaylib.safety import find_orphaned_runs, mark_orphaned_runs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        orphan = _archive(tmp_path, "orphan", [("note", {"note": "runner", "runner_pid": dead.pid}),
                                               ("run.started", {"run_id": "orphan", "pid": dead.pid}),
                                               ("partition.requested", {"deadline_seconds": 18})])
        _archive(tmp_path, "running", [("note", {"note": "runner", "runner_pid": live.pid})])
        _archive(tmp_path, "done", [("run.started", {"pid": dead.pid}), ("run.finished", {"verdict": "pass"})])
        found = find_orphaned_runs(tmp_path)
        assert [o.path for o in found] == [orphan]
        assert "died" in found[0].reason and "deadline of 18s" in found[0].reason
        assert [o.run_id for o in mark_orphaned_runs(tmp_path)] == ["orphan"]
        assert find_orphaned_runs(tmp_path) == [], "marked once"
    finally:
        live.kill()
        live.wait()
    card = json.loads((orphan / "scorecard.json").read_text())
    assert card["verdict"] == "aborted" and "died" in card["reason"]
    last = list(Journal.read(orphan / "journal.jsonl"))[-1]
    assert last["kind"] == "run.finished" and "died" in last["reason"]
    assert (orphan / "report.html").exists() and (orphan / "incident-report.md").exists()
    assert [o.run_id for o in find_orphaned_runs(tmp_path)] == ["running"], "its runner is dead now"


def test_secret_environment_values_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from gamedaylib.parameters import redact, redact_text

    monkeypatch.setenv("SOME_API_TOKEN", "tok-9f8e7d6c")
    monkeypatch.setenv("PLAIN_HOOK_VAR_X", "http://127.0.0.1:9/hooks/abcdef-123456")
    monkeypatch.setenv("INNOCENT_NAME", "value-named-by-a-param")
    assert "tok-9f8e7d6c" not in redact_text("curl -H 'X: tok-9f8e7d6c' ...")
    assert "abcdef-123456" not in redact_text("posted to /hooks/abcdef-123456")
    assert "value-named-by-a-param" in redact_text("value-named-by-a-param")
    redact({"notify_webhook_env": "INNOCENT_NAME"})  # a *_env parameter names it: now a secret
    assert "value-named-by-a-param" not in redact_text("got value-named-by-a-param")


def test_limits_name_the_parameter() -> None:
    from gamedaylib.safety import limit_problems

    assert limit_problems({"partition_seconds": 1e9}).keys() == {"partition_seconds"}
    assert limit_problems({"prometheus_url": "http://h:99999"}).keys() == {"prometheus_url"}
    assert limit_problems({"target": "lab", "partition_seconds": 3000, "partition_safety_margin_seconds": 900})
    assert limit_problems({"partition_seconds": 20, "prometheus_url": "http://127.0.0.1:9090"}) == {}
