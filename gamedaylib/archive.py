"""The archive of a run: one folder per run, complete whatever happened.

``outputs/<gameday_id>/<run_id>/`` holds ``runbook.ipynb``, ``report.html``, ``journal.jsonl``,
``scorecard.json``, ``samples.csv``, ``incident-report.md``, ``action-items.csv`` and ``params.yaml``.
``finalize`` leaves every file in place after a failed cell, a dead kernel, a timeout or a signal,
and marks a run that did not reach its end ``aborted``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gamedaylib.clock import utcnow
from gamedaylib.incident import DEFAULT_TEMPLATE_PATH, draft_incident_report, load_template
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.observations import action_items_of, open_questions, write_action_items_csv
from gamedaylib.playbook import Playbook
from gamedaylib.sampler import read_samples
from gamedaylib.scorecard import Metric, Scorecard
from gamedaylib.secrets import redact

__all__ = ["ARCHIVE_FILES", "finalize", "render_incident_report"]

RUNBOOK_FILE = "runbook.ipynb"
HTML_FILE = "report.html"
SCORECARD_FILE = "scorecard.json"
SAMPLES_FILE = "samples.csv"
REPORT_FILE = "incident-report.md"
PARAMS_FILE = "params.yaml"
ACTION_ITEMS_FILE = "action-items.csv"
ARCHIVE_FILES = (
    RUNBOOK_FILE, HTML_FILE, JOURNAL_FILE, SCORECARD_FILE, SAMPLES_FILE, REPORT_FILE, PARAMS_FILE, ACTION_ITEMS_FILE,
)


def finalize(archive_dir: Path, params: Mapping[str, Any], completed: bool, reason: str,
             playbook: Playbook, targets: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Make the archive complete whatever happened; returns the final scorecard dict. ``targets``
    (metric -> target, from the validated parameters) fill a scorecard the run never wrote."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(archive_dir / JOURNAL_FILE)
    (archive_dir / PARAMS_FILE).write_text(yaml.safe_dump(redact(dict(params)), sort_keys=True), encoding="utf-8")
    entries = journal.entries()
    card_path = archive_dir / SCORECARD_FILE
    if completed and card_path.exists():
        data = json.loads(card_path.read_text(encoding="utf-8"))
    else:
        data = _aborted_scorecard(card_path, params, reason, entries, playbook, targets or {})
        if not any(e.get("kind") == "run.finished" for e in entries):
            entries.append(journal.record("run.finished", verdict="aborted", reason=reason))
    samples = archive_dir / SAMPLES_FILE
    if not samples.exists():
        samples.write_text("ts,t_offset_s,phase\n", encoding="utf-8")
    write_action_items_csv(entries, archive_dir / ACTION_ITEMS_FILE)  # what the team recorded, even if aborted
    report = archive_dir / REPORT_FILE
    try:
        text = render_incident_report(archive_dir, scorecard=data, params=params, journal=entries, playbook=playbook)
    except (ValueError, KeyError, TypeError) as exc:
        # the draft is an optional observer: the archive must exist anyway, and says what went wrong
        journal.record("error", error="incident-report", message=str(exc))
        text = (f"# Incident report: {data.get('gameday_id')} run {data.get('run_id')}\n\n"
                f"**Verdict:** {data.get('verdict')}\n\nThe draft could not be written: `{exc}`; "
                "see scorecard.json and journal.jsonl.\n")
    report.write_text(text, encoding="utf-8")
    return data


def _aborted_scorecard(path: Path, params: Mapping[str, Any], reason: str, entries: Sequence[Mapping[str, Any]],
                       playbook: Playbook, targets: Mapping[str, float]) -> dict[str, Any]:
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
    started = next((e["ts"] for e in entries if e.get("kind") == "run.started"), None)
    card = Scorecard(
        gameday_id=str(params.get("gameday_id") or playbook.id),
        run_id=str(params.get("run_id") or ""),
        target=str(params.get("target") or "lab"),
        profile=str(params.get("profile") or "rehearsal"),
        started_at=str(previous.get("started_at") or started or utcnow().isoformat()),
        finished_at=utcnow().isoformat(),
        completed=False,
        required_metrics=list(params.get("required_metrics") or []),
        metric_names=playbook.metric_names,
        labels={m.name: m.label for m in playbook.metrics},
        targets={**targets, **(previous.get("targets") or {})},
        reason=reason or "aborted",
    )
    measured = {e["name"]: e for e in entries if e.get("kind") == "measurement"}
    for m in previous.get("metrics") or []:
        measured.setdefault(m["name"], m)
    for name, m in measured.items():
        if name in playbook.metric_names:
            spec = playbook.metric(name)
            card.set_metric(Metric(name, m.get("value"), m.get("target", card.targets.get(name, 0)) or 0,
                                   m.get("comparison", spec.comparison), m.get("status", "not_measured"),
                                   m.get("evidence") or "", m.get("unit", spec.unit)))
    card.fill_missing(f"the run was aborted before this was measured ({reason})")
    if previous.get("events"):
        card.events.update(previous["events"])
    if previous.get("stopped_by"):
        card.stopped_by = previous["stopped_by"]
    card.write(path)
    return card.as_dict()


def render_incident_report(
    archive_dir: Path,
    *,
    scorecard: Mapping[str, Any],
    params: Mapping[str, Any],
    journal: Sequence[Mapping[str, Any]],
    playbook: Playbook,
) -> str:
    """``incident-report.md`` from the packaged template: timeline, scorecard, observations, open
    questions (unanswered playbook questions), action items (from the journal: the form live, the
    parameter headless; the parameter when the run stopped before the post-mortem journaled them)."""
    observations: dict[str, dict[str, str]] = {k: dict(v) for k, v in (params.get("observations") or {}).items()}
    for e in journal:
        if e.get("kind") == "observation" and e.get("phase"):
            observations.setdefault(e["phase"], {})[str(e.get("question"))] = str(e.get("answer") or "")
    return draft_incident_report(
        load_template(DEFAULT_TEMPLATE_PATH if DEFAULT_TEMPLATE_PATH.exists() else None),
        scorecard=scorecard,
        journal_entries=journal,
        params=params,
        observations=observations,
        open_questions=open_questions(journal, playbook, observations),
        action_items=action_items_of(journal) or action_items_of(list(params.get("action_items") or [])),
        playbook=playbook,
        samples=_samples(archive_dir / SAMPLES_FILE),
    )


def _samples(path: Path) -> Any:
    """The run's samples as a DataFrame for the draft's timeline (None when there are none)."""
    if not path.is_file():
        return None
    try:
        return read_samples(path)
    except (OSError, ValueError):
        return None
