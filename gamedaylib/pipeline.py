"""What every gameday on the event pipeline (users -> api-gateway -> JetStream -> reporting ->
PostgreSQL) measures the same way, and the phases they share word for word.

Facts: the canaries and the loss in its parts (canaries, what the services report they dropped, the
lab's ground truth), user-facing errors, duplicate rows and ``duplicate_event`` logs, the SSE stream,
consumer-lag blindness. Phases: RPO verification, incident response, post-mortem. A gameday's own
``phases.py`` calls these; the judging itself is ``gamedaylib.metrics`` (pure functions).
"""

from __future__ import annotations

import urllib.request
from datetime import datetime, timedelta
from typing import Any

from gamedaylib import forms, metrics
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import GamedayError, PreflightFailed, ProbeError
from gamedaylib.observations import open_questions
from gamedaylib.phase import PhaseResult, fmt
from gamedaylib.run import Run

__all__ = ["acked_through", "back_to_baseline", "check_alert_rules", "incident_response", "loaded_alert_rules",
           "postmortem", "preflight", "rpo", "settled"]

REPORTING = "reporting"
# the label that tells the same alert firing for several services apart (the lab and Prometheus
# scrape jobs carry ``job``; Kubernetes service monitors add ``service``), most telling first
ALERT_SOURCE_LABELS = ("service", "job", "instance")


def back_to_baseline(now: float | None, baseline: float | None, threshold: float) -> bool:
    """A gauge that never sits at 0 on a busy system (events in a gateway's buffer between publishes,
    messages awaiting their ack in replicated JetStream) is back when it is within its pre-flight level:
    at most twice the baseline's median, or the baseline plus the lag threshold, whichever is larger."""
    if now is None:
        return False
    base = baseline or 0.0
    return now <= max(2 * base, base + threshold)


def settled(reading: Any, baseline: Any, threshold: float) -> bool:
    """The pipeline caught up: consumer lag (num_pending) under the threshold, the gateway buffers and
    the messages awaiting ack back to their pre-flight levels."""
    return (reading.lag_pending is not None and reading.lag_pending < threshold
            and back_to_baseline(reading.buffer_size, baseline.buffer_size if baseline else None, threshold)
            and back_to_baseline(reading.lag_ack_pending, baseline.lag_ack_pending if baseline else None, threshold))


def acked_through(reading: Any, seq: float | None) -> bool:
    """Every stream message up to ``seq`` is acknowledged by the consumer (its ack floor has reached
    it): processed, including a message whose delivery was lost in the fault and that waits for its
    redelivery (``ack_wait``), which no gauge at its pre-flight level shows. True when either number
    is unknown (nothing more to wait for that could be seen)."""
    floor = getattr(reading, "ack_floor_seq", None)
    return seq is None or floor is None or floor >= seq


def delta(now: float | None, before: float | None) -> float | None:
    """A counter's increase since ``before`` (never negative: a replica that restarted resets it)."""
    return None if now is None else max(0.0, now - (before or 0.0))


