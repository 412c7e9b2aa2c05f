"""One gameday at a time per target: the lock names the run that holds it, refuses a second run while
its holder lives, and is taken over once the holder is dead (a reused PID told apart by its start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gamedaylib.exceptions import GamedayInProgress
from gamedaylib.lock import LOCK_FILE, GamedayLock, pid_alive, process_start_ticks


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def held_by(path: Path, pid: int, run_id: str = "run-A") -> None:
    path.write_text(json.dumps({"run_id": run_id, "pid": pid, "since": "2026-01-01T00:00:00+00:00"}),
                    encoding="utf-8")


def test_a_second_gameday_is_refused_naming_the_first(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path = tmp_path / LOCK_FILE
    held_by(path, sleeper.pid)
    with pytest.raises(GamedayInProgress, match="run-A") as info:
        GamedayLock(path).acquire("run-B")
    assert info.value.holder == "run-A" and f"pid {sleeper.pid}" in str(info.value)
    with pytest.raises(GamedayInProgress):
        GamedayLock(path).check_free()
    assert json.loads(path.read_text())["run_id"] == "run-A"  # refusing changed nothing


def test_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "lab" / LOCK_FILE
    path.parent.mkdir()
    held_by(path, dead.pid)
    GamedayLock(path).check_free()  # a dead holder does not refuse anyone
    lock = GamedayLock(path)
    lock.acquire("run-B", what="GAMEDAY-001 /out/run-B")
    assert lock.stale_holder is not None and lock.stale_holder["run_id"] == "run-A"
    holder = lock.holder()
    assert holder is not None and (holder["run_id"], holder["pid"], holder["what"]) == (
        "run-B", os.getpid(), "GAMEDAY-001 /out/run-B")
    lock.release()
    lock.release()  # safe twice
    assert not path.exists()


def test_the_holder_itself_and_a_context_manager(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / LOCK_FILE
    with GamedayLock(path) as lock:
        lock.acquire("run-C")
        lock.check_free()  # the process that holds it is not refused by itself
        assert path.exists()
    assert not path.exists()
    other = GamedayLock(path)
    other.release()  # never acquired: removes nothing
    assert GamedayLock(tmp_path / "none").holder() is None


def test_pid_alive_tells_the_living_from_the_dead_and_zombies(sleeper: subprocess.Popen[bytes]) -> None:
    assert pid_alive(os.getpid()) and pid_alive(sleeper.pid)
    assert not pid_alive(None) and not pid_alive(0) and not pid_alive(-1)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while _state(zombie.pid) != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.02)
        assert not pid_alive(zombie.pid)  # exited, not yet reaped: dead
    finally:
        zombie.wait()
    assert not pid_alive(zombie.pid)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_start_ticks_tell_a_reused_pid_apart(sleeper: subprocess.Popen[bytes]) -> None:
    mine, theirs = process_start_ticks(os.getpid()), process_start_ticks(sleeper.pid)
    assert isinstance(mine, int) and isinstance(theirs, int) and theirs >= mine
    assert process_start_ticks(os.getpid()) == mine  # stable for a process's life
    assert process_start_ticks(2**22 + 12345) is None
