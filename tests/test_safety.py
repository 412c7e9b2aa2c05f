"""The journal survives being killed at any moment (every entry flushed and fsynced before the next)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from gamedaylib.journal import Journal

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