def preflight(run: Run, res: PhaseResult) -> None:
    """T-15: every service healthy and the fault applicable (the target's and the fault's own checks),
    consumer-lag baseline (median over a window) under the threshold, every stop condition able to see
    its input, a Prometheus snapshot where allowed, pre-chaos event counts, dashboards, the pre-gameday
    checklist. A failed fatal check stops the gameday here: nothing is injected."""
    p = run.params
    for check in [*run.target.preflight(), *run.fault.preflight()]:
        run.check(res, check.name, check.ok, check.detail, check.fatal)
    run.run_commands("preflight", res)
    seconds = float(p.baseline_seconds or 0)
    base = run.take_baseline(seconds) if run.sampler is not None else run.scenario.make_reader(run).read()
    if base is None or base.lag_pending is None:
        why = "no reading" if base is None else base.errors.get("lag_pending", "unreadable")
        run.check(res, "consumer lag baseline", False, why, fatal=True)
    else:
        run.check(res, "consumer lag baseline", base.lag_pending < p.lag_threshold,
                  f"{base.lag_pending:g} messages pending (median over {seconds:g} s; threshold "
                  f"{p.lag_threshold:g}); {fmt(base.lag_ack_pending)} delivered, awaiting ack (not counted)",
                  fatal=True)
    if base is not None:
        blind = run.stop_condition_blindness(base)
        for need, why in blind.items():
            run.check(res, f"stop condition input readable: {need}", False,
                      f"{why}; a stop condition that cannot see cannot stop", fatal=True)
        if not blind:
            run.check(res, "every stop condition can see its input", True,
                      ", ".join(f"{k}: {v}" for k, v in sorted(set(base.sources.items())) if k in (
                          "lag_pending", "buffer_fraction_max", "requests_total")))
        res.values["lag baseline: pending / awaiting ack (messages)"] = f"{fmt(base.lag_pending)} / " \
                                                                       f"{fmt(base.lag_ack_pending)}"
        res.values["gateway buffer (events)"] = base.buffer_size
        res.values["gateway / reporting instances up"] = f"{fmt(base.gateway_instances)} / " \
                                                        f"{fmt(base.reporting_instances)}"
        res.values["service readings from"] = base.sources.get("buffer_size", "—")
    try:
        snap = run.prometheus().snapshot()
        run.check(res, "Prometheus TSDB snapshot", True, str(snap))
    except ProbeError as exc:
        run.check(res, "Prometheus TSDB snapshot", False, exc.reason)
    check_alert_rules(run, res)
    try:
        events = run.events_store()
        count = events.count_since(run.clock.started_at - timedelta(minutes=20))
        res.values["events stored in the last 20 min (pre-chaos)"] = count
        run.check(res, "events table reachable", True, f"{count} events in the last 20 min", fatal=True)
        missing = events.check_indexes()
        run.check(res, "events table indexes", not missing, "all present" if not missing else f"missing: {missing}")
    except ProbeError as exc:
        run.check(res, "events table reachable", False, exc.reason, fatal=True)
    checklist = forms.checklist_form(run.journal, run.playbook.checklist, checklist=p.checklist, live=run.live,
                                     show=False)
    if run.live:
        checklist.record(source="pre-flight")  # the state as it is now (headless: journaled once)
    run.show(checklist)
    dashboards = dict(run.target.endpoints.dashboards) | dict(p.dashboards)
    if dashboards:
        run.show("**Dashboards:** " + " · ".join(f"[{n}]({u})" for n, u in dashboards.items()))
    failed = [c for c in res.checks if c.fatal and not c.ok]
    if failed:
        res.ok = False
        raise PreflightFailed("pre-flight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
                              + "; nothing was injected", [c.name for c in failed])


def rpo(run: Run, res: PhaseResult) -> None:
    """Every canary accounted (lost -> loss window -> RPO), the loss in its parts (canaries, what the
    services report they dropped, the lab's ground truth), errors, duplicates, critical events."""
    p = run.params
    report = run.canary_report(final=True)
    run.measure(metrics.rpo(report, float(p.rpo_target_seconds or 0)))
    parts = loss_parts(run, report)
    ev = run.scorecard.events
    if not isinstance(report, str):
        ev.update(canaries_sent=int(report.sent), canaries_stored=int(report.stored),
                  canaries_lost=int(report.lost), canaries_duplicated=int(report.duplicated))
        res.values["canaries sent / stored / lost / duplicated"] = (
            f"{report.sent} / {report.stored} / {report.lost} / {report.duplicated}")
        run.figure("canaries.png", lambda charts: charts.canary_figure(report, run.clock.t0))
    ev.update(service_reported_dropped=parts.service_reported_dropped, ground_truth_lost=parts.ground_truth_lost)
    if parts.ground_truth_accepted is not None:
        res.values["ground truth: user events accepted (202)"] = parts.ground_truth_accepted
        res.values["ground truth: accepted but not stored"] = parts.ground_truth_lost
    res.values["the gateways report dropped (events_dropped_total, since pre-flight)"] = parts.service_reported_dropped
    run.measure(metrics.event_loss(parts))
    measure_errors(run)
    dups = duplicate_rows(run)
    run.measure(metrics.duplicates(dups, 0 if isinstance(report, str) else int(report.duplicated)))
    try:
        events = run.events_store()
        crit = events.critical_types(run.clock.started_at, list(run.playbook.critical_event_types))
        res.values["critical events stored since start"] = ", ".join(f"{k}: {v}" for k, v in crit.items())
        window = events.window_stats(run.clock.started_at - timedelta(hours=1))
        res.values["events in the last hour (min created, max created, count)"] = (
            f"{fmt(window[0])}, {fmt(window[1])}, {window[2]}")
    except ProbeError as exc:
        run.check(res, "events table", False, exc.reason)
    for name in ("rpo_seconds", "event_loss_count", "user_facing_errors", "duplicate_count"):
        m = run.scorecard.metric(name)
        if m:
            res.values[run.playbook.label(name)] = f"{fmt(m.value)} ({m.status})"
    run.run_commands("rpo", res)


