"""The journal: append-only JSON lines, fsynced per entry, closed kinds, a torn last line survived."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gamedaylib.journal import KINDS, Journal


def test_append_only_and_ordered(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    first = j.record("run.started", run_id="r1")
    j.record("phase.started", phase="preflight")
    again = Journal(path)  # a second writer (gameday run heals from outside) continues the sequence
    again.record("fault.healed", by="outside")
    entries = list(Journal.read(path))
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [e["kind"] for e in entries] == ["run.started", "phase.started", "fault.healed"]
    assert entries[0] == first and first["phase"] is None and first["run_id"] == "r1"
    assert datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert j.entries() == entries


def test_kinds_are_a_closed_vocabulary_named_for_the_fault(tmp_path: Path) -> None:
    assert {"fault.requested", "fault.active", "fault.healed", "stop_condition", "measurement"} <= KINDS
    assert not any(k.startswith("partition.") for k in KINDS)  # GAMEDAY-002 kills a primary: fault.*, not partition.*
    with pytest.raises(ValueError, match="made.up"):
        Journal(tmp_path / "j.jsonl").record("made.up")
    with pytest.raises(ValueError):
        Journal(tmp_path / "j.jsonl").record("partition.active")
    assert not (tmp_path / "j.jsonl").exists()  # nothing written for a refused kind


def test_values_of_other_types_are_written_readably(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    j.record("note", at=at, path=tmp_path, keys={"a"}, pair=(1, 2), answer="naïve ✓")
    (entry,) = Journal.read(tmp_path / "journal.jsonl")
    assert entry["at"] == at.isoformat() and entry["path"] == str(tmp_path)
    assert entry["keys"] == ["a"] and entry["pair"] == [1, 2] and entry["answer"] == "naïve ✓"


def test_a_torn_last_line_is_skipped_and_the_next_writer_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    Journal(path).record("note", note="ok")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"seq": 2, "kind": "no')  # a crash mid-write
    assert [e["note"] for e in Journal.read(path)] == ["ok"]
    Journal(path).record("note", note="after the crash")
    assert [e["note"] for e in Journal.read(path)] == ["ok", "after the crash"]
    assert [e["seq"] for e in Journal.read(path)] == [1, 2]
    assert list(Journal.read(tmp_path / "missing.jsonl")) == []


def test_threads_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)

    def write(n: int) -> None:
        for i in range(50):
            j.record("measurement", name=f"t{n}", value=i)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    assert sorted(json.loads(line)["seq"] for line in lines) == list(range(1, 201))
