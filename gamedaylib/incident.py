"""The post-mortem draft: ``docs/incidents/template.md`` filled from plain data (the scorecard dict,
the journal entries, the effective parameters, the team's observations, open questions and action
items). No kernel, widget or target is needed, so the archive can write it whatever happened.

Placeholders are ``{{ name }}`` (blanks inside the braces are optional). Known names are listed in
``PLACEHOLDERS``; an unknown placeholder is left visible so a template typo shows in the report. A
template without some placeholder simply omits that section.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gamedaylib.clock import format_offset, parse_time
from gamedaylib.playbook import Playbook

PLACEHOLDERS: dict[str, str] = {
    "gameday_id": "the gameday id (GAMEDAY-001)",
    "title": "the scenario",
    "run_id": "the run id",
    "target": "lab | kubernetes",
    "profile": "rehearsal | full",
    "started_at": "run start (ISO-8601)",
    "finished_at": "run end (ISO-8601)",
    "t0": "T+0: the confirmed injection (ISO-8601) or 'not reached'",
    "verdict": "PASS | FAIL | ABORTED",
    "summary": "a few sentences a manager can read",
    "metrics_table": "the playbook's success metrics + duplicates + lag recovery, pass/fail/not measured",
    "events": "canaries sent / stored / lost / duplicated",
    "timeline": "the journal's key moments with T-offsets",
    "observations": "the team's answers per phase, verbatim",
    "open_questions": "playbook questions nobody answered",
    "action_items": "the action items table",
    "improvements": "the playbook's 'improvements for next gameday' list",
    "checklist": "the pre-gameday checklist as recorded at pre-flight",
    "targets": "every effective target (profile + overrides)",
}

DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "incident-report.md"

DEFAULT_TEMPLATE = """# Incident report: {{ gameday_id }} {{ title }} (gameday run {{ run_id }})

**Status:** draft, written by the runbook; edit before publishing.
**Verdict:** {{ verdict }} · **Target:** {{ target }} · **Profile:** {{ profile }}
**Started:** {{ started_at }} · **T+0 (partition confirmed):** {{ t0 }} · **Finished:** {{ finished_at }}

## Summary

{{ summary }}

## Success metrics

{{ metrics_table }}

{{ events }}

### Effective targets

{{ targets }}

## Timeline

{{ timeline }}

## Observations

{{ observations }}

## Open questions

{{ open_questions }}

## Action items

{{ action_items }}

## Improvements for next gameday

{{ improvements }}

## Pre-gameday checklist

