"""The post-mortem draft: ``docs/incidents/template.md`` filled from plain data (the scorecard dict,
the journal entries, the effective parameters, the team's observations, open questions and action
items, and the run's samples when there are any). No kernel, widget or target is needed, so the
archive can write it whatever happened.

Written so that a post-mortem can be drafted without opening samples.csv: the timeline holds the
alert firings, the failed checks, the stop and the moments only the samples show (buffer full, the
first and last drop, the lag's peak); the loss is reconciled across its parts; the configuration that
mattered is named (staged flaws, buffer, partition, stop conditions, what was dropped); and each missed
target becomes an improvement a team can act on, with the run's own numbers.

Placeholders are ``{{ name }}`` (blanks inside the braces are optional). Known names are listed in
``PLACEHOLDERS``; an unknown placeholder is left visible so a template typo shows in the report. A
template without some placeholder simply omits that section.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gamedaylib import findings
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
    "loss": "where the events went: canaries lost, users' events lost, the services' drop count, reconciled",
    "configuration": "the configuration that mattered: staged lab flaws, buffer, partition, stop conditions",
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

### Where the events went

{{ loss }}

### Configuration that mattered

{{ configuration }}

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
    "run.started", "run.finished", "phase.started", "phase.finished", "fault.requested", "fault.active",
    "fault.healed", "stop_condition", "stamp", "notification", "error", "checklist", "check", "note",
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
    samples: Any = None,
) -> str:
    """The incident report (Markdown) with every placeholder of ``template_text`` filled
    (``None`` = ``DEFAULT_TEMPLATE``). ``samples`` (the run's samples.csv as a DataFrame) adds what
    only the time series show to the timeline: buffer full, drops, alerts firing, the lag's peak."""
    entries = sorted(journal_entries, key=lambda e: int(e.get("seq", 0)))
    t0 = _t0(entries)
    metrics = list(scorecard.get("metrics") or [])
    capacity = _max(samples, "buffer_capacity")
    values = {
        "gameday_id": str(scorecard.get("gameday_id") or params.get("gameday_id") or playbook.id),
        "title": playbook.title,
        "run_id": str(scorecard.get("run_id") or params.get("run_id") or ""),
        "target": str(scorecard.get("target") or params.get("target") or ""),
        "profile": str(scorecard.get("profile") or params.get("profile") or ""),
        "started_at": findings.fmt_time(scorecard.get("started_at")),
        "finished_at": findings.fmt_time(scorecard.get("finished_at")),
        "t0": findings.fmt_time(t0) if t0 else "not reached (no confirmed injection)",
        "verdict": str(scorecard.get("verdict") or "unknown").upper(),
        "summary": _summary(scorecard, metrics, entries, t0, open_questions, action_items, playbook),
        "metrics_table": metrics_table(metrics, playbook),
        "events": _events(scorecard.get("events") or {}),
        "timeline": timeline_table(entries, t0, playbook, findings.moments_from_samples(samples, t0)),
        "observations": _observations(observations, entries, playbook),
        "open_questions": _open(open_questions, playbook),
        "action_items": _action_items(action_items),
        "improvements": _improvements(metrics, observations, open_questions, action_items, playbook,
                                      scorecard=scorecard, params=params, entries=entries, capacity=capacity),
        "checklist": _checklist(entries),
        "targets": _targets(params, scorecard),
        "loss": _loss(scorecard),
        "configuration": "\n".join(f"- {line}" for line in findings.configuration(params, scorecard, capacity))
        or "_Nothing recorded._",
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
                     f"{findings.fmt_time(t0)} (T+0).")
    lines.append(f"**Verdict: {verdict.upper()}.** {findings.verdict_reason(scorecard)}")
    by_name = {m.get("name"): m for m in metrics}
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
    if unmeasured:
        lines.append(
            f"{len(unmeasured)} metric(s) could not be measured: "
            + ", ".join(_label(m["name"], playbook) for m in unmeasured) + "."
        )
    if metrics:
        lines.append(findings.loss_summary(scorecard))
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
    if kind == "phase.finished":
        return (f"**phase failed: {playbook.title_of(str(e.get('phase') or ''))}** "
                f"({e.get('error', '')}: {e.get('message', '')})")
    if kind == "stamp":
        at = e.get("at")
        return (f"stamp: {str(e.get('stamp', '')).replace('_', ' ')}"
                + ("" if at else f" (time unknown: {e.get('reason', '')})"))
    if kind == "notification":
        return f"notification ({e.get('event', '')}): {e.get('detail', '')}"
    if kind == "run.finished":
        return f"run finished: {e.get('verdict', '')} {e.get('reason', '') or ''}".strip()
    if kind == "run.started":
        return f"run started ({e.get('target', '')}, {e.get('profile', '')})"
    if kind == "error":
        return f"error: {e.get('error', '')} {e.get('message', '')}".strip()
    if kind == "checklist":
        return "pre-gameday checklist recorded: " + (
            "complete" if e.get("complete") else f"{len(e.get('missing') or [])} item(s) not done")
    if kind == "stop_condition":
        return f"stop condition {e.get('condition', '')}: {e.get('detail', '')} (the fault was ended at once)"
    if kind == "fault.healed":
        return f"fault ended ({e.get('by', 'runbook')})"
    if kind == "check":
        return f"check failed: {e.get('name', '')}: {e.get('detail', '')}"
    if kind == "note":
        return str(e.get("note", ""))
    return {
        "fault.requested": "fault requested",
        "fault.active": "fault confirmed in force (T+0)",
    }.get(str(kind), str(kind))


_ALERT = re.compile(r"\s*(?P<what>.+?) at (?P<offset>T[+-](?:\d+:)?\d{1,3}:\d{2})\s*$")


def _alert_moments(entries: Sequence[Mapping[str, Any]], t0: datetime | None) -> list[tuple[datetime, str]]:
    """The alert timeline the incident-response phase recorded (``alert timeline``: "NAME (where) at
    T+00:03; ..."), one row per alert firing."""
    if t0 is None:
        return []
    out = []
    for e in entries:
        text = (e.get("values") or {}).get("alert timeline") if e.get("kind") == "phase.finished" else None
        if not isinstance(text, str) or text.startswith("unavailable"):
            continue
        for part in text.split("; "):
            m = _ALERT.match(part)
            if m:
                out.append((t0 + timedelta(seconds=_offset_seconds(m.group("offset"))),
                            f"alert fired: {m.group('what')}"))
    return out


def _offset_seconds(offset: str) -> float:
    sign = -1 if offset[1] == "-" else 1
    parts = [int(p) for p in offset[2:].split(":")]
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return float(sign * seconds)


def _timeline_rows(entries: Sequence[Mapping[str, Any]]) -> list[tuple[datetime, Mapping[str, Any]]]:
    timed = []
    for e in entries:
        kind = e.get("kind")
        if kind == "phase.finished" and e.get("status") != "failed":
            continue
        if kind == "check" and e.get("ok") is not False:
            continue
        if kind == "note" and e.get("note") != "recovered" and not str(e.get("note", "")).startswith(
                ("the fault ended early", "rollback")):
            continue
        if kind not in _TIMELINE_KINDS:
            continue
        if kind == "stamp" and e.get("at"):
            at = parse_time(str(e["at"]))
        elif kind == "note" and e.get("recovered_at"):
            at = parse_time(str(e["recovered_at"]))
            e = {**e, "note": "full recovery: healed, lag under the threshold, buffers empty, canaries stored again"}
        elif kind == "fault.healed" and e.get("at"):
            at = parse_time(str(e["at"]))
        else:
            at = parse_time(str(e["ts"]))
        timed.append((at, e))
    return timed


def timeline_table(entries: Sequence[Mapping[str, Any]], t0: datetime | None, playbook: Playbook,
                   moments: Sequence[findings.Moment] = ()) -> str:
    """The journal's key moments in time order (a stamp counts at the time it names), with the alert
    firings and what the samples show (``moments``: buffer full, drops, the lag's peak)."""
    rows_in: list[tuple[datetime, str, str]] = [
        (at, str(e.get("phase") or ""), _describe(e, playbook)) for at, e in _timeline_rows(entries)]
    phases = _phase_at(entries)
    alerts = _alert_moments(entries, t0)
    rows_in += [(at, phases(at), words) for at, words in alerts]
    if alerts:  # the alert timeline names each alert: the sampler's bare count adds nothing then
        moments = [m for m in moments if not m.words.startswith("alerts firing")]
    rows_in += [(m.at, phases(m.at), f"{m.words} _(samples.csv)_") for m in moments]
    if not rows_in:
        return "_The journal holds no events._"
    rows = ["| T-offset | Time (UTC) | Phase | Event |", "|---|---|---|---|"]
    for at, phase, words in sorted(rows_in, key=lambda r: r[0]):
        offset = format_offset((at - t0).total_seconds()) if t0 else "before T+0"
        rows.append(f"| {offset} | {at.strftime('%H:%M:%S')} | {phase} | {_md(words)} |")
    return "\n".join(rows)


def _phase_at(entries: Sequence[Mapping[str, Any]]) -> Any:
    starts = sorted((parse_time(str(e["ts"])), str(e.get("phase") or "")) for e in entries
                    if e.get("kind") == "phase.started" and e.get("ts"))

    def phase(at: datetime) -> str:
        current = ""
        for start, name in starts:
            if start <= at:
                current = name
        return current

    return phase


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
                out.append(f"- **{q}**" + (f" _(recorded {findings.fmt_time(stamp)})_" if stamp else ""))
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
    *,
    scorecard: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    entries: Sequence[Mapping[str, Any]] = (),
    capacity: float | None = None,
) -> str:
    """The playbook's "Improvements from this gameday" list, drafted from what the run found: for each
    missed target, what to change and where to look, with the run's own numbers; then what could not
    be measured, the team's answers, the action items and the questions left open."""
    card, params = scorecard or {}, params or {}
    items: list[str] = []
    stopped = card.get("stopped_by") or None
    if stopped:
        items.append(_stop_advice(stopped, params))
    for m in metrics:
        label = _label(m.get("name"), playbook)
        if m.get("status") == "fail":
            items.append(_advice(m, label, card, params, entries, capacity))
        elif m.get("status") == "not_measured":
            items.append(f"Measure {label} next time: {findings.metric_why(m)}.")
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


