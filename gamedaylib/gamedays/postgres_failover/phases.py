"""GAMEDAY-002's nine phases, one function each: ``phase(run, result)``.

Pre-flight, RPO, incident response and post-mortem are the event pipeline's (``gamedaylib.pipeline``);
the failover, replay and rejoin are this gameday's. What one phase learns for a later one goes in
``run.state`` (a ``FailoverState``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gamedaylib import metrics, pipeline
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import GamedayError, ProbeError
from gamedaylib.gamedays.postgres_failover.database import Database, FailoverReading
from gamedaylib.gamedays.postgres_failover.params import FailoverParams
from gamedaylib.phase import PhaseResult, fmt
from gamedaylib.run import Run
from gamedaylib.scorecard import Metric

REPORTING_RECONNECT_SECONDS = 30.0  # after a manual promotion, reporting stores again within this or is restarted
FLOW_WINDOW_SECONDS = 5.0  # every canary accepted in such a window stored: events flow end to end again

@dataclass
class FailoverState:
    """What the phases learn for one another."""

    database: Database | None = None  # set by the reader: the one the sampler reads
    primary_before: str | None = None
    timeline_before: int | None = None
    writable_at: datetime | None = None  # first acknowledged write through the endpoint on a new primary
    new_primary: str | None = None
    promoted_by_hand: bool = False
    stored_again_at: datetime | None = None
    lag_recovered_at: datetime | None = None
    drained_at: datetime | None = None
    recovered_at: datetime | None = None  # the pipeline back: lag, buffers, in-flight, canaries
    rejoined_at: datetime | None = None


def _state(run: Run) -> FailoverState:
    state: FailoverState = run.state
    return state


def _params(run: Run) -> FailoverParams:
    params = run.params
    assert isinstance(params, FailoverParams)
    return params


def _reading(run: Run) -> FailoverReading | None:
    reading = run.latest()
    return reading if isinstance(reading, FailoverReading) else None


def _cluster(run: Run) -> Any:
    """The database cluster now (None when it cannot be read)."""
    db = _state(run).database
    if db is None:
        return None
    try:
        return db.state()
    except ProbeError:
        return None


def preflight(run: Run, res: PhaseResult) -> None:
    """T-15: the pipeline's pre-flight (the database's own checks come with the fault's), then the
    primary and timeline on record."""
    state = _state(run)
    cluster = _cluster(run)
    if cluster is not None:
        state.primary_before, state.timeline_before = cluster.primary, cluster.timeline
        res.values["primary"] = cluster.primary
        res.values["timeline"] = cluster.timeline
        res.values["replicas streaming"] = ", ".join(cluster.streaming) or "none"
        res.values["replication lag (bytes, largest replica)"] = cluster.lag_bytes
        res.values["synchronous standbys"] = ", ".join(cluster.sync_standbys) or "none"
    pipeline.preflight(run, res)


def injection(run: Run, res: PhaseResult) -> None:
    """T+0: the primary killed; T+0 is the moment every killed process was frozen."""
    p = _params(run)
    state = _state(run)
    run.run_commands("injection", res)
    if run.dry_run:
        res.values["would apply"] = run.fault.manifest()
    res.values["what is killed"] = run.fault.description
    t0 = run.inject(res, deadline_seconds=p.fault_deadline_seconds)
    if t0 is not None:
        state.primary_before = getattr(run.fault, "killed", None) or state.primary_before
        res.values["T+0 (killed)"] = t0
        res.values["killed primary"] = state.primary_before


def failover(run: Run, res: PhaseResult) -> None:
    """T+1: wait until a write through the read-write endpoint is acknowledged by a new primary (at
    most ``promote_deadline_seconds``: then the rollback promotes by hand); failover time; what reporting
    and the users saw meanwhile. Stop conditions are judged while waiting."""
    p = _params(run)
    state = _state(run)
    t0 = run.clock.t0
    target = float(p.failover_target_seconds or 0)
    if t0 is not None and not run.dry_run:
        deadline = t0 + timedelta(seconds=float(p.promote_deadline_seconds or 0))

        def new_primary_writable(r: Any) -> bool:
            return (isinstance(r, FailoverReading) and r.db_writable == 1 and r.db_primary is not None
                    and r.db_primary != state.primary_before)

        reading = run.wait("a new primary accepting writes", deadline, done=new_primary_writable, watch=True,
                           detail=f"failover target {target:g} s")
        if isinstance(reading, FailoverReading):
            state.writable_at, state.new_primary = reading.at, reading.db_primary
        elif run.stopped_by is None:
            _promote_by_hand(run, res)
    if t0 is None:
        run.measure(Metric.not_measured("failover_seconds", target, "no confirmed kill (T+0)", unit="s"))
    elif state.writable_at is not None and not state.promoted_by_hand:
        run.measure(Metric.judged(
            "failover_seconds", round((state.writable_at - t0).total_seconds(), 1), target,
            f"kill {t0.isoformat(timespec='seconds')} (T+0) → the first write through the read-write endpoint "
            f"acknowledged by the new primary {state.new_primary} at {state.writable_at.isoformat(timespec='seconds')}"
            f" (a write every {p.sample_interval_seconds:g} s)", unit="s"))
    else:
        waited = float(p.promote_deadline_seconds or 0)
        run.measure(Metric("failover_seconds", None, target, "<=", "fail",
                           f"no new primary accepted writes within {waited:g} s of the kill"
                           + ("; promoted by hand (the rollback)" if state.promoted_by_hand else ""), "s"))
    reading = _reading(run)
    base = run.baseline
    res.values["new primary"] = state.new_primary
    res.values["timeline"] = f"{fmt(state.timeline_before)} → {fmt(reading.db_timeline if reading else None)}"
    if t0 is not None:
        during = [r for r in run.readings_since(t0) if state.writable_at is None or r.at <= state.writable_at]
        stored = [r.stored_total for r in during if r.stored_total is not None]
        res.values["events stored while no primary took writes"] = (max(stored) - min(stored)) if stored else None
        lag = [r.lag_pending for r in during if r.lag_pending is not None]
        res.values["consumer lag peak while failing over (messages)"] = max(lag) if lag else None
    canary_errors = run.canaries.counts()["failed"] if run.canaries is not None else None
    gateway_5xx = pipeline.delta(reading.requests_5xx, base.requests_5xx if base else None) if reading else None
    errors = int(canary_errors or 0) + int(gateway_5xx or 0)
    run.check(res, "no user-facing errors", errors == 0, f"{errors} non-2xx answers so far (ingest does not "
              "touch the database)")
    run.run_commands("failover", res)
    run.observe("failover")
    if not run.dry_run and run.fault_in_force:
        run.heal(by="the platform restarted the killed instance")


def _promote_by_hand(run: Run, res: PhaseResult) -> None:
    """The playbook's rollback step 2: no primary by the deadline, promote the surviving replica."""
    state = _state(run)
    promote = getattr(run.fault, "promote", None)
    if promote is None:
        run.check(res, "manual promotion", False, "this target cannot promote by hand", fatal=False)
        return
    run.journal.record("note", phase=run.current_phase, note="no primary by the promote deadline: promoting by hand")
    try:
        node, at = promote(timeout=60.0)
    except GamedayError as exc:
        run.check(res, "manual promotion", False, str(exc))
        return
    state.promoted_by_hand, state.new_primary, state.writable_at = True, node, at
    run.check(res, "manual promotion", True, f"{node} promoted by hand, writable at {at.isoformat(timespec='seconds')}",
              fatal=False)
    _restart_reporting_unless_reconnected(run, res, at)