{{ checklist }}
"""

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

_TIMELINE_KINDS = {
    "run.started", "run.finished", "phase.started", "fault.requested", "fault.active",
    "fault.healed", "stop_condition", "stamp", "notification", "error", "checklist",
}
_TARGET_PARAMS = (
    ("rto_target_seconds", "RTO target", "s"),
    ("rpo_target_seconds", "RPO target", "s"),
    ("alert_fire_target_seconds", "alert fire target", "s"),
    ("team_response_target_seconds", "team response target", "s"),
    ("lag_threshold", "consumer lag threshold", "messages"),
    ("lag_recovery_deadline_seconds", "lag recovery deadline", "s"),
    ("partition_seconds", "partition length", "s"),
    ("partition_safety_margin_seconds", "partition safety margin", "s"),
    ("heal_confirm_seconds", "heal confirmation", "s"),
)


def load_template(path: str | Path | None = None) -> str:
    """The template text: ``path``, else ``docs/incidents/template.md``, else ``DEFAULT_TEMPLATE``."""
    p = Path(path) if path is not None else DEFAULT_TEMPLATE_PATH
    if path is None and not p.exists():
        return DEFAULT_TEMPLATE
    return p.read_text(encoding="utf-8")


def draft_incident_report(
    template_text: str | None,
    *,
    scorecard: Mapping[str, Any],
    journal_entries: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any],
    observations: Mapping[str, Mapping[str, str]],
    open_questions: Sequence[tuple[str, str]],
    action_items: Sequence[Mapping[str, Any]],
    playbook: Playbook,
) -> str:
    """The incident report (Markdown) with every placeholder of ``template_text`` filled
    (``None`` = ``DEFAULT_TEMPLATE``)."""
    entries = sorted(journal_entries, key=lambda e: int(e.get("seq", 0)))
    t0 = _t0(entries)
    metrics = list(scorecard.get("metrics") or [])
    values = {
        "gameday_id": str(scorecard.get("gameday_id") or params.get("gameday_id") or playbook.id),
        "title": playbook.title,
        "run_id": str(scorecard.get("run_id") or params.get("run_id") or ""),
        "target": str(scorecard.get("target") or params.get("target") or ""),
        "profile": str(scorecard.get("profile") or params.get("profile") or ""),
        "started_at": str(scorecard.get("started_at") or "—"),
        "finished_at": str(scorecard.get("finished_at") or "—"),
        "t0": t0.isoformat() if t0 else "not reached (no confirmed injection)",
        "verdict": str(scorecard.get("verdict") or "unknown").upper(),
        "summary": _summary(scorecard, metrics, entries, t0, open_questions, action_items, playbook),
        "metrics_table": metrics_table(metrics, playbook),
        "events": _events(scorecard.get("events") or {}),
        "timeline": timeline_table(entries, t0, playbook),
        "observations": _observations(observations, entries, playbook),
        "open_questions": _open(open_questions, playbook),
        "action_items": _action_items(action_items),
        "improvements": _improvements(metrics, observations, open_questions, action_items, playbook),
        "checklist": _checklist(entries),
        "targets": _targets(params, scorecard),
    }
    text = template_text if template_text is not None else DEFAULT_TEMPLATE
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# --------------------------------------------------------------------------------------------------


def _t0(entries: Sequence[Mapping[str, Any]]) -> datetime | None:
    for e in entries:
        if e.get("kind") == "fault.active":
            return parse_time(str(e.get("t0") or e.get("at") or e["ts"]))
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.1f}"
    return str(value)


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def _label(metric_name: Any, playbook: Playbook) -> str:
    """The playbook's name of a metric (its own name when the playbook has none)."""
    return playbook.label(str(metric_name))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def metrics_table(metrics: Sequence[Mapping[str, Any]], playbook: Playbook) -> str:
    """The success-metrics table in the playbook's order; a metric missing from the scorecard is
    shown as not measured, never as passed."""
    by_name = {m.get("name"): m for m in metrics}
    status_text = {"pass": "✅ Pass", "fail": "❌ Fail", "not_measured": "⚪ Not measured"}
    rows = ["| Metric | Target | Result | Status | Evidence |", "|---|---|---|---|---|"]
    names = list(playbook.metric_names) + [str(n) for n in by_name if n not in playbook.metric_names]
    for name in names:
        m = by_name.get(name)
        label = _label(name, playbook)
        if m is None:
            rows.append(f"| {label} | — | — | {status_text['not_measured']} | not in the scorecard |")
            continue
        unit = str(m.get("unit") or "")
        target = f"{m.get('comparison', '')} {_fmt(m.get('target'))} {unit}".strip()
        result = "—" if m.get("value") is None else f"{_fmt(m.get('value'))} {unit}".strip()
        status = status_text.get(str(m.get("status")), str(m.get("status")))
        rows.append(f"| {label} | {_md(target)} | {_md(result)} | {status} | {_md(m.get('evidence', ''))} |")
    return "\n".join(rows)


