"""Safety mechanisms that need no target: the lock, the production guard, stop conditions, and a
journal that survives being killed at any moment."""

from __future__ import annotations

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
