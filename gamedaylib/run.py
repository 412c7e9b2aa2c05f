"""A run of a gameday, from validated parameters to the scorecard: the lifecycle every gameday shares.

``Run.start(scenario, raw)`` validates the parameters (nothing is written when they are wrong),
refuses a production namespace without ``confirm_production`` and a target another gameday holds,
then opens the journal in the archive folder, builds the target and the fault, takes the lock and
starts the canaries and the sampler (the one poller: every wait and stop condition consumes its
readings). ``run.phase(id)`` runs one of the scenario's phase functions inside the phase frame
(journal, observers, rehearsed faults, rollback on any failure). ``run.finish()`` writes the
scorecard, samples, action items and incident report, and heals in ``finally``.

The fault is healed by ``rollback`` (a failed phase, a stop condition, by hand), by ``finish`` and
``close`` (safe twice), from outside the kernel by ``gameday run``, and, if everything dies, by its
own deadline (the lab proxy's, Chaos Mesh ``duration``).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from gamedaylib import metrics
from gamedaylib.archive import ACTION_ITEMS_FILE, PARAMS_FILE, REPORT_FILE, SCORECARD_FILE, render_incident_report
from gamedaylib.canary import CanaryReport, CanarySender, account
from gamedaylib.clock import Clock, utcnow
from gamedaylib.exceptions import GamedayAborted, GamedayError, InvalidParameters, ProbeError
from gamedaylib.guard import guard_production
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.lock import LOCK_FILE, GamedayLock, process_start_ticks
from gamedaylib.notify import Notifications
from gamedaylib.observations import team_response_seconds, write_action_items_csv
from gamedaylib.observers import Observers, RunObserver, WaitProgress
from gamedaylib.parameters import RunParams, as_dict, validate
from gamedaylib.phase import PhaseResult
from gamedaylib.readings import Reading, baseline
from gamedaylib.sampler import SAMPLES_FILE, Sampler
from gamedaylib.scenario import Scenario
from gamedaylib.scorecard import Metric, Scorecard
from gamedaylib.secrets import redact
from gamedaylib.shell import CommandRunner, ShellRunner
from gamedaylib.stopconditions import StopReason, blind_inputs, conditions_of, first_fired, lag_blindness
from gamedaylib.targets import make_target
from gamedaylib.targets.base import Check, Fault, Target

__all__ = ["Run", "check_can_start", "resolve_paths"]

RUNNER_NOTE = "runner"
CANARY_SETTLE_SECONDS = 5.0  # the final canary report waits this long at most for canaries in flight
# input groups whose outages are journaled: group -> the reading field that tells
READABILITY = {"nats monitoring": ("lag_pending", "consumer lag"),
               "service readings": ("buffer_size", "gateway buffer"),
               "fault status": ("fault_active", "the fault's state")}


def _project_root() -> Path | None:
    """The checkout gamedaylib runs from, if it does (a notebook kernel starts in ``notebooks/``)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() and (root / "notebooks").is_dir() else None