def loaded_alert_rules(run: Run) -> tuple[list[str], list[str]] | str:
    """The gameday's alert rules (``Scenario.alerts``) split into (loaded, missing) in the Prometheus the
    run reads, or why that cannot be told (no Prometheus: Alertmanager alone does not list rules)."""
    names = list(run.scenario.alerts)
    if not run.target.endpoints.prometheus_url:
        return "no Prometheus to ask which alert rules are loaded"
    try:
        loaded = run.alert_probe().rule_names()
    except ProbeError as exc:
        return exc.reason
    return [n for n in names if n in loaded], [n for n in names if n not in loaded]


def check_alert_rules(run: Run, res: PhaseResult) -> None:
    """Pre-flight: every alert rule the gameday counts as "the first alert" is loaded, else the alert fire
    time would fail for a rule nobody applied (not fatal: the rest of the gameday still measures)."""
    if not run.scenario.alerts:
        return
    found = loaded_alert_rules(run)
    if isinstance(found, str):
        run.check(res, "the gameday's alert rules loaded", False, f"unknown: {found}")
        return
    loaded, missing = found
    url = run.target.endpoints.prometheus_url
    run.check(res, "the gameday's alert rules loaded", not missing,
              f"all {len(loaded)} loaded in Prometheus {url}" if not missing else
              f"missing in Prometheus {url}: {', '.join(missing)} (apply the gameday's alert rules; "
              + ("the alert fire time counts " + ", ".join(loaded) + " only)" if loaded
                 else "the alert fire time cannot be measured)"))


def incident_response(run: Run, res: PhaseResult) -> None:
    """T+60: the alert timeline (the first gameday alert after T+0), the stamps, team response. When none
    of the gameday's alert rules is loaded in Prometheus, the alert fire time is not measured (a rule
    nobody applied cannot fire: that is not the system's failure)."""
    p = run.params
    fire_target = float(p.alert_fire_target_seconds or 0)
    t0 = run.clock.t0
    fired_at, label, unavailable, waited = None, "", None, 0.0
    rules = loaded_alert_rules(run) if t0 is not None else None
    if isinstance(rules, tuple) and not rules[0]:
        unavailable = (f"none of the gameday's alert rules ({', '.join(rules[1])}) is loaded in Prometheus "
                       f"{run.target.endpoints.prometheus_url}")
    if t0 is not None and unavailable is None:
        try:
            probe = run.alert_probe()
            names = run.scenario.alerts
            event = probe.first_fire_after(t0, names)
            deadline = t0 + timedelta(seconds=fire_target)
            if event is None and utcnow() < deadline:
                run.wait("waiting for the first alert", deadline, done=lambda r: bool(r.alerts_firing)
                         or probe.first_fire_after(t0, names) is not None)
                event = probe.first_fire_after(t0, names)
            try:
                timeline = probe.timeline(run.clock.started_at)
                if timeline:
                    res.values["alert timeline"] = "; ".join(
                        f"{alert_label(e)} at {run.clock.offset(e.starts_at)}" for e in timeline)
            except ProbeError as exc:
                res.values["alert timeline"] = f"unavailable: {exc.reason}"
            if event is not None:
                fired_at, label = event.starts_at, alert_label(event)
                run.alert_fired_at = fired_at
            waited = (utcnow() - t0).total_seconds()
        except ProbeError as exc:
            unavailable = exc.reason
    run.measure(metrics.alert_fire(t0=t0, fired_at=fired_at, label=label, waited=waited, target=fire_target,
                                   unavailable=unavailable))
    run.show(forms.stamp_buttons(run.journal, run.clock, stamps=p.stamps, live=run.live, show=False,
                                 on_stamp=lambda _name: run.measure_team_response()))
    metric = run.measure_team_response()
    res.values["team response (s)"] = metric.value
    run.run_commands("incident_response", res)
    run.observe("incident_response")


