"""Runs whose runner died: found by the next ``gameday run`` or ``gameday history`` and marked ``aborted``.

Every process that runs a gameday (``gameday run``, the notebook's kernel) journals itself
(``run.record_runner``; ``run.started`` carries the kernel's PID). An archive whose journal has no
``run.finished`` and whose every recorded runner is dead (a reused PID told apart by its start time)
is an orphan: it is completed with verdict ``aborted`` and the reason. Its fault was healed by its own
deadline (the lab proxy's, Chaos Mesh ``duration``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gamedaylib import archive, gamedays
from gamedaylib.exceptions import InvalidParameters
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.lock import pid_alive, process_start_ticks
from gamedaylib.parameters import validate
from gamedaylib.report import render_archive_html

__all__ = ["OrphanedRun", "find_orphaned_runs", "mark_orphaned", "mark_orphaned_runs"]


def _runner_alive(entry: Mapping[str, Any]) -> bool:
    pid = entry.get("runner_pid") or entry.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    start = entry.get("runner_start")
    return start is None or process_start_ticks(pid) == start


@dataclass(frozen=True)
class OrphanedRun:
    """An archive whose runner died before it finished."""

    path: Path
    run_id: str
    reason: str


def find_orphaned_runs(output_dir: str | os.PathLike[str], *, min_age_seconds: float = 30.0) -> list[OrphanedRun]:
    """Archives under ``output_dir`` (``<gameday_id>/<run_id>/journal.jsonl``) whose journal has no
    ``run.finished`` and whose every recorded runner (``gameday run``, the kernel) is dead. A journal
    naming no runner counts only once it has been quiet for ``min_age_seconds``."""
    found = []
    host = socket.gethostname()
    for path in sorted(Path(output_dir).glob("*/*/" + JOURNAL_FILE)):
        entries = list(Journal.read(path))
        if not entries or any(e.get("kind") == "run.finished" for e in entries):
            continue
        runners = [e for e in entries if e.get("runner_pid") or (e.get("kind") == "run.started" and e.get("pid"))]
        if any(e.get("host", host) != host for e in runners):
            continue  # a runner on another machine: we cannot tell whether it lives
        if any(_runner_alive(e) for e in runners):
            continue
        if not runners:
            try:
                quiet = time.time() - path.stat().st_mtime
            except OSError:
                continue
            if quiet < min_age_seconds:
                continue
        pids = sorted({int(e.get("runner_pid") or e.get("pid") or 0) for e in runners})
        last = entries[-1]
        reason = (f"orphaned: the runner ({', '.join(f'pid {p}' for p in pids) or 'unknown'}) died before the "
                  f"run finished; last journal entry #{last.get('seq')} {last.get('kind')} "
                  f"at {last.get('ts')}")
        requested = next((e for e in entries if e.get("kind") == "fault.requested"), None)
        if requested is not None and not requested.get("dry_run"):
            reason += (f"; its fault had a deadline of {requested.get('deadline_seconds')}s after "
                       f"{requested.get('ts')} (the target heals it by itself)")
        run_id = next((str(e.get("run_id")) for e in entries if e.get("run_id")), path.parent.name)
        found.append(OrphanedRun(path.parent, run_id, reason))
    return found


def mark_orphaned(run_dir: str | os.PathLike[str], reason: str) -> dict[str, Any]:
    """Complete an orphaned archive: verdict ``aborted`` with ``reason`` (journal, scorecard, incident
    report, notebook and HTML as far as they can be made). Returns the scorecard."""
    run_dir = Path(run_dir)
    params = _archived_params(run_dir)
    try:
        scenario = gamedays.scenario(str(params["gameday_id"]))
    except InvalidParameters:
        scenario = gamedays.scenario(gamedays.DEFAULT_GAMEDAY)
    try:
        targets = validate(scenario.params, params).targets()
    except InvalidParameters:
        targets = {}
    card = archive.finalize(run_dir, params, False, reason, scenario.playbook, targets=targets)
    render_archive_html(run_dir, scenario.notebook)
    return card


def mark_orphaned_runs(output_dir: str | os.PathLike[str], *, exclude: Path | None = None) -> list[OrphanedRun]:
    """Find and mark every orphaned run under ``output_dir``; returns what was marked."""
    marked = []
    for orphan in find_orphaned_runs(output_dir):
        if exclude is not None and orphan.path.resolve() == Path(exclude).resolve():
            continue
        mark_orphaned(orphan.path, orphan.reason)
        marked.append(orphan)
    return marked


def _archived_params(run_dir: Path) -> dict[str, Any]:
    params: dict[str, Any] = {}
    try:
        loaded = yaml.safe_load((run_dir / archive.PARAMS_FILE).read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            params = loaded
    except (OSError, yaml.YAMLError):
        params = {}
    params.setdefault("gameday_id", run_dir.parent.name or gamedays.DEFAULT_GAMEDAY)
    params.setdefault("run_id", run_dir.name)
    return params