def resolve_paths(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``lab_dir`` and ``archive_dir`` made absolute: relative paths point into the checkout when
    gamedaylib runs from one, else into the working directory."""
    base = _project_root() or Path.cwd()
    out = dict(raw)
    for name in ("lab_dir", "archive_dir"):
        value = out.get(name)
        if isinstance(value, str) and value:
            out[name] = str((base / value).resolve())
    return out


def check_can_start(params: RunParams) -> None:
    """Refusals that need no side effect: a production namespace without ``confirm_production``, and
    a lab another live gameday holds. Dry runs change nothing, so neither refuses them."""
    if params.target == "kubernetes":
        if not params.dry_run:
            guard_production(params.namespace, params.production_namespace_patterns, params.confirm_production)
        from gamedaylib.targets.kubernetes import refuse_unconfirmed_production  # the client loads on use

        refuse_unconfirmed_production(as_dict(params))  # the context and cluster too, and kube_context
    if params.target == "lab" and not params.dry_run:
        GamedayLock(Path(params.lab_dir) / LOCK_FILE).check_free()


def record_runner(journal: Journal, pid: int | None = None) -> None:
    """Journal which process runs this gameday, so that a dead runner can be told (``orphans``)."""
    pid = pid or os.getpid()
    journal.record("note", note=RUNNER_NOTE, runner_pid=pid, runner_start=process_start_ticks(pid),
                   host=socket.gethostname())


class Run:
    """One run of a gameday (the ``Gameday`` facade's engine; phases receive it as ``run``)."""

    def __init__(
        self,
        scenario: Scenario,
        params: RunParams,
        target: Target,
        *,
        journal: Journal,
        archive_dir: Path,
        clock: Clock | None = None,
        runner: CommandRunner | None = None,
        observers: Sequence[RunObserver] = (),
        live: bool = False,
    ) -> None:
        self.scenario = scenario
        self.playbook = scenario.playbook
        self.params = params
        self.target = target
        self.fault: Fault = scenario.make_fault(target, params)
        self.journal = journal
        self.archive_dir = archive_dir
        self.clock = clock or Clock()
        self.runner: CommandRunner = runner or ShellRunner(dry_run=params.dry_run, journal=journal)
        self.live = live
        self.dry_run = params.dry_run
        self.observers = Observers(observers, journal)
        self.scorecard = Scorecard(
            gameday_id=params.gameday_id, run_id=params.run_id, target=params.target, profile=params.profile,
            started_at=self.clock.started_at.isoformat(), required_metrics=params.required,
            metric_names=self.playbook.metric_names, labels={m.name: m.label for m in self.playbook.metrics},
            targets=params.targets(),
        )
        self.state: Any = scenario.make_state()
        self.results: dict[str, PhaseResult] = {}
        self.current_phase: str | None = None
        self.baseline: Reading | None = None
        self.canaries: CanarySender | None = None
        self.sampler: Sampler | None = None
        self.lock: GamedayLock | None = None
        self.stopped_by: StopReason | None = None
        self.injected_at: datetime | None = None
        self.healed_at: datetime | None = None
        self.fault_ended_early: str | None = None
        self.alert_fired_at: datetime | None = None
        self.finished = False
        self._closed = False
        self._probes: dict[str, Any] = {}
        self._conditions = conditions_of(params)
        self._canary_report: CanaryReport | str | None = None
        self._readable: dict[str, bool] = {}

    # ------------------------------------------------------------------ start
    @classmethod
    def start(
        cls,
        scenario: Scenario,
        raw: Mapping[str, Any],
        *,
        target: Target | None = None,
        observers: Sequence[RunObserver] = (),
        live: bool | None = None,
    ) -> Run:
        """Validate (nothing is written when invalid or refused), then open the archive and start."""
        params = validate(scenario.params, resolve_paths(raw))
        check_can_start(params)
        archive_dir = Path(params.archive_dir or os.path.join(
            _project_root() or Path.cwd(), "outputs", params.gameday_id, params.run_id)).resolve()
        params = _replace(params, archive_dir=str(archive_dir))
        archive_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(archive_dir / JOURNAL_FILE)
        safe = redact(as_dict(params))
        (archive_dir / PARAMS_FILE).write_text(yaml.safe_dump(safe, sort_keys=True), encoding="utf-8")
        is_live = params.live if params.live is not None else (live if live is not None else False)
        journal.record("run.started", run_id=params.run_id, gameday_id=params.gameday_id, target=params.target,
                       profile=params.profile, params=safe, pid=os.getpid(), live=is_live)
        run: Run | None = None
        try:
            if target is None:
                target = make_target(params, scenario.knobs)
            run = cls(scenario, params, target, journal=journal, archive_dir=archive_dir,
                      observers=[*observers, Notifications.for_run(params, journal)], live=is_live)
            run._take_lock()
            run._start_background()
        except BaseException as exc:
            journal.record("error", error=type(exc).__name__, message=str(exc))
            if run is not None:
                run.close()
            elif target is not None:
                target.close()
            raise
        run.observers.run_started(run)
        return run

    def _take_lock(self) -> None:
        if self.params.target != "lab" or self.dry_run:
            return
        self.lock = GamedayLock(Path(self.params.lab_dir) / LOCK_FILE)
        self.lock.acquire(self.params.run_id, what=f"{self.params.gameday_id} {self.archive_dir}")

    def _start_background(self) -> None:
        if self.dry_run:
            return
        ingest = self.target.endpoints.ingest_url
        if ingest:
            self.canaries = CanarySender(ingest, self.params.run_id, self.params.canary_rate).start()
        self.sampler = Sampler(self.scenario.make_reader(self), float(self.params.sample_interval_seconds or 1),
                               self.archive_dir / SAMPLES_FILE, clock=self.clock,
                               on_reading=self._note_readability).start()

    def _note_readability(self, reading: Reading) -> None:
        """Journal when an input group stops being readable and when it is back (the post-mortem's
        timeline of monitoring outages); runs in the sampler's thread."""
        for group, (name, what) in READABILITY.items():
            readable = getattr(reading, name, None) is not None
            was = self._readable.get(group)
            self._readable[group] = readable
            if was is None or was == readable:
                continue
            if readable:
                self.journal.record("note", phase=self.current_phase, note=f"{group} readable again")
            else:
                self.journal.record("error", phase=self.current_phase, error=group,
                                    message=f"{what} unreadable: {reading.errors.get(name, 'unreadable')}")

    # ------------------------------------------------------------------ probes
    def _probe(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._probes:
            self._probes[name] = make()
        return self._probes[name]

    def events_store(self) -> Any:
        """The events table (psycopg); ``ProbeError`` without a DSN."""
        dsn = self.target.endpoints.events_dsn
        if not dsn:
            raise ProbeError("events", f"no events DSN (set ${self.params.events_dsn_env})")
        from gamedaylib.probes.events import EventsStore

        return self._probe("events", lambda: EventsStore(dsn))

    def alert_probe(self) -> Any:
        ep = self.target.endpoints
        if not ep.alertmanager_url and not ep.prometheus_url:
            raise ProbeError("alerts", "neither Alertmanager nor Prometheus is available")
        from gamedaylib.probes.alerts import AlertProbe

        return self._probe("alerts", lambda: AlertProbe(ep.alertmanager_url, ep.prometheus_url,
                                                         namespace=ep.namespace or None))

    def alert_probe_if_any(self) -> Any:
        try:
            return self.alert_probe()
        except ProbeError:
            return None

    def prometheus(self) -> Any:
        url = self.target.endpoints.prometheus_url
        if not url:
            raise ProbeError("prometheus", "no Prometheus for this target")
        from gamedaylib.probes.metrics import PrometheusProbe

        return self._probe("prometheus", lambda: PrometheusProbe(url))

    # ------------------------------------------------------------------ phases
    def phase(self, phase_id: str) -> PhaseResult:
        """Run the scenario's phase ``phase_id`` and return what it measured and showed."""
        if phase_id not in self.scenario.phases:
            raise InvalidParameters(f"{self.scenario.id} has no phase {phase_id!r}; its phases: "
                                    f"{list(self.scenario.phases)}", "phase")
        with self._phase(phase_id) as result:
            self.scenario.phases[phase_id](self, result)
        return result

    @contextmanager
    def _phase(self, phase_id: str) -> Iterator[PhaseResult]:
        self.current_phase = phase_id
        result = PhaseResult(phase_id)
        self.results[phase_id] = result
        started = time.monotonic()
        self.journal.record("phase.started", phase=phase_id, offset=self.clock.offset())
        if self.sampler is not None:
            self.sampler.mark_phase(phase_id)
        self.observers.phase_started(self, phase_id)
        try:
            self._rehearsed_fault(phase_id)
            yield result
        except BaseException as exc:
            result.ok = False
            self.journal.record("phase.finished", phase=phase_id, status="failed",
                                duration_s=round(time.monotonic() - started, 3), error=type(exc).__name__,
                                message=str(exc))
            self.observers.phase_finished(self, result, exc)
            self.rollback(reason=f"{phase_id} failed: {exc}")
            raise
        self.journal.record("phase.finished", phase=phase_id, status="ok" if result.ok else "failed",
                            duration_s=round(time.monotonic() - started, 3), values=result.values)
        self.observers.phase_finished(self, result, None)

    def _rehearsed_fault(self, phase_id: str) -> None:
        """``fault_phase=<phase>`` makes that phase raise (rehearse the rollback); ``<phase>:hang``
        makes it hang past ``cell_timeout_seconds`` (the per-cell timeout then interrupts it)."""
        phase, _, mode = self.params.fault_phase.partition(":")
        if not self.params.fault_phase or phase != phase_id:
            return
        if mode == "hang":
            time.sleep(float(self.params.cell_timeout_seconds or 60) * 2 + 60)
        raise GamedayAborted(f"rehearsed fault: fault_phase={self.params.fault_phase!r} made this phase "
                             f"{mode or 'raise'}")

    def check(self, result: PhaseResult, name: str, ok: bool, detail: str = "", fatal: bool = False) -> Check:
        check = Check(name, ok, detail, fatal)
        result.checks.append(check)
        self.journal.record("check", phase=result.phase, name=name, ok=ok, detail=detail, fatal=fatal)
        return check

    def measure(self, metric: Metric) -> Metric:
        metric = self.scorecard.set_metric(metric)
        self.journal.record("measurement", phase=self.current_phase, name=metric.name, value=metric.value,
                            unit=metric.unit, status=metric.status, evidence=metric.evidence)
        return metric

    def run_commands(self, phase_id: str, result: PhaseResult) -> None:
        """The playbook's shell steps for this phase (the ``commands`` parameter), shown and journaled."""
        for command in self.params.commands.get(phase_id, []):
            result.commands.append(self.runner.run(command, timeout=float(self.params.cell_timeout_seconds or 600) / 2,
                                                   phase=phase_id))

    def show(self, content: Any) -> None:
        """Show something beside the phase's result (a chart, a form, a note)."""
        self.observers.show(self, content)

    # ------------------------------------------------------------------ readings and waits
    def latest(self) -> Reading | None:
        return self.sampler.latest() if self.sampler is not None else None

    def next_reading(self, timeout: float | None = None) -> Reading | None:
        """The next reading the sampler takes (fresh), or None without a sampler or after ``timeout``."""
        if self.sampler is None:
            return None
        wait = timeout if timeout is not None else 5 * float(self.params.sample_interval_seconds or 1) + 5
        _, reading = self.sampler.next_reading(self.sampler.ticks, wait)
        return reading

    def readings_since(self, since: datetime | None) -> list[Reading]:
        if self.sampler is None:
            return []
        return [r for r in self.sampler.recent() if since is None or r.at >= since]

    def take_baseline(self, seconds: float) -> Reading | None:
        """The median of every input over ``seconds`` of readings (at least three), for pre-flight."""
        if self.sampler is None:
            return None
        interval = float(self.params.sample_interval_seconds or 1)
        need = max(3, int(seconds / interval) + 1)
        deadline = utcnow() + timedelta(seconds=seconds + 5 * interval + 5)
        start = self.sampler.ticks
        self.wait(f"pre-flight baseline over {seconds:g} s", deadline,
                  done=lambda r: self.sampler is not None and self.sampler.ticks - start >= need)
        got = self.sampler.recent(max(1, self.sampler.ticks - start))
        self.baseline = baseline(got, self.sampler.reader.reading_type) if got else None
        return self.baseline

    def stop_condition_blindness(self, reading: Reading) -> dict[str, str]:
        """The inputs of the enabled stop conditions that ``reading`` could not read."""
        return blind_inputs(self._conditions, reading)

    def wait(
        self,
        what: str,
        until: datetime,
        *,
        done: Callable[[Reading], bool] | None = None,
        watch: bool = False,
        detail: str = "",
    ) -> Reading | None:
        """Consume the sampler's readings until ``done(reading)`` or ``until``; show progress.

        With ``watch`` (while the fault is in force) every reading is also judged by the stop
        conditions, for lag blindness and for the fault ending on its own: any of these ends the wait
        early. Returns the reading that satisfied ``done`` (None otherwise)."""
        if self.sampler is None:
            return None
        interval = float(self.params.sample_interval_seconds or 1)
        timeout = max(0.0, (until - utcnow()).total_seconds())
        began = time.monotonic()
        seen = self.sampler.ticks
        outcome, found, last = "", None, self.sampler.latest()
        while True:
            left = (until - utcnow()).total_seconds()
            if left <= 0:
                outcome = "done" if done is None else "deadline"
                break
            seen, reading = self.sampler.next_reading(seen, min(left, 2 * interval + 1))
            if reading is not None:
                last = reading
                if watch and self._watch(reading):
                    outcome = "stopped"
                    break
                if done is not None and done(reading):
                    outcome, found = "done", reading
                    break
            self.observers.waiting(self, WaitProgress(what, time.monotonic() - began, timeout, "", detail), last)
        self.observers.waiting(self, WaitProgress(what, time.monotonic() - began, timeout, outcome, detail), last)
        return found

    def _watch(self, reading: Reading) -> bool:
        """True when the wait must end: a stop condition fired, the lag went blind, or the fault ended
        on its own."""
        if self.stopped_by is not None or self.healed_at is not None or self.injected_at is None:
            return True
        offset = self.clock.offset(reading.at)
        reason = first_fired(self._conditions, reading, self.baseline, offset)
        if reason is None:
            reason = lag_blindness(self.readings_since(None), self.injected_at, offset)
        if reason is not None:
            self._stop(reason)
            return True
        if reading.fault_active is False:
            return self._ended_early()  # a reading begun before T+0 may say so: the fault's own status decides
        return False

    def _stop(self, reason: StopReason) -> None:
        self.journal.record("stop_condition", phase=self.current_phase, condition=reason.condition,
                            value=reason.value, limit=reason.threshold, detail=reason.words, blind=reason.blind)
        self.stopped_by = reason
        self.observers.stopped(self, reason)
        self.rollback(reason=reason.words)

    def _ended_early(self) -> bool:
        """The fault ended before the runbook healed it: say why and when, from the target's records.
        False when the fault's own status says it is still in force (nothing ended)."""
        try:
            status = current = self.fault.status()
        except GamedayError as exc:
            status = None
            why = f"the fault is no longer in force ({exc})"
        else:
            if current.active:
                return False
            why = current.ended_early or "the fault is no longer in force"
        deadline = time.monotonic() + 10.0
        while status is not None and status.ended_early and status.ended_at is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the target is still recording the end (Chaos Mesh: the records' Recover events)
            try:
                status = self.fault.status()
            except GamedayError:
                break
        at = (status.ended_at if status is not None and status.ended_at else None) or utcnow()
        self.fault_ended_early = why
        self.journal.record("note", phase=self.current_phase, note=f"the fault ended early: {why}",
                            ended_at=at.isoformat(), detail=status.detail if status is not None else "")
        self._healed(at, by=f"ended early: {why}")
        return True

    # ------------------------------------------------------------------ the fault
    @property
    def fault_in_force(self) -> bool:
        return self.injected_at is not None and self.healed_at is None

    def inject(self, result: PhaseResult, *, deadline_seconds: float) -> datetime | None:
        """Apply the scenario's fault with its own deadline, confirmed: that moment is T+0."""
        self.journal.record("fault.requested", phase=self.current_phase, fault=self.fault.description,
                            deadline_seconds=deadline_seconds, dry_run=self.dry_run)
        if self.dry_run:
            self.check(result, f"{self.scenario.fault_word} applied", True, "dry run: not applied")
            return None
        t0 = self.fault.inject(deadline_seconds=deadline_seconds)
        self.clock.set_t0(t0)
        self.injected_at = t0
        try:
            active = self.fault.status().active
        except GamedayError:
            active = False
        self.journal.record("fault.active", phase=self.current_phase, t0=t0.isoformat(), confirmed=active,
                            fault=self.fault.description)
        self.check(result, f"{self.scenario.fault_word} confirmed in force", active,
                   f"T+0 = {t0.isoformat(timespec='seconds')}", fatal=True)
        self.observers.fault_injected(self, t0)
        return t0

    def heal(self, *, by: str = "runbook") -> datetime | None:
        """End the fault and confirm it ended (safe twice); journaled once."""
        if self.dry_run:
            return None
        healed = self.fault.heal()
        if healed is not None and self.healed_at is None:
            self._healed(healed, by=by)
        return healed

    def _healed(self, at: datetime, *, by: str) -> None:
        self.healed_at = at
        self.journal.record("fault.healed", phase=self.current_phase, at=at.isoformat(),
                            offset=self.clock.offset(at), by=by)
        self.observers.fault_healed(self, at, by)

    def rollback(self, reason: str = "requested") -> datetime | None:
        """The playbook's rollback: end the fault (confirmed) and run its rollback steps. Safe twice."""
        self.journal.record("note", phase="rollback", note=f"rollback: {reason}")
        healed = None if self.dry_run else self.fault.heal()
        if healed is not None and self.healed_at is None:
            self._healed(healed, by="rollback")
        for command in self.params.commands.get("rollback", []):
            self.runner.run(command, timeout=float(self.params.cell_timeout_seconds or 600) / 2, phase="rollback")
        self.show(f"**Rollback** ({reason}): {self.scenario.fault_word} "
                  + ("ended and confirmed" if healed else "was not in force (nothing to end)"))
        return healed

    # ------------------------------------------------------------------ canaries
    @property
    def final_canary_report(self) -> CanaryReport | None:
        """The canaries as the RPO phase accounted them (None before that, or when they could not be)."""
        return None if isinstance(self._canary_report, str) else self._canary_report

    def canary_report(self, *, final: bool = False) -> CanaryReport | str:
        """Every canary looked up in the events table (the reason as a string when it cannot be).

        The final report judges the canaries answered before it was asked for, and gives one that is
        not stored yet up to ``CANARY_SETTLE_SECONDS`` to arrive (accepted a moment ago, it may still be
        on its way through the pipeline: in flight is not lost)."""
        if self._canary_report is not None and final:
            return self._canary_report
        if self.canaries is None:
            return "no ingest URL: no canaries were sent"
        cutoff = utcnow()
        results = [r for r in self.canaries.results() if not final or r.sent_at <= cutoff]
        settle = time.monotonic() + (CANARY_SETTLE_SECONDS if final else 0.0)
        while True:
            try:
                report: CanaryReport | str = account(results, self.events_store().lookup_keys)
            except ProbeError as exc:
                report = exc.reason
            if isinstance(report, str) or not report.lost or time.monotonic() >= settle:
                break
            time.sleep(0.5)
        if final:
            self._canary_report = report
        return report

    def canaries_flowing(self, since: datetime | None, margin: float | None = None) -> bool:
        """Every canary accepted after ``since`` (older than the in-flight margin) is stored, and there is
        at least one: events flow end to end again."""
        if self.canaries is None:
            return True
        from gamedaylib.canary import account

        margin = max(2.0, 2 * float(self.params.sample_interval_seconds or 1)) if margin is None else margin
        cutoff = utcnow() - timedelta(seconds=margin)
        recent = [r for r in self.canaries.results()
                  if r.accepted and (since is None or r.sent_at >= since) and r.sent_at <= cutoff]
        if not recent:
            return False
        try:
            return int(account(recent, self.events_store().lookup_keys).lost) == 0
        except ProbeError:
            return False

    def canaries_lost_so_far(self) -> int | None:
        """Canaries lost, once known (after RPO counted them: before, a canary may still be buffered)."""
        lost = self.scorecard.events.get("canaries_lost")
        rpo = self.scorecard.metric("rpo_seconds")
        if rpo is not None and rpo.status != "not_measured" and lost is not None:
            return int(lost)
        return None

    def figure(self, name: str, make: Callable[[Any], Any]) -> Path | None:
        """Draw a chart (``make(charts)`` returns a matplotlib figure), save it in the archive as a PNG
        and show it. A chart is an optional observer: a failure is journaled, never raised."""
        from gamedaylib import charts  # matplotlib is loaded only when a chart is drawn

        path = self.archive_dir / name
        try:
            fig = make(charts)
            charts.save(fig, path)
        except (GamedayError, ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            self.journal.record("error", phase=self.current_phase, error="chart", message=f"{name}: {exc}")
            return None
        self.show(path)
        return path

    # ------------------------------------------------------------------ the team
    def observe(self, phase_id: str) -> dict[str, str]:
        """The phase's questions as a form (live: the team types and records; headless: the answers
        come from the ``observations`` parameter, journaled, shown as a static table)."""
        from gamedaylib import forms

        given = self.params.observations.get(phase_id, {})
        self.show(forms.observation_form(self.journal, self.playbook, phase_id, answers=given, live=self.live,
                                         show=False))
        answers = {q: given.get(q, "") for q in self.playbook.phase(phase_id).questions}
        answers.update({q: a for q, a in given.items() if q not in answers})
        return answers

    def measure_team_response(self) -> Metric:
        """Team response = the first ``acknowledged`` stamp − the alert's fire time (measured again at
        each stamp and at finish: a button pressed live counts)."""
        response = team_response_seconds(self.journal.entries(), self.alert_fired_at)
        return self.measure(metrics.team_response(response.seconds, response.evidence,
                                                  float(self.params.team_response_target_seconds or 0)))

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict[str, Any]:
        """Stop canaries and sampler, write the scorecard, samples, action items and incident report;
        heal in ``finally``."""
        try:
            self.current_phase = None
            if self.canaries is not None:
                self.canaries.stop()
            if self.sampler is not None:
                self.sampler.stop()
            self.finished = True
            if self.journal_has_stamps():
                self.measure_team_response()
            self.scorecard.completed = True
            if self.stopped_by is not None:
                self.scorecard.stopped_by = self.stopped_by.as_dict()
                self.scorecard.reason = self.stopped_by.words
            elif self.dry_run:
                self.scorecard.reason = "dry run: nothing applied, nothing measured"
            self.scorecard.finished_at = utcnow().isoformat()
            self.scorecard.fill_missing()
            self.scorecard.write(self.archive_dir / SCORECARD_FILE)
            write_action_items_csv(self.journal, self.archive_dir / ACTION_ITEMS_FILE)
            self.write_incident_report()
            card = self.scorecard.as_dict()
            self.journal.record("run.finished", verdict=card["verdict"],
                                reason=(f"{self.stopped_by.condition}: {self.stopped_by.words}" if self.stopped_by
                                        else "ran to the end"))
            self.observers.run_finished(self, card)
            return card
        finally:
            self.close()

    def journal_has_stamps(self) -> bool:
        return any(e.get("kind") == "stamp" for e in self.journal.entries())

    def write_incident_report(self) -> Path:
        path = self.archive_dir / REPORT_FILE
        path.write_text(render_incident_report(self.archive_dir, scorecard=self.scorecard.as_dict(),
                                               params=as_dict(self.params), journal=self.journal.entries(),
                                               playbook=self.playbook),
                        encoding="utf-8")
        return path

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Heal (again), release the lock, the probes and the target; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.dry_run:
                self.fault.heal()
        finally:
            if self.canaries is not None:
                self.canaries.stop()
            if self.sampler is not None:
                self.sampler.stop()
            for probe in self._probes.values():
                closer = getattr(probe, "close", None)
                if callable(closer):
                    closer()
            if self.lock is not None:
                self.lock.release()
            self.target.close()


def _replace(params: RunParams, **changes: Any) -> RunParams:
    return dataclasses.replace(params, **changes)