def _n(value: Any) -> str:
    return "?" if value is None else _fmt(float(value)) if isinstance(value, (int, float)) else str(value)


def _value(entries: Sequence[Mapping[str, Any]], key: str) -> Any:
    """A measurement a phase recorded (``phase.finished`` values), the last one."""
    found = None
    for e in entries:
        if e.get("kind") == "phase.finished" and key in (e.get("values") or {}):
            found = e["values"][key]
    return found


def _advice(m: Mapping[str, Any], label: str, card: Mapping[str, Any], params: Mapping[str, Any],
            entries: Sequence[Mapping[str, Any]], capacity: float | None) -> str:
    """What a team can act on for one missed target, with this run's numbers."""
    name, value, target = m.get("name"), m.get("value"), m.get("target")
    events = card.get("events") or {}
    missed = (f"{label} {_n(value)} {m.get('unit', '')} against {m.get('comparison', '')} "
              f"{_n(target)}").replace("  ", " ")
    dropped = events.get("service_reported_dropped")
    overflow = params.get("lab_overflow")
    per_replica = params.get("lab_buffer_capacity")
    rate, seconds = params.get("lab_event_rate"), params.get("partition_seconds")
    room = (f" (users alone post {_n(rate)} events/s: a {_n(seconds)} s outage needs room for about "
            f"{_n(float(rate) * float(seconds))})" if rate and seconds else "")
    held = f"{_n(per_replica)} per replica" if per_replica is not None else (
        f"{_n(capacity)} over every replica" if capacity is not None else "its capacity")
    if name == "event_loss_count":
        lost = (events.get("canaries_lost") or 0) + (events.get("ground_truth_lost") or 0)
        if dropped:
            how = ("discarding the oldest event when full (`lab_overflow=drop`)" if overflow == "drop"
                   else "dropping events when full")
            text = (f"{missed}: the gateways dropped {_n(dropped)} events (events_dropped_total) while NATS was "
                    f"unreachable, their buffer holding {held}{room} and {how}. Size the gateway buffer for the "
                    "longest NATS outage you must ride out, or make a full buffer refuse new events (503, so "
                    "clients retry) rather than silently drop accepted ones; alert on any increase of "
                    "`events_dropped_total`.")
            if lost and float(lost) > float(dropped):
                text += (f" {_n(float(lost) - float(dropped))} more were lost without any drop counted: trace "
                         "them too.")
            return text
        return (f"{missed}, and no service counted a drop: events were lost silently. Trace an accepted "
                "event through publish (JetStream ack before answering 202?) and the consumer (ack before the "
                "database commit?), and add a counter where they disappear.")
    if name == "user_facing_errors":
        why = (f" With `lab_overflow=reject` a full buffer ({held}) answers 503: size it for the outage{room}."
               if overflow == "reject" else "")
        return (f"{missed}: users were told their events failed while NATS was unreachable.{why} Keep accepting "
                "(buffer, or a durable local queue) or degrade more gently, and alert on the gateway's 5xx rate.")
    if name == "rpo_seconds":
        return (f"{missed}: canaries were lost over a window this long ({findings.metric_why(m)}). Cut the loss "
                "first (see the event loss); a shorter loss window follows.")
    if name == "rto_seconds":
        reconnect = _value(entries, "reconnected after the heal (s)")
        lag: Mapping[str, Any] = next(
            (x for x in card.get("metrics") or [] if x.get("name") == "lag_recovery_seconds"), {})
        return (f"{missed}: after the heal the services reconnected in {_n(reconnect)} s and the consumer lag "
                f"came back under the threshold in {_n(lag.get('value'))} s; speed up the slowest step "
                "(reconnect backoff, consumer batch size and replicas, buffer flush rate).")
    if name == "lag_recovery_seconds":
        return (f"{missed}: the consumer drained its backlog too slowly; raise its throughput (batch size, "
                "max_ack_pending, replicas) or cut the backlog (shorter outage, faster flush).")
    if name == "duplicate_count":
        return (f"{missed}: events were stored more than once. Check that every publish carries `Nats-Msg-Id` "
                "within the stream's duplicate window and that the consumer's insert is idempotent (a unique key "
                "on idempotency_key).")
    if name == "alert_fire_seconds":
        return (f"{missed}: {findings.metric_why(m)}. Check the alert rules' expressions and `for:` durations "
                "against what the services export, and that Alertmanager routes them to the on-call.")
    if name == "team_response_seconds":
        return (f"{missed}: from the first alert to 'acknowledged'. Check paging (who was paged, how), and that "
                "the alert links the runbook.")
    return f"{missed}: {findings.metric_why(m)}. Decide whether the system or the target must change."


