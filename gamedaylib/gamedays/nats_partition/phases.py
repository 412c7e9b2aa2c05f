"""GAMEDAY-001's nine phases, one function each: ``phase(run, result)``.

Each gathers facts through the run (readings, probes, the fault, the forms), records checks and
measurements, and leaves the judging to pure functions (``gamedaylib.metrics``). What one phase
learns for a later one goes in ``run.state`` (a ``PartitionState``), never in ad-hoc attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gamedaylib import metrics, pipeline
from gamedaylib.clock import utcnow
from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.phase import PhaseResult, fmt
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.readings import Reading
from gamedaylib.run import Run


@dataclass
class PartitionState:
    """What the phases learn for one another."""

    lag_recovered_at: datetime | None = None  # first reading after the heal with lag under the threshold
    drained_at: datetime | None = None  # healed, lag under the threshold, buffer empty, in-flight settled
    drained_seq: float | None = None  # the stream's last sequence then: everything published until the drain
    acked_at: datetime | None = None  # ... and the consumer's ack floor reached it: all of it processed
    recovered_at: datetime | None = None  # ... and every canary accepted since is stored: full recovery
    reconnected_after: float | None = None


def _state(run: Run) -> PartitionState:
    state: PartitionState = run.state
    return state


def _params(run: Run) -> NatsPartitionParams:
    params = run.params
    assert isinstance(params, NatsPartitionParams)
    return params


def injection(run: Run, res: PhaseResult) -> None:
    """T+0: the partition applied with its own deadline, confirmed in force; T+0 is the confirmation."""
    p = _params(run)
    run.run_commands("injection", res)
    if run.dry_run:
        res.values["would apply"] = run.fault.manifest()
    t0 = run.inject(res, deadline_seconds=p.fault_deadline_seconds)
    if t0 is not None:
        res.values["T+0"] = t0
        res.values["the fault's own deadline (s)"] = p.fault_deadline_seconds
        res.values["partition planned to end at"] = run.clock.offset(
            t0 + timedelta(seconds=float(p.partition_seconds or 0)))


def _partition_end(run: Run) -> datetime | None:
    t0 = run.clock.t0
    return None if t0 is None else t0 + timedelta(seconds=float(_params(run).partition_seconds or 0))


def buffering(run: Run, res: PhaseResult) -> None:
    """T+5 (half-way through the partition): buffer against its capacity, drops, retries, circuit
    breaker, user-facing errors, the SSE stream. Stop conditions are judged while waiting."""
    p = _params(run)
    end = _partition_end(run)
    if run.clock.t0 is not None and end is not None:
        half = run.clock.t0 + timedelta(seconds=float(p.partition_seconds or 0) / 2)
        run.wait("partition half-way", half, watch=True, detail=f"partition ends at {run.clock.offset(end)}")
    reading = run.latest() or Reading(at=utcnow())
    base = run.baseline or Reading(at=reading.at)
    dropped = pipeline.delta(reading.dropped_total, base.dropped_total)
    retries = pipeline.delta(reading.retries_total, base.retries_total)
    gateway_5xx = pipeline.delta(reading.requests_5xx, base.requests_5xx)
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
    alive, detail = pipeline.sse_alive(run.target.endpoints.stream_url)
    run.check(res, "Corp Cockpit SSE stream responsive", alive, detail)
    run.run_commands("buffering", res)
    run.observe("buffering")


def heal(run: Run, res: PhaseResult) -> None:
    """T+10: at the end of the partition, remove it and confirm every service reconnected to NATS
    within ``heal_confirm_seconds``."""
    p = _params(run)
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
    p = _params(run)
    state = _state(run)
    if run.fault_in_force and not run.dry_run:
        run.heal()
    start = run.healed_at or utcnow()
    deadline = start + timedelta(seconds=float(p.lag_recovery_deadline_seconds or 0))
    threshold = p.lag_threshold

    def recovered(r: Reading) -> bool:
        if r.lag_pending is not None and r.lag_pending < threshold and state.lag_recovered_at is None:
            state.lag_recovered_at = r.at
        if not pipeline.settled(r, run.baseline, threshold):
            return False
        if state.drained_at is None:
            state.drained_at = r.at  # healed, lag under the threshold, buffers and in-flight back to normal
            state.drained_seq = r.stream_last_seq
        if not pipeline.acked_through(r, state.drained_seq):
            return False  # a message delivered into the cut waits for its redelivery: not processed yet
        if state.acked_at is None:
            state.acked_at = r.at
        return run.canaries_flowing(state.drained_at)

    reading = None if run.dry_run else run.wait("waiting for full recovery", deadline, done=recovered)
    if reading is not None and state.acked_at is not None:
        state.recovered_at = state.acked_at
        run.journal.record("note", phase="replay", note="recovered", recovered_at=state.recovered_at.isoformat(),
                           drained_at=state.drained_at.isoformat() if state.drained_at else None,
                           drained_seq=state.drained_seq, flow_confirmed_at=reading.at.isoformat())
    if run.canaries is not None:
        run.canaries.stop()
        since = state.drained_at or start
        grace = utcnow() + timedelta(seconds=max(5.0, 5 * float(p.sample_interval_seconds or 1)))
        run.wait("the last canaries being stored", grace, done=lambda r: run.canaries_flowing(since, margin=0.0))
    last = run.latest()
    res.values["lag under the threshold at"] = state.lag_recovered_at
    res.values["buffers drained, lag and in-flight back to normal at"] = state.drained_at
    res.values["every message published by then acknowledged at"] = state.acked_at
    res.values["full recovery at"] = state.recovered_at
    lag_detail = (f"lag {fmt(last.lag_pending)} pending, {fmt(last.lag_ack_pending)} awaiting ack" if last and
                  last.lag_pending is not None else
                  f"lag unreadable: {last.errors.get('lag_pending', '?') if last else 'no reading'}")
    run.check(res, f"consumer lag < {threshold:g} within the deadline", state.lag_recovered_at is not None,
              lag_detail)
    base_buffer = run.baseline.buffer_size if run.baseline else None
    run.check(res, "gateway buffers drained", bool(last) and pipeline.back_to_baseline(
        last.buffer_size if last else None, base_buffer, threshold),
        f"buffer {fmt(last.buffer_size if last else None)} (pre-flight {fmt(base_buffer)})")
    dups = pipeline.duplicate_rows(run)
    res.values["duplicate rows in the gameday window"] = None if isinstance(dups, str) else sum(c - 1 for _, c in dups)
    logs = pipeline.duplicate_logs(run)
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
    p = _params(run)
    state = _state(run)
    blind = pipeline.lag_blind_since(run, run.healed_at)
    last = run.latest()
    recovery = (f"healed, lag < {p.lag_threshold:g}, gateway buffers and in-flight messages back to their "
                "pre-flight levels, every message published by then acknowledged by the consumer (its ack "
                "floor); confirmed by "
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
    alive, detail = pipeline.sse_alive(run.target.endpoints.stream_url)
    run.check(res, "SSE stream delivering", alive, detail)
    run.run_commands("rto", res)


PHASES = {
    "preflight": pipeline.preflight,
    "injection": injection,
    "buffering": buffering,
    "heal": heal,
    "replay": replay,
    "rto": rto,
    "rpo": pipeline.rpo,
    "incident_response": pipeline.incident_response,
    "postmortem": pipeline.postmortem,
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


