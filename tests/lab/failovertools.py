"""Helpers for GAMEDAY-002's end-to-end tests on the lab (imported as ``failovertools``): run `gameday run
--gameday GAMEDAY-002` as a user would, and recount what it judged from the lab's own ground truth
(``truth/answers.jsonl`` against the ``events`` table), independently of the run's code."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from labtools import RunningLab
from runtools import archive_of, journal, metrics, run_gameday, scorecard

from gamedaylib.canary import canary_key
from gamedaylib.lab.truth import read_answers

GAMEDAY = "GAMEDAY-002"
RUN_TIMEOUT_SECONDS = 420.0  # a rehearsal takes 1.5-2 min on a quiet machine


@dataclass
class Rehearsal:
    """One finished `gameday run` and what it archived."""

    proc: subprocess.CompletedProcess[str]
    archive: Path
    card: dict[str, Any]
    journal: list[dict[str, Any]]

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return metrics(self.card)

    def value(self, name: str) -> Any:
        return self.metrics[name]["value"]

    def status(self, name: str) -> str:
        return str(self.metrics[name]["status"])

    def at(self, kind: str, **match: str) -> datetime:
        """When the first journal entry of ``kind`` (with these fields) was written."""
        entry = next(e for e in self.journal if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()))
        return datetime.fromisoformat(entry["ts"])

    @property
    def t0(self) -> datetime:
        entry = next(e for e in self.journal if e["kind"] == "fault.active")
        return datetime.fromisoformat(entry["t0"])

    def checks(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.journal if e["kind"] == "check" and e["name"] == name]

    def explain(self) -> str:
        lines = [f"exit {self.proc.returncode}; verdict {self.card.get('verdict')}"]
        lines += [f"  {m['name']}: {m['status']} {m['value']} ({m['evidence'][:300]})" for m in self.card["metrics"]]
        return "\n".join(lines) + "\n" + self.proc.stderr[-3000:]


def rehearse(lab: RunningLab, out: Path, **params: Any) -> Rehearsal:
    """`gameday run --gameday GAMEDAY-002` on the running ``lab`` (rehearsal profile), with ``params``."""
    args = ["run", "--gameday", GAMEDAY, "--output-dir", str(out), "-p", f"lab_dir={lab.dir}"]
    for name, value in {**lab.state["knobs"], **params}.items():  # the running lab's knobs, or it is refused
        args += ["-p", f"{name}={str(value).lower() if isinstance(value, bool) else value}"]
    proc = run_gameday(*args, timeout=RUN_TIMEOUT_SECONDS)
    archive = archive_of(proc)
    return Rehearsal(proc, archive, scorecard(archive), journal(archive))


@dataclass(frozen=True)
class Truth:
    """The lab's ground truth over a window: the users' accepted events and those not stored."""

    accepted: list[dict[str, Any]]
    lost: list[dict[str, Any]]


def truth(lab: RunningLab, since: datetime, until: datetime) -> Truth:
    """Every user event the gateway accepted (202) in ``[since, until]`` and those of them missing from
    the events table (read now)."""
    stored = lab.stored()
    accepted = [a for a in read_answers(lab.dir)
                if a["status"] == 202 and since <= datetime.fromisoformat(a["ts"]) <= until]
    return Truth(accepted, [a for a in accepted if stored[a["idempotency_key"]] == 0])


def canary_rows(lab: RunningLab, run: Rehearsal) -> list[int]:
    """Rows each canary the run sent has in the events table, in send order."""
    stored = lab.stored()
    run_id = run.card["run_id"]
    return [stored[canary_key(run_id, seq)] for seq in range(1, int(run.card["events"]["canaries_sent"]) + 1)]