def _summary(
    scorecard: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    entries: Sequence[Mapping[str, Any]],
    t0: datetime | None,
    open_questions: Sequence[tuple[str, str]],
    action_items: Sequence[Mapping[str, Any]],
    playbook: Playbook,
) -> str:
    verdict = str(scorecard.get("verdict") or "unknown")
    target = scorecard.get("target") or "?"
    profile = scorecard.get("profile") or "?"
    fault = next((str(e.get("fault")) for e in entries if e.get("kind") == "fault.requested" and e.get("fault")),
                 "the fault")
    lines = []
    if t0 is None:
        lines.append(
            f"The gameday ({profile} profile, {target} target) did not reach its fault: "
            "no fault was confirmed injected."
        )
    else:
        lines.append(f"{playbook.title}: {fault}, on the {target} target ({profile} profile), confirmed in force at "
                     f"{t0.strftime('%Y-%m-%d %H:%M:%S')} UTC (T+0).")
    verdict_line = {
        "pass": "**Verdict: PASS.** Every measured target was met.",
        "fail": "**Verdict: FAIL.** At least one target was missed or a required metric could not be measured.",
        "aborted": "**Verdict: ABORTED.** The run did not reach its end"
        + (f" ({scorecard['reason']})." if scorecard.get("reason") else "."),
    }.get(verdict, f"**Verdict: {verdict.upper()}.**")
    lines.append(verdict_line)
    by_name = {m.get("name"): m for m in metrics}
    failed = [m for m in metrics if m.get("status") == "fail"]
    unmeasured = [m for m in metrics if m.get("status") == "not_measured"]
    for name in ("rto_seconds", "rpo_seconds", "event_loss_count", "user_facing_errors"):
        m = by_name.get(name)
        if m is None:
            continue
        label = _label(name, playbook)
        if m.get("status") == "not_measured":
            lines.append(f"- {label}: not measured ({m.get('reason') or m.get('evidence', '')}).")
        else:
            unit = f" {m.get('unit')}" if m.get("unit") else ""
            lines.append(
                f"- {label}: {_fmt(m.get('value'))}{unit} against a target of {m.get('comparison', '')} "
                f"{_fmt(m.get('target'))}{unit}: {'met' if m.get('status') == 'pass' else 'MISSED'}."
            )
    if failed:
        lines.append("Missed: " + ", ".join(_label(m["name"], playbook) for m in failed) + ".")
    if unmeasured:
        lines.append(
            f"{len(unmeasured)} metric(s) could not be measured: "
            + ", ".join(_label(m["name"], playbook) for m in unmeasured) + "."
        )
    lines.append(f"{len(open_questions)} playbook question(s) left open; {len(action_items)} action item(s).")
    first, rest = lines[0] + " " + lines[1], lines[2:]
    bullets = [x for x in rest if x.startswith("- ")]
    tail = [x for x in rest if not x.startswith("- ")]
    return "\n".join([first, "", *bullets, "", *tail]).strip()


def _events(events: Mapping[str, Any]) -> str:
    if not events:
        return "Canaries: none recorded."
    keys = ("canaries_sent", "canaries_stored", "canaries_lost", "canaries_duplicated")
    return "Canaries: " + ", ".join(f"{k.removeprefix('canaries_')} {events.get(k, 0)}" for k in keys) + "."


def _describe(e: Mapping[str, Any], playbook: Playbook) -> str:
    kind = e.get("kind")
    if kind == "phase.started":
        return f"phase started: {playbook.title_of(str(e.get('phase') or ''))}"
    if kind == "stamp":
        at = e.get("at")
        return f"stamp: {str(e.get('stamp', '')).replace('_', ' ')}" + ("" if at else f" (time unknown: {e.get('reason', '')})")
    if kind == "notification":
        return f"notification ({e.get('event', '')}): {e.get('detail', '')}"
    if kind == "run.finished":
        return f"run finished: {e.get('verdict', '')} {e.get('reason', '') or ''}".strip()
    if kind == "run.started":
        return f"run started ({e.get('target', '')}, {e.get('profile', '')})"
    if kind == "error":
        return f"error: {e.get('error', '')} {e.get('message', '')}".strip()
    if kind == "checklist":
        return "pre-gameday checklist recorded: " + ("complete" if e.get("complete") else f"{len(e.get('missing') or [])} item(s) not done")
    if kind == "stop_condition":
        return f"stop condition {e.get('condition', '')}: {e.get('detail', '')}"
    if kind == "fault.healed":
        return f"fault ended ({e.get('by', 'runbook')})"
    return {
        "fault.requested": "fault requested",
        "fault.active": "fault confirmed in force (T+0)",
    }.get(str(kind), str(kind))


def timeline_table(entries: Sequence[Mapping[str, Any]], t0: datetime | None, playbook: Playbook) -> str:
    """The journal's key moments in time order (a stamp counts at the time it names)."""
    timed = []
    for e in entries:
        if e.get("kind") not in _TIMELINE_KINDS:
            continue
        at = parse_time(str(e["at"])) if e.get("kind") == "stamp" and e.get("at") else parse_time(str(e["ts"]))
        timed.append((at, e))
    if not timed:
        return "_The journal holds no events._"
    rows = ["| T-offset | Time (UTC) | Phase | Event |", "|---|---|---|---|"]
    for at, e in sorted(timed, key=lambda pair: pair[0]):
        offset = format_offset((at - t0).total_seconds()) if t0 else "before T+0"
        rows.append(f"| {offset} | {at.strftime('%H:%M:%S')} | {e.get('phase') or ''} | {_md(_describe(e, playbook))} |")
    return "\n".join(rows)