def _restart_reporting_unless_reconnected(run: Run, res: PhaseResult, promoted_at: datetime) -> None:
    """The playbook's rollback step 3: restart reporting if it did not reconnect, i.e. stored nothing
    within ``REPORTING_RECONNECT_SECONDS`` of the manual promotion."""
    state = _state(run)
    before = next((r.stored_total for r in reversed(run.readings_since(None))
                   if r.at <= promoted_at and r.stored_total is not None), None)
    deadline = promoted_at + timedelta(seconds=REPORTING_RECONNECT_SECONDS)

    def storing(r: Any) -> bool:
        return r.stored_total is not None and before is not None and r.stored_total > before

    reading = run.wait("reporting storing again after the manual promotion", deadline, done=storing)
    if reading is not None:
        state.stored_again_at = state.stored_again_at or reading.at
        run.check(res, "reporting reconnected by itself (no restart)", True,
                  f"events_stored_total rose at {reading.at.isoformat(timespec='seconds')}", fatal=False)
        return
    restart = getattr(run.fault, "restart_consumer", None)
    if restart is None:
        run.check(res, "reporting restarted (it did not reconnect)", False,
                  f"reporting stored nothing within {REPORTING_RECONNECT_SECONDS:g} s of the promotion and this "
                  "target cannot restart it: restart reporting by hand (on Kubernetes: kubectl rollout restart "
                  "deployment/reporting)",
                  fatal=False)
        return
    run.journal.record("note", phase=run.current_phase, note="reporting did not reconnect: restarting it")
    try:
        detail = str(restart())
    except GamedayError as exc:
        run.check(res, "reporting restarted (it did not reconnect)", False, str(exc), fatal=False)
        return
    run.check(res, "reporting restarted (it did not reconnect)", True, detail, fatal=False)


