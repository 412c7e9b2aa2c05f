"""GAMEDAY-001's nine phases, one function each: ``phase(run, result)``.

Each gathers facts through the run (readings, probes, the fault, the forms), records checks and
measurements, and leaves the judging to pure functions (``gamedaylib.metrics``). What one phase
learns for a later one goes in ``run.state`` (a ``PartitionState``), never in ad-hoc attributes.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gamedaylib import metrics
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import GamedayError, PreflightFailed, ProbeError
from gamedaylib.phase import PhaseResult, fmt
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.readings import Reading
from gamedaylib.run import Run

GATEWAY = "api-gateway"
REPORTING = "reporting"
# the label that tells the same alert firing for several services apart (the lab and Prometheus
# scrape jobs carry ``job``; Kubernetes service monitors add ``service``), most telling first
ALERT_SOURCE_LABELS = ("service", "job", "instance")


@dataclass
class PartitionState:
    """What the phases learn for one another."""

    lag_recovered_at: datetime | None = None  # first reading after the heal with lag under the threshold
    drained_at: datetime | None = None  # healed, lag under the threshold, buffer empty, in-flight settled
    recovered_at: datetime | None = None  # ... and every canary accepted since is stored: full recovery
    reconnected_after: float | None = None


def _delta(now: float | None, before: float | None) -> float | None:
    return None if now is None else max(0.0, now - (before or 0.0))


def _state(run: Run) -> PartitionState:
    state: PartitionState = run.state
    return state


def preflight(run: Run, res: PhaseResult) -> None:
    """T-15: every service healthy, consumer-lag baseline (median over a window) under the threshold,
    every stop condition able to see its input, a Prometheus snapshot where allowed, pre-chaos event
    counts, dashboards, the pre-gameday checklist."""
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
    try:
        events = run.events_store()
        count = events.count_since(run.clock.started_at - timedelta(minutes=20))
        res.values["events stored in the last 20 min (pre-chaos)"] = count
        run.check(res, "events table reachable", True, f"{count} events in the last 20 min", fatal=True)
        missing = events.check_indexes()
        run.check(res, "events table indexes", not missing, "all present" if not missing else f"missing: {missing}")
    except ProbeError as exc:
        run.check(res, "events table reachable", False, exc.reason, fatal=True)
    from gamedaylib import forms

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


def injection(run: Run, res: PhaseResult) -> None:
    """T+0: the partition applied with its own deadline, confirmed in force; T+0 is the confirmation."""
    p = run.params
    run.run_commands("injection", res)
    if run.dry_run:
        res.values["would apply"] = run.fault.manifest()
    t0 = run.inject(res, deadline_seconds=p.fault_deadline_seconds)
    if t0 is not None:
        res.values["T+0"] = t0
        res.values["the fault's own deadline (s)"] = p.fault_deadline_seconds
        res.values["partition planned to end at"] = run.clock.offset(t0 + timedelta(seconds=p.partition_seconds))


def _partition_end(run: Run) -> datetime | None:
    t0 = run.clock.t0
    return None if t0 is None else t0 + timedelta(seconds=float(run.params.partition_seconds or 0))


def buffering(run: Run, res: PhaseResult) -> None:
    """T+5 (half-way through the partition): buffer against its capacity, drops, retries, circuit
    breaker, user-facing errors, the SSE stream. Stop conditions are judged while waiting."""
    p = run.params
    end = _partition_end(run)
    if run.clock.t0 is not None and end is not None:
        half = run.clock.t0 + timedelta(seconds=float(p.partition_seconds or 0) / 2)
        run.wait("partition half-way", half, watch=True, detail=f"partition ends at {run.clock.offset(end)}")
    reading = run.latest() or Reading(at=utcnow())
    base = run.baseline or Reading(at=reading.at)
    dropped = _delta(reading.dropped_total, base.dropped_total)
    retries = _delta(reading.retries_total, base.retries_total)
    gateway_5xx = _delta(reading.requests_5xx, base.requests_5xx)
    canary_errors = run.canaries.counts()["failed"] if run.canaries is not None else None
    res.values["gateway buffer (events, every replica)"] = reading.buffer_size
    res.values["buffer capacity (every replica)"] = reading.buffer_capacity
    res.values["fullest replica"] = None if reading.buffer_fraction_max is None else \
        f"{reading.buffer_fraction_max * 100:.0f} % of its capacity"
    res.values["events dropped by the gateway since pre-flight"] = dropped
    res.values["NATS retries since pre-flight"] = retries
    res.values["circuit breaker (0 closed, 1 half-open, 2 open)"] = reading.breaker
    res.values["gateway 5xx since pre-flight"] = gateway_5xx
    res.values["canary errors so far"] = canary_errors
    res.values["lag started rising (s after T+0)"] = _first_lag_rise(run)
    full = reading.buffer_fraction_max is not None and reading.buffer_fraction_max >= 0.999
    run.check(res, "services buffer events", bool(reading.buffer_size) and not full,
              f"{fmt(reading.buffer_size)} events held of {fmt(reading.buffer_capacity)}"
              + ("; a replica's buffer is FULL" if full else ""))
    run.check(res, "no event dropped", dropped == 0 if dropped is not None else False,
              "events_dropped_total unreadable" if dropped is None else f"{dropped:.0f} dropped since pre-flight")
    run.check(res, "retry logic engaged", bool(retries), f"{fmt(retries)} retries since pre-flight")
    errors = (canary_errors or 0) + int(gateway_5xx or 0)
    run.check(res, "no user-facing errors", errors == 0, f"{errors} non-2xx answers so far")
    alive, detail = sse_alive(run.target.endpoints.stream_url)
    run.check(res, "Corp Cockpit SSE stream responsive", alive, detail)
    run.run_commands("buffering", res)
    run.observe("buffering")


def heal(run: Run, res: PhaseResult) -> None:
    """T+10: at the end of the partition, remove it and confirm every service reconnected to NATS
    within ``heal_confirm_seconds``."""
    p = run.params
    end = _partition_end(run)
    if end is not None and run.fault_in_force:
        run.wait("partition running", end, watch=True, detail=f"partition ends at {run.clock.offset(end)}")
    run.run_commands("heal", res)
    if run.dry_run:
        return
    if run.fault_in_force:
        run.heal()
    healed = run.healed_at or utcnow()
    if run.fault_ended_early:
        res.values["the fault ended early"] = run.fault_ended_early
    deadline = healed + timedelta(seconds=p.heal_confirm_seconds)
    reading = run.wait("services reconnecting to NATS", deadline,
                       done=lambda r: r.gateway_connected == 1 and r.reporting_connected == 1)
    if reading is not None:
        took = max(0.0, (reading.at - healed).total_seconds())
        _state(run).reconnected_after = took
        run.check(res, "NATS connections back", True,
                  f"every gateway and reporting replica reconnected {took:.1f} s after the heal "
                  f"(≤ {p.heal_confirm_seconds:g} s)")
        res.values["reconnected after the heal (s)"] = round(took, 1)
    else:
        last = run.latest()
        run.check(res, "NATS connections back", False,
                  f"not every replica reconnected within {p.heal_confirm_seconds:g} s (gateway "
                  f"{fmt(last.gateway_connected if last else None)}, reporting "
                  f"{fmt(last.reporting_connected if last else None)})")
    urls = list(run.target.endpoints.nats_monitor_urls) or [u for u in [run.target.endpoints.nats_monitor_url] if u]
    healthy = [u for u in urls if NatsMonitor(u).healthz()]
    run.check(res, "nats-server healthz", bool(urls) and len(healthy) == len(urls),
              f"{len(healthy)} of {len(urls)} servers answer /healthz")
    res.values["healed at"] = healed


def replay(run: Run, res: PhaseResult) -> None:
    """T+15: lag (num_pending) back under the threshold within the deadline, the gateway buffers
    drained, in-flight messages settled, every accepted canary stored; duplicates and data integrity."""
    p = run.params
    state = _state(run)
    if run.fault_in_force and not run.dry_run:
        run.heal()
    start = run.healed_at or utcnow()
    deadline = start + timedelta(seconds=float(p.lag_recovery_deadline_seconds or 0))
    threshold = p.lag_threshold
    base_ack = (run.baseline.lag_ack_pending if run.baseline else None) or 0.0

    def recovered(r: Reading) -> bool:
        if r.lag_pending is not None and r.lag_pending < threshold and state.lag_recovered_at is None:
            state.lag_recovered_at = r.at
        settled = r.lag_ack_pending is not None and r.lag_ack_pending <= base_ack + threshold
        if r.lag_pending is None or r.lag_pending >= threshold or (r.buffer_size or 0) > 0 or not settled:
            return False
        if state.drained_at is None:
            state.drained_at = r.at  # healed, lag under the threshold, buffers empty, in-flight settled
        return run.canaries_flowing(state.drained_at)

    reading = None if run.dry_run else run.wait("waiting for full recovery", deadline, done=recovered)
    if reading is not None and state.drained_at is not None:
        state.recovered_at = state.drained_at
        run.journal.record("note", phase="replay", note="recovered", recovered_at=state.recovered_at.isoformat(),
                           flow_confirmed_at=reading.at.isoformat())
    if run.canaries is not None:
        run.canaries.stop()
        since = state.drained_at or start
        grace = utcnow() + timedelta(seconds=max(5.0, 5 * float(p.sample_interval_seconds or 1)))
        run.wait("the last canaries being stored", grace, done=lambda r: run.canaries_flowing(since, margin=0.0))
    last = run.latest()
    res.values["lag under the threshold at"] = state.lag_recovered_at
    res.values["full recovery at"] = state.recovered_at
    lag_detail = (f"lag {fmt(last.lag_pending)} pending, {fmt(last.lag_ack_pending)} awaiting ack" if last and
                  last.lag_pending is not None else
                  f"lag unreadable: {last.errors.get('lag_pending', '?') if last else 'no reading'}")
    run.check(res, f"consumer lag < {threshold:g} within the deadline", state.lag_recovered_at is not None,
              lag_detail)
    run.check(res, "gateway buffers drained", bool(last and last.buffer_size == 0),
              f"buffer {fmt(last.buffer_size if last else None)}")
    dups = duplicate_rows(run)
    res.values["duplicate rows in the gameday window"] = None if isinstance(dups, str) else sum(c - 1 for _, c in dups)
    logs = duplicate_logs(run)
    res.values["`duplicate_event` log lines (reporting)"] = logs
    if not isinstance(dups, str):
        extra = sum(c - 1 for _, c in dups)
        run.check(res, "idempotency keys prevent duplicates", extra == 0,
                  f"{extra} extra rows over {len(dups)} keys; {fmt(logs)} duplicate_event logs "
                  "(duplicates caught by the consumer)")
    run.run_commands("replay", res)
    run.observe("replay")


def rto(run: Run, res: PhaseResult) -> None:
    """T+30: RTO = T+0 → full recovery; lag recovery; services healthy; SSE delivering."""
    p = run.params
    state = _state(run)
    blind = lag_blind_since(run, run.healed_at)
    last = run.latest()
    recovery = (f"healed, lag < {p.lag_threshold:g}, gateway buffers empty, in-flight settled; confirmed by "
                f"every canary accepted from then on being stored; read every {p.sample_interval_seconds:g} s")
    run.measure(metrics.rto(t0=run.clock.t0, recovered_at=state.recovered_at,
                            target=float(p.rto_target_seconds or 0), blind=blind,
                            last_seen=last.at if last else None, recovery=recovery))
    run.measure(metrics.lag_recovery(healed_at=run.healed_at, lag_recovered_at=state.lag_recovered_at,
                                     target=float(p.lag_recovery_deadline_seconds or 0), threshold=p.lag_threshold,
                                     blind=blind))
    rto_metric = run.scorecard.metric("rto_seconds")
    res.values["RTO (s)"] = rto_metric.value if rto_metric else None
    for check in run.target.preflight():
        run.check(res, f"healthy after recovery: {check.name}", check.ok, check.detail)
    alive, detail = sse_alive(run.target.endpoints.stream_url)
    run.check(res, "SSE stream delivering", alive, detail)
    run.run_commands("rto", res)


def rpo(run: Run, res: PhaseResult) -> None:
    """T+45: every canary accounted (lost → loss window → RPO), the loss in its parts (canaries, what
    the services report they dropped, the lab's ground truth), errors, duplicates, critical events."""
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


def incident_response(run: Run, res: PhaseResult) -> None:
    """T+60: the alert timeline (the first gameday alert after T+0), the stamps, team response."""
    p = run.params
    fire_target = float(p.alert_fire_target_seconds or 0)
    t0 = run.clock.t0
    fired_at, label, unavailable, waited = None, "", None, 0.0
    if t0 is not None:
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
    from gamedaylib import forms

    run.show(forms.stamp_buttons(run.journal, run.clock, stamps=p.stamps, live=run.live, show=False,
                                 on_stamp=lambda _name: run.measure_team_response()))
    metric = run.measure_team_response()
    res.values["team response (s)"] = metric.value
    run.run_commands("incident_response", res)
    run.observe("incident_response")


def postmortem(run: Run, res: PhaseResult) -> None:
    """T+90: debrief answers, open questions (unanswered ones), action items."""
    from gamedaylib import forms
    from gamedaylib.observations import open_questions

    run.observe("postmortem")
    run.show(forms.action_items_form(run.journal, items=run.params.action_items, live=run.live, show=False))
    res.values["open questions"] = len(open_questions(run.journal, run.playbook))


PHASES = {
    "preflight": preflight,
    "injection": injection,
    "buffering": buffering,
    "heal": heal,
    "replay": replay,
    "rto": rto,
    "rpo": rpo,
    "incident_response": incident_response,
    "postmortem": postmortem,
}


# -- facts the phases gather ------------------------------------------------------------------------


def _first_lag_rise(run: Run) -> float | None:
    t0, base = run.clock.t0, run.baseline
    if t0 is None or base is None or base.lag_pending is None:
        return None
    for r in run.readings_since(t0):
        if r.lag_pending is not None and r.lag_pending > base.lag_pending:
            return round((r.at - t0).total_seconds(), 1)
    return None


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
        dropped = _delta(last.dropped_total, base.dropped_total if base else None)
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
    gateway_5xx = _delta(last.requests_5xx, base.requests_5xx if base else None) if last else None
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