def _observations(observations: Mapping[str, Mapping[str, str]], entries: Sequence[Mapping[str, Any]],
                  playbook: Playbook) -> str:
    when: dict[tuple[str, str], str] = {}
    for e in entries:
        if e.get("kind") == "observation":
            when[(str(e.get("phase")), str(e.get("question")))] = str(e.get("ts", ""))
    out = []
    for phase in playbook.phases:
        answers = observations.get(phase.id, {})
        questions = list(phase.questions) + [q for q in answers if q not in phase.questions]
        if not questions:
            continue
        out.append(f"### {phase.title} (T+{phase.offset_minutes} min)")
        out.append("")
        for q in questions:
            a = answers.get(q)
            if a is not None and str(a).strip():
                stamp = when.get((phase.id, q))
                out.append(f"- **{q}**" + (f" _(recorded {stamp})_" if stamp else ""))
                out.extend(f"  > {line}" if line else "  >" for line in str(a).splitlines())
            else:
                out.append(f"- **{q}** _open_")
        out.append("")
    return "\n".join(out).strip()


def _open(open_questions: Sequence[tuple[str, str]], playbook: Playbook) -> str:
    if not open_questions:
        return "None: every playbook question was answered."
    return "\n".join(f"- [ ] {playbook.title_of(p)}: {q}" for p, q in open_questions)


def _action_items(items: Sequence[Mapping[str, Any]]) -> str:
    if not items:
        return "_No action items were recorded._"
    rows = ["| # | Title | Owner | Due | Ticket |", "|---|---|---|---|---|"]
    for i, item in enumerate(items, 1):
        rows.append(
            f"| {i} | {_md(item.get('title', ''))} | {_md(item.get('owner') or '—')} | "
            f"{_md(item.get('due') or '—')} | {_md(item.get('ticket') or '—')} |"
        )
    return "\n".join(rows)


def _improvements(
    metrics: Sequence[Mapping[str, Any]],
    observations: Mapping[str, Mapping[str, str]],
    open_questions: Sequence[tuple[str, str]],
    action_items: Sequence[Mapping[str, Any]],
    playbook: Playbook,
) -> str:
    """The playbook's "Improvements from this gameday" list, drafted from what the run found."""
    items: list[str] = []
    for m in metrics:
        label = _label(m.get("name"), playbook)
        if m.get("status") == "fail":
            items.append(f"Fix: {label} missed its target ({_fmt(m.get('value'))} vs {m.get('comparison', '')} {_fmt(m.get('target'))}).")
        elif m.get("status") == "not_measured":
            items.append(f"Measure {label} next time ({m.get('reason') or m.get('evidence', '')}).")
    pm = observations.get("postmortem", {})
    for q in ("What could be improved?", "Any code/config changes needed?", "Update runbooks with learnings"):
        if str(pm.get(q, "")).strip():
            items.append(f"{q} {' '.join(str(pm[q]).split())}")
    for item in action_items:
        items.append(f"Action item: {item.get('title', '')}" + (f" ({item['ticket']})" if item.get("ticket") else ""))
    if open_questions:
        items.append(f"Answer the {len(open_questions)} playbook question(s) left open during the gameday.")
    lines = [f"- [ ] {x}" for x in items] or ["- [ ] (nothing found by the runbook)"]
    return "\n".join(lines)


def _checklist(entries: Sequence[Mapping[str, Any]]) -> str:
    recorded = [e for e in entries if e.get("kind") == "checklist"]
    if not recorded:
        return "_The checklist was not recorded._"
    last = recorded[-1]
    lines = [f"Recorded at {last.get('ts', '')}:"]
    for item, done in dict(last.get("items") or {}).items():
        lines.append(f"- [{'x' if done else ' '}] {item}")
    return "\n".join(lines)


def _targets(params: Mapping[str, Any], scorecard: Mapping[str, Any]) -> str:
    rows = ["| Parameter | Value |", "|---|---|"]
    for key, label, unit in _TARGET_PARAMS:
        if params.get(key) is not None:
            rows.append(f"| {label} (`{key}`) | {_fmt(params[key])} {unit} |")
    required = params.get("required_metrics") or scorecard.get("required_metrics")
    if required:
        rows.append(f"| required metrics | {', '.join(map(str, required))} |")
    return "\n".join(rows) if len(rows) > 2 else "_No targets recorded._"