def replay(run: Run, res: PhaseResult) -> None:
    """T+5: reporting reconnects and stores again without a restart; consumer lag back under the
    threshold within the deadline, buffers drained, in-flight settled, every accepted canary stored;
    duplicates."""
    p = _params(run)
    state = _state(run)
    start = state.writable_at or run.clock.t0 or utcnow()
    deadline = start + timedelta(seconds=float(p.lag_recovery_deadline_seconds or 0))
    threshold = p.lag_threshold
    stored_at_failover = next((r.stored_total for r in reversed(run.readings_since(None))
                               if r.at <= start and r.stored_total is not None), None)

    def recovered(r: Any) -> bool:
        if (state.stored_again_at is None and r.stored_total is not None and stored_at_failover is not None
                and r.stored_total > stored_at_failover):
            state.stored_again_at = r.at
        if r.lag_pending is not None and r.lag_pending < threshold and state.lag_recovered_at is None:
            state.lag_recovered_at = r.at
        if not pipeline.settled(r, run.baseline, threshold):
            return False
        if state.drained_at is None:
            state.drained_at = r.at
        if run.canaries_flowing(state.drained_at):
            return True
        # a canary accepted since was lost (a split brain's orphan took it, then was rewound): the
        # pipeline is back once the canaries of a whole recent window are stored, from that window on
        window = r.at - timedelta(seconds=FLOW_WINDOW_SECONDS)
        if window > state.drained_at and run.canaries_flowing(window):
            state.drained_at = window
            return True
        return False

    reading = None if run.dry_run else run.wait("reporting replaying the backlog", deadline, done=recovered)
    if reading is not None and state.drained_at is not None:
        state.recovered_at = state.drained_at
    res.values["reporting stored events again at"] = state.stored_again_at
    res.values["consumer lag under the threshold at"] = state.lag_recovered_at
    run.check(res, "reporting stores again (reconnected by itself)", state.stored_again_at is not None,
              "events_stored_total rose after the failover" if state.stored_again_at else
              "events_stored_total never rose after the failover")
    run.check(res, f"consumer lag < {threshold:g} within the deadline", state.lag_recovered_at is not None,
              f"from the failover {start.isoformat(timespec='seconds')}")
    dups = pipeline.duplicate_rows(run)
    logs = pipeline.duplicate_logs(run)
    if not isinstance(dups, str):
        extra = sum(c - 1 for _, c in dups)
        run.check(res, "idempotency keys prevent duplicates", extra == 0,
                  f"{extra} extra rows over {len(dups)} keys; {fmt(logs)} duplicate_event logs")
    run.run_commands("replay", res)
    run.observe("replay")