def _stop_advice(stopped: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    condition = str(stopped.get("condition") or "")
    words = str(stopped.get("words") or "")
    if condition == "stop_buffer_fraction":
        return (f"The gateway buffer reached the stop limit ({words}): the buffer would not have held the planned "
                f"{_n(params.get('partition_seconds'))} s partition. Size it for the outage (or make a full "
                "buffer refuse, not drop), then run the gameday again with the same stop condition.")
    if condition == "stop_error_rate":
        return (f"Users got errors above the stop limit ({words}): find which answers failed (the gateway's "
                "5xx, canary answers) and why before the next gameday.")
    if condition == "stop_lag_limit":
        return f"The consumer lag crossed the stop limit ({words}): the backlog outgrew what was judged safe."
    if stopped.get("blind"):
        return f"The runbook lost sight of its inputs ({words}): make the monitoring it reads survive the fault."
    return f"A stop condition fired ({words}): find out why before the next gameday."


def _loss(scorecard: Mapping[str, Any]) -> str:
    events = scorecard.get("events") or {}
    lines = [findings.loss_summary(scorecard), "", "| Part | Count | What it counts |", "|---|---|---|"]
    for line in findings.loss_lines(events):
        lines.append(f"| {line.label} | {'—' if line.value is None else _fmt(line.value)} | {_md(line.counts)} |")
    return "\n".join(lines)


def _max(samples: Any, column: str) -> float | None:
    if samples is None or column not in samples:
        return None
    values = [float(v) for v in list(samples[column]) if v is not None and not math.isnan(float(v))]
    return max(values) if values else None


def _checklist(entries: Sequence[Mapping[str, Any]]) -> str:
    recorded = [e for e in entries if e.get("kind") == "checklist"]
    if not recorded:
        return "_The checklist was not recorded._"
    last = recorded[-1]
    lines = [f"Recorded at {findings.fmt_time(last.get('ts'))}:"]
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
