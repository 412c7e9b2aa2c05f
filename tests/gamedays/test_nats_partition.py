"""GAMEDAY-001 without a lab: its playbook as data, the banner's tiles, and each phase's judging, on a
fake target whose readings follow a script (typed readings in, checks, metrics and verdicts out).
The run itself is real: ``Run.start``, the sampler thread, the waits, the stop conditions, the scorecard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runfakes import FakeTarget, healthy, kinds, start_run

from gamedaylib.archive import PARAMS_FILE, SCORECARD_FILE
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import PreflightFailed
from gamedaylib.gamedays.nats_partition import SCENARIO
from gamedaylib.gamedays.nats_partition.phases import PartitionState
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.phase import PhaseResult
from gamedaylib.readings import Reading
from gamedaylib.scorecard import Metric
from gamedaylib.stopconditions import BLIND_POLLS
from gamedaylib.targets.base import Check

pytestmark = pytest.mark.timeout(60)

DESIGN_PHASES = ("preflight", "injection", "buffering", "heal", "replay", "rto", "rpo", "incident_response",
                 "postmortem")


def checks(result: PhaseResult) -> dict[str, Check]:
    return {c.name: c for c in result.checks}


def metric(card: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in card["metrics"] if m["name"] == name)


# -- the playbook as data -------------------------------------------------------------------------------


def test_the_playbook_as_data_matches_the_written_playbook() -> None:
    assert PLAYBOOK.phase_ids == DESIGN_PHASES
    assert tuple(SCENARIO.phases) == DESIGN_PHASES
    assert PLAYBOOK.metric_names[:6] == ("rto_seconds", "rpo_seconds", "event_loss_count", "user_facing_errors",
                                         "alert_fire_seconds", "team_response_seconds")
    assert set(PLAYBOOK.metric_names) == set(SCENARIO.params.METRIC_NAMES)
    written = " ".join(SCENARIO.playbook_md.read_text(encoding="utf-8").split()).casefold()
    for phase_id, question in PLAYBOOK.questions():  # the playbook's words, so forms and reports quote them
        assert question.casefold() in written, (phase_id, question)
    for phase in PLAYBOOK.phases:
        assert phase.title.casefold() in written
    described = SCENARIO.describe()
    assert described["id"] == "GAMEDAY-001" and Path(described["notebook"]).is_file()
    assert Path(described["playbook"]).is_file() and SCENARIO.fault_word == "partition"


# -- the banner's tiles -----------------------------------------------------------------------------------


def test_tiles_say_what_the_room_watches(tmp_path: Path) -> None:
    run, _ = start_run(tmp_path)
    try:
        nothing = {t.label: (t.value, t.state) for t in SCENARIO.tiles(run, None)}
        assert nothing == {"partition": ("OFF", "unknown"), "consumer lag": ("—", "unknown"),
                           "gateway buffer": ("—", "unknown"), "canaries lost": ("—", "unknown")}
        someone_elses = Reading(at=utcnow(), fault_active=True, lag_pending=1234.0, buffer_size=12.0)
        tiles = {t.label: (t.value, t.state) for t in SCENARIO.tiles(run, someone_elses)}
        assert tiles["partition"] == ("ACTIVE", "alarm")  # a cut this run did not make is shown all the same
        assert tiles["consumer lag"] == ("1,234", "info") and tiles["gateway buffer"] == ("12", "warn")
        run.inject(PhaseResult("injection"), deadline_seconds=30)
        full = Reading(at=utcnow(), fault_active=True, buffer_size=40.0, buffer_fraction_max=1.0)
        tiles = {t.label: (t.value, t.state) for t in SCENARIO.tiles(run, full)}
        assert tiles["partition"] == ("ACTIVE", "alarm") and tiles["gateway buffer"] == ("40 FULL", "alarm")
        run.heal()
        tiles = {t.label: (t.value, t.state) for t in SCENARIO.tiles(run, Reading(at=utcnow(), buffer_size=0.0))}
        assert tiles["partition"] == ("HEALED", "ok") and tiles["gateway buffer"] == ("0", "info")
        assert tiles["canaries lost"] == ("—", "unknown")  # a canary may still be buffered: not known yet
        run.scorecard.events["canaries_lost"] = 3
        run.measure(Metric.judged("rpo_seconds", 1.5, 30, "canaries"))
        lost = {t.label: (t.value, t.state) for t in SCENARIO.tiles(run, None)}["canaries lost"]
        assert lost == ("3", "alarm")
    finally:
        run.close()


# -- pre-flight ---------------------------------------------------------------------------------------------


def test_preflight_judges_the_lag_baseline_over_a_window_and_injects_nothing(tmp_path: Path) -> None:
    lags = [40.0, 42.0, 45.0, 42.0]

    def busy(target: FakeTarget, n: int) -> dict[str, Any]:
        return {**healthy(target, n), "lag_pending": lags[n % len(lags)]}

    run, target = start_run(tmp_path, busy, target=FakeTarget(checks=[Check("pods running", True, "4 of 4")]))
    with pytest.raises(PreflightFailed) as info:
        run.phase("preflight")
    result = run.results["preflight"]
    lag = checks(result)["consumer lag baseline"]
    assert not lag.ok and lag.fatal and lag.detail.startswith("42 messages pending (median over 0 s; threshold 10)")
    assert "consumer lag baseline" in info.value.failed_checks
    assert "events table reachable" in info.value.failed_checks  # no events DSN on this target
    assert checks(result)["pods running"].ok
    assert "nothing was injected" in str(info.value)
    assert target.applied == [] and not any(k.startswith("fault.active") for k in kinds(run))
    finished = [e for e in run.journal.entries() if e["kind"] == "phase.finished"]
    assert finished[-1]["status"] == "failed" and finished[-1]["error"] == "PreflightFailed"
    run.close()


def test_messages_in_flight_are_not_lag(tmp_path: Path) -> None:
    """A busy, healthy consumer has many messages delivered and awaiting ack: shown, never counted."""

    def busy(target: FakeTarget, n: int) -> dict[str, Any]:
        return {**healthy(target, n), "lag_pending": 3.0, "lag_ack_pending": 400.0}

    run, _ = start_run(tmp_path, busy)
    with pytest.raises(PreflightFailed) as info:
        run.phase("preflight")
    lag = checks(run.results["preflight"])["consumer lag baseline"]
    assert lag.ok and "400 delivered, awaiting ack (not counted)" in lag.detail
    assert "consumer lag baseline" not in info.value.failed_checks
    assert run.results["preflight"].values["lag baseline: pending / awaiting ack (messages)"] == "3 / 400"
    run.close()


def test_a_stop_condition_that_cannot_see_its_input_stops_the_run_at_preflight(tmp_path: Path) -> None:
    def blind(target: FakeTarget, n: int) -> dict[str, Any]:
        values = {k: v for k, v in healthy(target, n).items() if k != "buffer_fraction_max"}
        return {**values, "errors": {"buffer_fraction_max": "Prometheus: connection refused"}}

    run, target = start_run(tmp_path, blind)
    with pytest.raises(PreflightFailed) as info:
        run.phase("preflight")
    name = "stop condition input readable: stop_buffer_fraction needs buffer_fraction_max"
    assert name in info.value.failed_checks
    assert "Prometheus: connection refused" in checks(run.results["preflight"])[name].detail
    assert target.applied == []
    run.close()


# -- injection ---------------------------------------------------------------------------------------------


def test_t0_is_the_confirmed_injection_with_the_faults_own_deadline(tmp_path: Path) -> None:
    run, target = start_run(tmp_path, partition_seconds=20.0, partition_safety_margin_seconds=30.0)
    try:
        result = run.phase("injection")
        assert target.applied == [50.0]  # partition + margin: it ends by itself whatever happens to us
        assert checks(result)["partition confirmed in force"].ok
        assert run.clock.t0 == run.injected_at == result.values["T+0"]
        assert result.values["partition planned to end at"] == "T+00:20"
        entries = run.journal.entries()
        requested = next(e for e in entries if e["kind"] == "fault.requested")
        active = next(e for e in entries if e["kind"] == "fault.active")
        assert requested["deadline_seconds"] == 50.0 and requested["dry_run"] is False
        assert "cut off from every NATS server" in requested["fault"]
        assert active["t0"] == run.clock.t0.isoformat() and active["confirmed"] is True
        assert requested["seq"] < active["seq"]
    finally:
        run.close()
    assert target.heals == 1 and target.closed  # close heals whatever is in force


def test_a_dry_run_shows_the_fault_and_applies_nothing(tmp_path: Path) -> None:
    run, target = start_run(tmp_path, dry_run=True)
    result = run.phase("injection")
    assert target.applied == [] and run.clock.t0 is None and run.sampler is None
    assert "kind: NetworkChaos" in result.values["would apply"]
    assert checks(result)["partition applied"].detail == "dry run: not applied"
    card = run.finish()
    assert card["reason"] == "dry run: nothing applied, nothing measured"
    assert not (Path(run.params.lab_dir) / "gameday.lock").exists()


# -- the fault in force: stop conditions, blindness, an early end --------------------------------------------


def test_a_stop_condition_fired_by_the_system_heals_at_once_and_fails_the_run(tmp_path: Path) -> None:
    def overflowing(target: FakeTarget, n: int) -> dict[str, Any]:
        values = healthy(target, n)
        if target.active:
            values.update(buffer_size=40.0, buffer_fraction_max=1.0, dropped_total=float(n))
        return values

    run, target = start_run(tmp_path, overflowing, partition_seconds=30.0)
    run.take_baseline(0)
    run.phase("injection")
    started = utcnow()
    result = run.phase("buffering")
    assert (utcnow() - started).total_seconds() < 10  # did not sit out the 30 s partition
    assert run.stopped_by is not None and run.stopped_by.condition == "stop_buffer_fraction"
    assert not run.stopped_by.blind and target.heals == 1 and run.healed_at is not None
    assert "gateway buffer 100 % full in its fullest replica (40 events held of 40 over every replica)" in \
        run.stopped_by.words and run.stopped_by.words.endswith("limit 90 %")
    assert not checks(result)["services buffer events"].ok and "FULL" in checks(result)["services buffer events"].detail
    assert not checks(result)["no event dropped"].ok
    stop = next(e for e in run.journal.entries() if e["kind"] == "stop_condition")
    assert (stop["condition"], stop["limit"], stop["blind"]) == ("stop_buffer_fraction", 0.9, False)
    healed = next(e for e in run.journal.entries() if e["kind"] == "fault.healed")
    assert healed["by"] == "rollback"
    card = run.finish()
    assert card["verdict"] == "fail"  # the system failed (exit 1), not the tool
    assert card["stopped_by"]["condition"] == "stop_buffer_fraction" and card["stopped_by"]["value"] == 1.0
    assert card["reason"] == run.stopped_by.words
    on_disk = json.loads((run.archive_dir / SCORECARD_FILE).read_text())
    assert on_disk["verdict"] == "fail" and on_disk["stopped_by"] == card["stopped_by"]
    assert kinds(run)[-1] == "run.finished"


def test_losing_sight_of_the_lag_mid_fault_ends_it_and_the_run_is_aborted(tmp_path: Path) -> None:
    def monitoring_dies(target: FakeTarget, n: int) -> dict[str, Any]:
        values = healthy(target, n)
        if target.active:
            values.pop("lag_pending")
            values["errors"] = {"lag_pending": "NATS monitoring: connection refused"}
        return values

    run, target = start_run(tmp_path, monitoring_dies, partition_seconds=30.0)
    run.take_baseline(0)
    run.phase("injection")
    run.phase("buffering")
    assert run.stopped_by is not None and run.stopped_by.blind and run.stopped_by.condition == "lag_unreadable"
    assert "NATS monitoring: connection refused" in run.stopped_by.words and target.heals == 1
    card = run.finish()
    assert card["verdict"] == "aborted"  # could not judge the system (exit 2)
    assert card["stopped_by"]["blind"] is True


def test_one_or_two_unreadable_lag_readings_are_a_blip_not_blindness(tmp_path: Path) -> None:
    def flaky(target: FakeTarget, n: int) -> dict[str, Any]:
        values = healthy(target, n)
        if target.active and n % BLIND_POLLS == 0:  # never BLIND_POLLS unreadable readings in a row
            values.pop("lag_pending")
            values["errors"] = {"lag_pending": "NATS monitoring: timed out"}
        return values

    run, target = start_run(tmp_path, flaky)
    run.take_baseline(0)
    run.phase("injection")
    run.phase("buffering")
    assert run.stopped_by is None and target.heals == 0 and run.fault_in_force
    assert any(r.lag_pending is None for r in run.readings_since(run.injected_at))
    run.close()


def test_a_fault_that_ends_on_its_own_is_said_and_timed_from_the_target(tmp_path: Path) -> None:
    run, target = start_run(tmp_path, target=FakeTarget(ends_early=0.2), partition_seconds=30.0)
    run.take_baseline(0)
    run.phase("injection")
    run.phase("buffering")
    assert run.fault_ended_early == "duration expired" and run.healed_at is not None and run.stopped_by is None
    note = next(e for e in run.journal.entries() if e["kind"] == "note" and "ended early" in e.get("note", ""))
    assert note["note"] == "the fault ended early: duration expired"
    healed = next(e for e in run.journal.entries() if e["kind"] == "fault.healed")
    assert healed["by"] == "ended early: duration expired"
    result = run.phase("heal")
    assert result.values["the fault ended early"] == "duration expired" and target.heals == 0
    run.close()


# -- a whole run, phase by phase -------------------------------------------------------------------------


def test_a_healthy_partition_recovers_and_every_phase_judges_it(tmp_path: Path) -> None:
    target = FakeTarget(checks=[Check("pods running", True, "4 of 4")], logs=["duplicate_event key=k1", "ok"])
    answers = {"postmortem": {"What went well?": "the buffer held"}}
    run, target = start_run(tmp_path, target=target, required_metrics=["rto_seconds", "event_loss_count"],
                            stamps={"alert_seen": 0.5, "acknowledged": 2.0}, observations=answers,
                            action_items=[{"title": "Alert on lag sooner", "owner": "sre", "ticket": "OPS-9"}])
    run.take_baseline(0)
    run.phase("injection")

    buffering = run.phase("buffering")
    assert checks(buffering)["services buffer events"].ok and checks(buffering)["no event dropped"].ok
    assert checks(buffering)["retry logic engaged"].ok and checks(buffering)["no user-facing errors"].ok
    assert buffering.values["gateway buffer (events, every replica)"] == 8.0
    assert buffering.values["fullest replica"] == "25 % of its capacity"
    assert not checks(buffering)["Corp Cockpit SSE stream responsive"].ok  # no stream URL: said, not passed

    heal = run.phase("heal")
    assert target.heals == 1 and run.healed_at is not None
    assert (run.healed_at - run.clock.t0).total_seconds() >= 1.0  # the partition ran its course
    assert checks(heal)["NATS connections back"].ok and heal.values["reconnected after the heal (s)"] < 2
    assert not checks(heal)["nats-server healthz"].ok  # no monitoring URL: 0 of 0 is no pass

    replay = run.phase("replay")
    state: PartitionState = run.state
    assert state.recovered_at is not None and state.recovered_at >= run.healed_at
    assert checks(replay)["consumer lag < 10 within the deadline"].ok and checks(replay)["gateway buffers drained"].ok
    assert replay.values["`duplicate_event` log lines (reporting)"] == 1

    run.phase("rto")
    rto = run.scorecard.metric("rto_seconds")
    assert rto is not None and rto.status == "pass"
    assert rto.value == round((state.recovered_at - run.clock.t0).total_seconds(), 1)
    assert run.scorecard.metric("lag_recovery_seconds").status == "pass"  # type: ignore[union-attr]

    rpo = run.phase("rpo")
    assert run.scorecard.metric("rpo_seconds").status == "not_measured"  # type: ignore[union-attr]
    loss = run.scorecard.metric("event_loss_count")
    assert loss is not None and (loss.value, loss.status) == (0, "pass") and "lower bound" in loss.evidence
    assert run.scorecard.events["service_reported_dropped"] == 0.0
    assert run.scorecard.metric("user_facing_errors").status == "pass"  # type: ignore[union-attr]
    assert not checks(rpo)["events table"].ok

    incident = run.phase("incident_response")
    alert = run.scorecard.metric("alert_fire_seconds")
    assert alert is not None and alert.status == "not_measured"  # no Alertmanager nor Prometheus here
    response = run.scorecard.metric("team_response_seconds")
    assert response is not None and response.value == 1.5 and "alert seen" in response.evidence
    assert incident.values["team response (s)"] == 1.5

    postmortem = run.phase("postmortem")
    assert postmortem.values["open questions"] == len(PLAYBOOK.questions()) - 1
    card = run.finish()
    assert card["verdict"] == "pass", card
    assert [m["name"] for m in card["metrics"]] == list(PLAYBOOK.metric_names)
    assert (run.archive_dir / "action-items.csv").read_text().count("Alert on lag sooner") == 1
    report = (run.archive_dir / "incident-report.md").read_text()
    assert "the buffer held" in report and "Alert on lag sooner" in report
    assert (run.archive_dir / PARAMS_FILE).is_file() and (run.archive_dir / "samples.csv").is_file()
    assert target.closed and not (Path(run.params.lab_dir) / "gameday.lock").exists()
    phase_kinds = [(e["phase"], e["status"]) for e in run.journal.entries() if e["kind"] == "phase.finished"]
    assert phase_kinds == [(p, "ok") for p in DESIGN_PHASES[1:]]


def test_full_recovery_waits_for_a_message_delivered_into_the_cut(tmp_path: Path) -> None:
    """Every gauge is back at its pre-flight level at once after the heal, but 3 messages delivered into
    the cut are still unacknowledged (they wait for their redelivery, ``ack_wait``): the consumer's ack
    floor stays below the stream's last sequence of that moment. Full recovery is when it passes it."""
    after_heal: list[int] = []

    def stuck(target: FakeTarget, n: int) -> dict[str, Any]:
        values = healthy(target, n)
        if target.heals:
            after_heal.append(n)
        waited = len(after_heal)
        last = 1000.0 + 10 * n  # the users keep publishing
        floor = last - 1 if waited == 0 or waited > 4 else 997.0  # 3 stuck from the drain on, 4 readings
        return {**values, "stream_last_seq": last, "ack_floor_seq": floor}

    run, _ = start_run(tmp_path, stuck)
    try:
        run.take_baseline(0)
        run.phase("injection")
        run.phase("heal")
        replay = run.phase("replay")
        state: PartitionState = run.state
        assert state.drained_at is not None and state.acked_at is not None and state.drained_seq is not None
        assert state.drained_at < state.acked_at == state.recovered_at
        assert replay.values["every message published by then acknowledged at"] == state.acked_at
        readings = run.readings_since(state.drained_at)
        at_ack = next(r for r in readings if r.at == state.acked_at)
        assert at_ack.ack_floor_seq is not None and at_ack.ack_floor_seq >= state.drained_seq
        assert all(r.ack_floor_seq is not None and r.ack_floor_seq < state.drained_seq
                   for r in readings if r.at < state.acked_at), "not recovered while a message waited"
        run.phase("rto")
        rto = run.scorecard.metric("rto_seconds")
        assert rto is not None and rto.value == round((state.acked_at - run.clock.t0).total_seconds(), 1)
        assert "ack floor" in rto.evidence
    finally:
        run.close()