def rejoin(run: Run, res: PhaseResult) -> None:
    """T+15: the old primary streams as a replica again (within ``replica_rejoin_target_seconds`` of
    the kill); never more than one writable primary."""
    p = _params(run)
    state = _state(run)
    t0 = run.clock.t0
    target = float(p.replica_rejoin_target_seconds or 0)
    old = state.primary_before
    if t0 is not None and old is not None and not run.dry_run:
        deadline = t0 + timedelta(seconds=target + 30)
        # it may have rejoined while the earlier phases waited: the first reading that saw it streaming
        rejoined = next((r for r in run.readings_since(t0) if isinstance(r, FailoverReading)
                         and old in r.db_streaming), None)

        def streaming(_r: Any) -> bool:
            cluster = _cluster(run)
            return cluster is not None and old in cluster.streaming

        reading = rejoined or run.wait(f"{old} streaming as a replica", deadline, done=streaming)
        if reading is not None:
            state.rejoined_at = reading.at
    if t0 is None or old is None:
        run.measure(Metric.not_measured("replica_rejoin_seconds", target, "no kill", unit="s"))
    elif state.rejoined_at is not None:
        run.measure(Metric.judged("replica_rejoin_seconds", round((state.rejoined_at - t0).total_seconds(), 1), target,
                                  f"kill (T+0) → {old} streaming the new primary's timeline as a replica at "
                                  f"{state.rejoined_at.isoformat(timespec='seconds')}", unit="s"))
    else:
        run.measure(Metric("replica_rejoin_seconds", None, target, "<=", "fail",
                           f"{old} did not stream as a replica within {target + 30:g} s of the kill", "s"))
    readings = run.readings_since(t0) if t0 is not None else []
    seen = [r for r in readings if isinstance(r, FailoverReading) and r.writable_primaries is not None]
    split = [r for r in seen if (r.writable_primaries or 0) > 1]
    if t0 is None or not seen:
        run.measure(Metric.not_measured("split_brain_samples", 0, "no reading of the nodes' writability since the "
                                        "kill", comparison="==", unit="samples"))
    else:
        first = f"; first at {run.clock.offset(split[0].at)}" if split else ""
        run.measure(Metric.judged("split_brain_samples", len(split), 0,
                                  f"{len(split)} of {len(seen)} readings since the kill found two nodes accepting a "
                                  f"write when asked directly{first}", comparison="==", unit="samples"))
    cluster = _cluster(run)
    if cluster is not None:
        res.values["primary"] = cluster.primary
        res.values["replicas streaming"] = ", ".join(cluster.streaming) or "none"
    run.run_commands("rejoin", res)


def rto(run: Run, res: PhaseResult) -> None:
    """T+30: RTO = the kill → full recovery (writes flowing, consumer lag back, replicas streaming)."""
    p = _params(run)
    state = _state(run)
    parts = [state.writable_at, state.recovered_at, state.rejoined_at]
    recovered = max(parts) if all(parts) else None  # type: ignore[type-var]
    last = run.latest()
    run.measure(metrics.rto(
        t0=run.clock.t0, recovered_at=recovered, target=float(p.rto_target_seconds or 0),
        blind=pipeline.lag_blind_since(run, state.writable_at), last_seen=last.at if last else None,
        recovery=(f"a new primary accepting writes, consumer lag < {p.lag_threshold:g} with buffers empty and every "
                  "canary accepted since stored, and the old primary streaming as a replica")))
    run.measure(metrics.lag_recovery(healed_at=state.writable_at, lag_recovered_at=state.lag_recovered_at,
                                     target=float(p.lag_recovery_deadline_seconds or 0), threshold=p.lag_threshold,
                                     blind=pipeline.lag_blind_since(run, state.writable_at), since="failover"))
    for check in run.target.preflight():
        run.check(res, f"healthy after recovery: {check.name}", check.ok, check.detail)
    run.run_commands("rto", res)


PHASES = {
    "preflight": preflight,
    "injection": injection,
    "failover": failover,
    "replay": replay,
    "rejoin": rejoin,
    "rto": rto,
    "rpo": pipeline.rpo,
    "incident_response": pipeline.incident_response,
    "postmortem": pipeline.postmortem,
}