def postmortem(run: Run, res: PhaseResult) -> None:
    """T+90: debrief answers, open questions (unanswered ones), action items."""
    run.observe("postmortem")
    run.show(forms.action_items_form(run.journal, items=run.params.action_items, live=run.live, show=False))
    res.values["open questions"] = len(open_questions(run.journal, run.playbook))


def lag_blind_since(run: Run, since: datetime | None) -> str | None:
    """Why recovery by consumer lag cannot be judged: it was read before, but not on some readings
    since ``since`` (None when every reading had it)."""
    if since is None:
        return None
    readings = run.readings_since(since)
    blind = [r for r in readings if r.lag_pending is None]
    if not blind or all(r.lag_pending is None for r in run.readings_since(None)):
        return None
    return (f"consumer lag unreadable on {len(blind)} of {len(readings)} readings since the heal, "
            f"{blind[-1].errors.get('lag_pending', 'unreadable')}")


def loss_parts(run: Run, report: Any) -> metrics.LossParts:
    base, last = run.baseline, run.latest()
    dropped, reason = None, ""
    if last is not None and last.dropped_total is not None:
        dropped = delta(last.dropped_total, base.dropped_total if base else None)
    else:
        reason = (last.errors.get("dropped_total", "unreadable") if last else "no reading")
    truth_lost = truth_accepted = None
    truth = run.target.ground_truth()
    if truth is not None:
        truth_lost = len([k for k in truth.accepted_keys if truth.stored_keys.get(k, 0) == 0])
        truth_accepted = len(truth.accepted_keys)
    return metrics.LossParts(
        canaries_lost=None if isinstance(report, str) else int(report.lost),
        canaries_reason=report if isinstance(report, str) else "",
        service_reported_dropped=dropped, service_reason=reason,
        ground_truth_lost=truth_lost, ground_truth_accepted=truth_accepted)


def measure_errors(run: Run) -> None:
    results = run.canaries.results() if run.canaries is not None else []
    canary_errors = sum(1 for r in results if not r.accepted) if run.canaries is not None else None
    canary_5xx = sum(1 for r in results if (r.status or 0) >= 500)
    base, last = run.baseline, run.latest()
    gateway_5xx = delta(last.requests_5xx, base.requests_5xx if base else None) if last else None
    run.measure(metrics.user_facing_errors(canary_errors=canary_errors, canary_5xx=canary_5xx,
                                           gateway_5xx=gateway_5xx))


def duplicate_rows(run: Run) -> list[tuple[str, int]] | str:
    try:
        rows = run.events_store().duplicates(run.clock.started_at, utcnow())
    except ProbeError as exc:
        return f"events table unreadable: {exc.reason}"
    return [(str(k), int(c)) for k, c in rows]


def duplicate_logs(run: Run) -> int | None:
    try:
        lines = run.target.service_logs(REPORTING, since=run.clock.started_at)
    except GamedayError:
        return None
    return sum(1 for line in lines if "duplicate_event" in line)


def sse_alive(url: str | None) -> tuple[bool, str]:
    """The Corp Cockpit SSE stream answers and sends an event line."""
    if not url:
        return False, "no stream URL"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            line = resp.readline()
            while line and not line.strip():
                line = resp.readline()
            text = line.decode("utf-8", "replace").strip()
            return bool(line), f"HTTP {resp.status}, first line: {text[:80]}"
    except OSError as exc:
        return False, f"{url}: {exc}"


def alert_label(event: Any) -> str:
    """``NATSUnreachable (api-gateway)``: the alert's name and where it fired."""
    where = next((event.labels[k] for k in ALERT_SOURCE_LABELS if event.labels.get(k)), "")
    return f"{event.name} ({where})" if where else event.name