def test_events_dropped_by_the_services_fail_the_loss_metric(tmp_path: Path) -> None:
    def dropping(target: FakeTarget, n: int) -> dict[str, Any]:
        values = healthy(target, n)
        values["dropped_total"] = 25.0 if target.applied else 0.0  # dropped once cut off, and counted since
        return values

    run, _ = start_run(tmp_path, dropping, required_metrics=["event_loss_count"])
    run.take_baseline(0)
    for phase in ("injection", "buffering", "heal", "replay", "rto", "rpo"):
        run.phase(phase)
    assert not checks(run.results["buffering"])["no event dropped"].ok
    loss = run.scorecard.metric("event_loss_count")
    assert loss is not None and (loss.value, loss.status) == (25, "fail")
    assert "the gateways report 25 events dropped" in loss.evidence
    assert run.finish()["verdict"] == "fail"


def test_a_phase_that_fails_rolls_back_and_says_so(tmp_path: Path) -> None:
    run, target = start_run(tmp_path, fault_phase="buffering")
    run.take_baseline(0)
    run.phase("injection")
    with pytest.raises(Exception, match="rehearsed fault"):
        run.phase("buffering")
    assert target.heals == 1 and run.healed_at is not None
    notes = [e["note"] for e in run.journal.entries() if e["kind"] == "note"]
    assert any(n.startswith("rollback: buffering failed: rehearsed fault") for n in notes)
    assert run.rollback("again") is None  # safe twice: nothing left to end
    run.close()
