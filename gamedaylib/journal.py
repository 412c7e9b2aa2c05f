"""The journal: an append-only JSON-lines timeline of a gameday, one entry per line.

Every entry is flushed and fsynced before ``record`` returns, so a crash at any moment leaves every
earlier entry readable. Entries are never rewritten; a corrected answer is a new entry.

Entry shape: ``{"seq": int, "ts": ISO-8601 UTC, "kind": str, "phase": str | None, ...fields}``.
Kinds in use (a closed vocabulary, see ``KINDS``) keep the timeline machine-readable.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from gamedaylib.clock import utcnow

JOURNAL_FILE = "journal.jsonl"  # its name in a run's archive

KINDS = frozenset(
    {
        "run.started",  # run_id, target, profile, params (redacted)
        "run.finished",  # verdict, reason
        "params.invalid",  # problems
        "phase.started",
        "phase.finished",  # status: ok | failed | skipped, duration_s
        "check",  # name, ok, detail
        "command",  # command, returncode, duration_s, stdout_tail, stderr_tail, dry_run
        "fault.requested",  # fault (what it does), deadline_seconds, dry_run
        "fault.active",  # t0: the confirmed injection
        "fault.healed",  # at, by
        "stop_condition",
        "measurement",  # name, value, unit, evidence
        "observation",  # question, answer
        "stamp",  # stamp, at
        "checklist",
        "action_item",
        "notification",
        "note",
        "error",  # error, message
    }
)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class Journal:
    """Append-only JSON-lines journal; safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = 0
        if self.path.exists():
            self._close_torn_line()
            self._seq = max((int(e.get("seq", 0)) for e in self.read(self.path)), default=0)

    def _close_torn_line(self) -> None:
        """A crash mid-write can leave a last line without its newline: end it, so the next entry
        starts on a line of its own (the torn line stays, unreadable, and ``read`` skips it)."""
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())

    def record(self, kind: str, phase: str | None = None, **fields: Any) -> dict[str, Any]:
        """Append one entry, flushed and fsynced; returns the entry written."""
        if kind not in KINDS:
            raise ValueError(f"unknown journal kind {kind!r}")
        with self._lock:
            self._seq += 1
            entry: dict[str, Any] = {"seq": self._seq, "ts": utcnow().isoformat(), "kind": kind, "phase": phase}
            entry.update(fields)
            line = json.dumps(entry, default=_default, ensure_ascii=False) + "\n"
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        return entry

    def entries(self) -> list[dict[str, Any]]:
        return list(self.read(self.path))

    @staticmethod
    def read(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
        """Yield every complete entry; a torn last line (a crash mid-write) is skipped."""
        p = Path(path)
        if not p.exists():
            return
        with open(p, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
