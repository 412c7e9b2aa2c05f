from __future__ import annotations

import json
import threading

import pytest

from gamedaylib.journal import Journal


def test_append_only_and_ordered(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.record("run.started", run_id="r1")
    j.record("phase.started", phase="preflight")
    again = Journal(path)  # a second writer (gameday run heals from outside) continues the sequence
    again.record("partition.healed", by="outside")
    entries = Journal.read(path)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [e["kind"] for e in Journal.read(path)] == ["run.started", "phase.started", "partition.healed"]


def test_unknown_kind_refused(tmp_path) -> None:
    with pytest.raises(ValueError):
        Journal(tmp_path / "j.jsonl").record("made.up")


def test_torn_last_line_is_skipped(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.record("note", note="ok")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"seq": 2, "kind": "no')  # a crash mid-write
    assert [e["note"] for e in Journal.read(path)] == ["ok"]


def test_threads_do_not_interleave(tmp_path) -> None:
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
