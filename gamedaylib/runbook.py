"""The runbook: the ``Gameday`` object the notebook calls, one method per playbook phase.

``gd = Gameday.start(params)`` validates the parameters (before any side effect), opens the journal
in the archive folder, builds the target and starts the canaries and the sampler. Each phase method
journals ``phase.started``/``phase.finished``, shows the banner and what it measured, and returns a
``PhaseResult``. ``rollback()`` heals (safe twice); ``finish()`` stops everything, writes the
scorecard, samples and incident report, and heals in ``finally``.

Every wait polls, shows progress and has a deadline taken from the parameters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gamedaylib.archive import (
    ACTION_ITEMS_FILE,
    HEADLESS_ENV,
    PARAMS_FILE,
    REPORT_FILE,
    SCORECARD_FILE,
    project_root,
    render_incident_report,
)
from gamedaylib.clock import Clock, parse_time, utcnow
from gamedaylib.exceptions import (
    GamedayError,
    InvalidParameters,
    PreflightFailed,
    ProbeError,
    StopConditionFired,
)
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.parameters import effective_targets, redact, validate
from gamedaylib.playbook import (
    CRITICAL_EVENT_TYPES,
    PHASES_BY_ID,
    PLAYBOOK_METRIC_LABELS,
)
from gamedaylib.scorecard import Metric, Scorecard, table_markdown
from gamedaylib.shell import CommandResult, CommandRunner, ShellRunner
from gamedaylib.targets.base import Check, Target

if TYPE_CHECKING:
    from gamedaylib.probes.alerts import AlertEvent

GATEWAY = "api-gateway"
REPORTING = "reporting"
TIMELINE_PNG = "timeline.png"
# consumer lag unreadable (NATS monitoring down) on this many polls in a row while the partition runs:
# stop_lag_limit can no longer be judged, so the partition is healed at once (stop condition
# ``lag_unreadable``); one or two failed polls are tolerated as a blip
LAG_UNREADABLE_POLLS = 3


def _display(obj: Any) -> None:
    """Show ``obj`` in a notebook (plain Markdown/HTML, so archives need no widget state)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    if get_ipython() is not None:
        display(obj)


def _in_kernel() -> bool:
    """True inside an IPython kernel (a notebook), where widgets can be shown and pressed."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _display_with_id(obj: Any, display_id: str) -> None:
    """Show ``obj`` so that it can be replaced in place later (``_update_with_id``)."""
    from IPython import get_ipython
    from IPython.display import display

    if get_ipython() is not None:
        display(obj, display_id=display_id)


def _update_with_id(obj: Any, display_id: str) -> None:
    from IPython import get_ipython
    from IPython.display import update_display

    if get_ipython() is not None:
        update_display(obj, display_id=display_id)


def _markdown(text: str) -> None:
    from IPython.display import Markdown

    _display(Markdown(text))


class _Shown:
    """A return value already shown by the phase itself: the notebook does not show it twice."""

    def _ipython_display_(self) -> None:
        return None


class ShownText(_Shown, str):
    """Markdown already shown (returned by ``success_metrics``)."""


class ShownDict(_Shown, dict):  # type: ignore[type-arg]
    """A mapping already shown (returned by ``finish``)."""


@dataclass
class PhaseResult(_Shown):
    """What a phase measured and showed: checks, numbers, observations, shell steps."""

    phase: str
    checks: list[Check] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    observations: dict[str, str] = field(default_factory=dict)
    commands: list[CommandResult] = field(default_factory=list)
    ok: bool = True

    def as_markdown(self) -> str:
        lines = []
        if self.checks:
            lines += ["| Check | Result | Detail |", "|---|---|---|"]
            for c in self.checks:
                mark = "✔ ok" if c.ok else ("✘ FAILED" if c.fatal else "⚠ no")
                lines.append(f"| {c.name} | {mark} | {str(c.detail).replace('|', '/')} |")
            lines.append("")
        if self.values:
            lines += ["| Measurement | Value |", "|---|---|"]
            for k, v in self.values.items():
                lines.append(f"| {k} | {_fmt(v)} |")
            lines.append("")
        if self.observations:
            lines.append("**Observations**")
            lines.append("")
            for q, a in self.observations.items():
                lines.append(f"- *{q}* — {a or '_(no answer recorded)_'}")
            lines.append("")
        for cmd in self.commands:
            lines.append(cmd.as_markdown())
            lines.append("")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.2f}"
    if isinstance(v, datetime):
        return v.isoformat(timespec="seconds")
    return str(v)


@dataclass
class Reading:
    """One poll of the system during a wait (also what stop conditions judge)."""

    at: datetime
    lag: float | None = None
    buffer_size: float | None = None
    buffer_capacity: float | None = None
    gateway_connected: float | None = None
    reporting_connected: float | None = None
    requests_total: float | None = None
    requests_failed: float | None = None
    gateway_5xx: float | None = None
    retries: float | None = None
    breaker: float | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def as_sample(self) -> dict[str, Any]:
        return {
            "lag_pending": self.lag,
            "buffer_size": self.buffer_size,
            "buffer_capacity": self.buffer_capacity,
            "requests_total": self.requests_total,
            "requests_failed": self.requests_failed,
        }


class Gameday:
    """One run of GAMEDAY-001 (the notebook's single handle on the library)."""

    def __init__(
        self,
        params: dict[str, Any],
        target: Target,
        *,
        journal: Journal,
        archive_dir: Path,
        runner: CommandRunner | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.params = params
        self.target = target
        self.journal = journal
        self.archive_dir = archive_dir
        self.clock = clock or Clock()
        self.runner: CommandRunner = runner or ShellRunner(dry_run=params["dry_run"], journal=journal)
        self.dry_run: bool = params["dry_run"]
        self.endpoints = target.endpoints
        self.scorecard = Scorecard(
            gameday_id=params["gameday_id"],
            run_id=params["run_id"],
            target=params["target"],
            profile=params["profile"],
            started_at=self.clock.started_at.isoformat(),
            required_metrics=list(params["required_metrics"]),
            targets=effective_targets(params),
        )
        self.results: dict[str, PhaseResult] = {}
        self.current_phase: str | None = None
        self.healed_at: datetime | None = None
        self.lag_recovered_at: datetime | None = None
        self.recovered_at: datetime | None = None
        self.baseline: Reading | None = None
        self.readings: list[Reading] = []
        self.canaries: Any = None
        self.sampler: Any = None
        self.lock: Any = None
        self.finished = False
        self._closed = False
        self._alert_at: datetime | None = None
        self._stopped_by: StopConditionFired | None = None
        self._probe_cache: dict[str, Any] = {}
        self._alerts_unavailable = False
        self._lag_ever_read = False  # consumer lag was read at least once (NATS monitoring worked)
        self._lag_failures = 0  # polls in a row whose consumer lag could not be read
        # headless runs (gameday run) set GAMEDAY_HEADLESS=1: answers come from parameters, forms are
        # static; so is a run outside a notebook kernel (nobody can press a button there)
        self.live = os.environ.get(HEADLESS_ENV) != "1" and _in_kernel()
        from gamedaylib.notify import Notifier

        # webhook URLs come from the environment variables the parameters name; never journaled
        self.notifier = Notifier.from_env(
            params["notify_webhook_env"], params["status_page_webhook_env"], params["run_id"],
            journal=journal, gameday_id=params["gameday_id"],
        )
        self._banner_display_id: str | None = None
        self._chart_display_id: str | None = None
        self._banner_phase = "start"

    # ------------------------------------------------------------------ start
    @classmethod
    def start(cls, params: Mapping[str, Any], *, target: Target | None = None) -> Gameday:
        """Validate (nothing happens when invalid), open the journal, build the target, start canaries
        and the sampler."""
        raw = dict(params)
        try:
            p = validate(raw)
        except InvalidParameters as exc:
            archive = raw.get("archive_dir")
            if isinstance(archive, str) and archive:
                Journal(Path(archive) / JOURNAL_FILE).record("params.invalid", problems=exc.problems)
            raise
        base = _base_dir()
        p["lab_dir"] = str((base / p["lab_dir"]).resolve())
        archive_dir = (base / (p["archive_dir"] or os.path.join("outputs", p["gameday_id"], p["run_id"]))).resolve()
        p["archive_dir"] = str(archive_dir)
        archive_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(archive_dir / JOURNAL_FILE)
        safe = redact(p)
        (archive_dir / PARAMS_FILE).write_text(yaml.safe_dump(safe, sort_keys=True), encoding="utf-8")
        journal.record(
            "run.started", run_id=p["run_id"], target=p["target"], profile=p["profile"], params=safe,
            pid=os.getpid(),
        )
        try:
            from gamedaylib.safety import check_before_run

            check_before_run(p)  # production guard, another gameday holding the target
            if target is None:
                target = make_target(p)
            gd = cls(p, target, journal=journal, archive_dir=archive_dir)
            gd._take_lock()
            gd._start_background()
        except BaseException as exc:
            journal.record("error", error=type(exc).__name__, message=str(exc))
            if target is not None:
                target.close()
            raise
        gd._banner("start")
        return gd

    def _take_lock(self) -> None:
        if self.params["target"] != "lab" or self.dry_run:
            return
        from gamedaylib.safety import GamedayLock

        self.lock = GamedayLock(Path(self.params["lab_dir"]) / "gameday.lock")
        self.lock.acquire(self.params["run_id"], what=f"{self.params['gameday_id']} {self.archive_dir}")

    def _start_background(self) -> None:
        if self.dry_run:
            return
        ep = self.endpoints
        if ep.ingest_url:
            from gamedaylib.canary import CanarySender

            self.canaries = CanarySender(ep.ingest_url, self.params["run_id"], self.params["canary_rate"])
            self.canaries.start()
        try:
            self.sampler = self._make_sampler()
        except (ImportError, TypeError, GamedayError) as exc:
            self.journal.record("error", error="sampler", message=f"no sampler: {exc}")
            self.sampler = None
        if self.sampler is not None:
            self.sampler.start()

    def _make_sampler(self) -> Any:
        from gamedaylib.sampler import Sampler

        return Sampler.from_gameday(self)

    # ------------------------------------------------------------------ probes
    def _probe(self, name: str) -> Any:
        if name in self._probe_cache:
            return self._probe_cache[name]
        ep = self.endpoints
        probe: Any
        if name == "nats":
            if not ep.nats_monitor_url:
                raise ProbeError("nats", "no nats_monitor_url for this target")
            from gamedaylib.probes.nats import NatsMonitor

            probe = NatsMonitor(ep.nats_monitor_url)
        elif name == "metrics":
            from gamedaylib.probes.metrics import ServiceMetrics

            probe = ServiceMetrics(ep.service_metrics)
        elif name == "events":
            if not ep.events_dsn:
                raise ProbeError("events", f"no events DSN (set ${self.params['events_dsn_env']})")
            from gamedaylib.probes.events import EventsStore

            probe = EventsStore(ep.events_dsn)
        elif name == "prometheus":
            if not ep.prometheus_url:
                raise ProbeError("prometheus", "no Prometheus for this target")
            from gamedaylib.probes.metrics import PrometheusProbe

            probe = PrometheusProbe(ep.prometheus_url)
        elif name == "alerts":
            if not ep.alertmanager_url and not ep.prometheus_url:
                raise ProbeError("alerts", "neither Alertmanager nor Prometheus is available")
            from gamedaylib.probes.alerts import AlertProbe

            probe = AlertProbe(ep.alertmanager_url, ep.prometheus_url)
        else:
            raise ValueError(name)
        self._probe_cache[name] = probe
        return probe

    def _lag(self) -> float:
        lag = self._probe("nats").consumer_lag(self.endpoints.stream_name, self.endpoints.consumer_name)
        return float(lag.num_pending + lag.num_ack_pending)

    def read(self) -> Reading:
        """Poll lag and the services' metrics once; what cannot be read is listed in ``errors``."""
        r = Reading(at=utcnow())
        try:
            r.lag = self._lag()
        except ProbeError as exc:
            r.errors["lag"] = exc.reason
        self._track_lag(r)
        try:
            snaps = self._probe("metrics").sample()
        except ProbeError as exc:
            r.errors["metrics"] = exc.reason
            snaps = {}
        gw = snaps.get(GATEWAY)
        rep = snaps.get(REPORTING)
        if isinstance(gw, ProbeError):
            r.errors[GATEWAY] = gw.reason
        elif gw is not None:
            r.buffer_size = gw.value("event_buffer_size")
            r.buffer_capacity = gw.value("event_buffer_capacity")
            r.gateway_connected = gw.value("nats_connected")
            r.requests_total = gw.sum("http_requests_total")
            r.gateway_5xx = gw.sum("http_requests_total", code="5xx") or 0.0
            r.requests_failed = r.gateway_5xx
            r.breaker = gw.value("circuit_breaker_state")
            r.retries = (gw.sum("nats_retry_total") or 0.0)
        self._poll_alerts(r)
        if isinstance(rep, ProbeError):
            r.errors[REPORTING] = rep.reason
        elif rep is not None:
            r.reporting_connected = rep.value("nats_connected")
            r.retries = (r.retries or 0.0) + (rep.sum("nats_retry_total") or 0.0)
        self.readings.append(r)
        return r

    def _track_lag(self, r: Reading) -> None:
        """Journal when consumer lag becomes unreadable (NATS monitoring down) and when it is back."""
        if r.lag is not None:
            if self._lag_failures and self._lag_ever_read:
                self.journal.record("note", phase=self.current_phase,
                                    note=f"NATS monitoring answers again: consumer lag readable after "
                                         f"{self._lag_failures} failed polls")
            self._lag_ever_read, self._lag_failures = True, 0
            return
        self._lag_failures += 1
        if self._lag_failures == 1:
            self.journal.record("error", phase=self.current_phase, error="nats monitoring",
                                message=f"consumer lag unreadable: {r.errors.get('lag', 'unreadable')}")

    def _lag_blind_since(self, since: datetime | None) -> str | None:
        """Why recovery by consumer lag cannot be judged: lag was read before, but NATS monitoring did
        not answer on some of the polls since ``since`` (None when every poll had the lag)."""
        if since is None or not self._lag_ever_read:
            return None
        polls = [r for r in self.readings if r.at >= since]
        blind = [r for r in polls if r.lag is None]
        if not blind:
            return None
        return (f"consumer lag unreadable on {len(blind)} of {len(polls)} polls since the heal, NATS "
                f"monitoring: {blind[-1].errors.get('lag', 'unreadable')}")

    def _poll_alerts(self, r: Reading) -> None:
        """Alerts are watched while they fire (they may resolve before the incident-response phase)."""
        if self.clock.t0 is None or self._alerts_unavailable:
            return
        try:
            self._probe("alerts").poll(self.clock.t0)
        except ProbeError as exc:
            r.errors["alerts"] = exc.reason
            self._alerts_unavailable = True

    # ------------------------------------------------------------------ display
    def banner(self, phase: str | None = None) -> str:
        """The status banner (phase, T-offset, key numbers) as HTML; shown and returned."""
        phase = phase or self.current_phase or "start"
        last = self.readings[-1] if self.readings else None
        numbers = {}
        if last is not None:
            numbers = {"lag": last.lag, "buffer": last.buffer_size, "breaker": last.breaker}
        numbers["canaries_lost"] = self._canaries_lost_so_far()
        from gamedaylib import banner as banner_mod

        return banner_mod.render(
            gameday_id=self.params["gameday_id"], run_id=self.params["run_id"], phase=phase,
            offset=self.clock.offset(), numbers=numbers, target=self.params["target"],
            profile=self.params["profile"], partition_active=self._partition_state(),
        )

    def _banner(self, phase: str) -> None:
        """Show a new banner (top of a phase); ``_refresh_banner`` updates it in place afterwards."""
        import uuid

        from IPython.display import HTML

        self._banner_phase = phase
        self._banner_display_id = f"gameday-banner-{uuid.uuid4().hex}"
        _display_with_id(HTML(self.banner(phase)), self._banner_display_id)

    def _refresh_banner(self) -> None:
        """The last banner shown, redrawn in place with the numbers measured since (clock, lag,
        buffer, canaries lost once known)."""
        if self._banner_display_id is None:
            return
        from IPython.display import HTML

        _update_with_id(HTML(self.banner(self._banner_phase)), self._banner_display_id)

    def _canaries_lost_so_far(self) -> int | None:
        """Canaries lost, once that is known: after the RPO phase counted them, or after recovery
        (before recovery an accepted canary not yet stored may still be buffered, not lost)."""
        rpo = self.scorecard.metric("rpo_seconds")
        if rpo is not None and rpo.status != "not_measured":
            lost = self.scorecard.events.get("canaries_lost")
            return None if lost is None else int(lost)
        if self.recovered_at is not None and self.canaries is not None:
            report = self._canary_report()
            return None if isinstance(report, ProbeError) else int(report.lost)
        return None

    def _partition_state(self) -> bool | None:
        try:
            return self.target.partition_active()
        except GamedayError:
            return None

    @contextmanager
    def _phase(self, phase_id: str) -> Iterator[PhaseResult]:
        self.current_phase = phase_id
        result = PhaseResult(phase_id)
        self.results[phase_id] = result
        started = time.monotonic()
        self.journal.record("phase.started", phase=phase_id, offset=self.clock.offset())
        if self.sampler is not None and hasattr(self.sampler, "mark_phase"):
            self.sampler.mark_phase(phase_id)
        self._banner(phase_id)
        try:
            from gamedaylib.safety import raise_rehearsed_fault

            raise_rehearsed_fault(self.params, phase_id)
            yield result
        except BaseException as exc:
            result.ok = False
            self.journal.record(
                "phase.finished", phase=phase_id, status="failed", duration_s=round(time.monotonic() - started, 3),
                error=type(exc).__name__, message=str(exc),
            )
            _markdown(result.as_markdown() + f"\n\n**Phase failed:** `{type(exc).__name__}: {exc}`")
            self.rollback(reason=f"{phase_id} failed: {exc}")
            self._refresh_banner()
            raise
        self.journal.record(
            "phase.finished", phase=phase_id, status="ok" if result.ok else "failed",
            duration_s=round(time.monotonic() - started, 3), values=result.values,
        )
        _markdown(result.as_markdown())
        self._refresh_banner()  # the banner at the top of the phase now shows what it measured

    def _run_commands(self, phase_id: str, result: PhaseResult) -> None:
        for command in self.params["commands"].get(phase_id, []):
            result.commands.append(
                self.runner.run(command, timeout=self.params["cell_timeout_seconds"] / 2, phase=phase_id)
            )

    def _check(self, result: PhaseResult, name: str, ok: bool, detail: str = "", fatal: bool = False) -> Check:
        check = Check(name, ok, detail, fatal)
        result.checks.append(check)
        self.journal.record("check", phase=result.phase, name=name, ok=ok, detail=detail, fatal=fatal)
        return check

    def _measure(self, metric: Metric) -> Metric:
        metric = self.scorecard.set_metric(metric)
        self.journal.record(
            "measurement", phase=self.current_phase, name=metric.name, value=metric.value, unit=metric.unit,
            status=metric.status, evidence=metric.evidence,
        )
        return metric

    def observe(self, phase_id: str) -> dict[str, str]:
        """The phase's questions as a form (``gamedaylib.forms``): live, the team types and records;
        headless, the answers come from the ``observations`` parameter, are journaled, and shown as a
        static table (no widget state needed). Returns the answers known now."""
        phase = PHASES_BY_ID[phase_id]
        given = self.params["observations"].get(phase_id, {})
        answers = {q: given.get(q, "") for q in phase.questions}
        answers.update({q: a for q, a in given.items() if q not in answers})
        from gamedaylib import forms

        forms.observation_form(self.journal, phase_id, answers=given, live=self.live)
        return ShownDict(answers)  # the form and its table are shown; not a third time as a dict

    def _wait(
        self,
        what: str,
        until: datetime,
        *,
        done: Callable[[Reading], bool] | None = None,
        stop_conditions: bool = False,
    ) -> Reading | None:
        """Poll every sample interval until ``done`` or the deadline; show progress; judge stop
        conditions while the partition runs. Returns the reading that satisfied ``done`` (or None)."""
        from gamedaylib.banner import LiveWait

        interval = float(self.params["sample_interval_seconds"])
        outcome: list[Reading | None] = []
        self._chart_display_id = None  # each wait draws its chart in its own cell, then redraws it there

        def status() -> str:
            r = self.readings[-1] if self.readings else None
            if r is None:
                return self.clock.offset()
            return (f"· {self.clock.offset()} · lag {_fmt(r.lag)} · buffer {_fmt(r.buffer_size)}"
                    f" · gateway connected {_fmt(r.gateway_connected)}")

        def check() -> bool:
            reading = self.read()
            if stop_conditions and (self._stopped_by is not None or self._judge_stop_conditions(reading)):
                outcome.append(None)
                return True
            if done is not None and done(reading):
                outcome.append(reading)
                return True
            return False

        # live: a progress bar, the banner and a lag/buffer chart redrawn in place; headless: a compact
        # progress line at most every few seconds (never past the deadline either way)
        wait = LiveWait(
            what, max(0.0, (until - utcnow()).total_seconds()), live=self.live, redraw=self._redraw_live,
            redraw_every=max(5.0, interval), print_every=max(5.0, interval), status=status,
        )
        wait.wait_until(check, interval=interval)
        return outcome[0] if outcome else None

    def _redraw_live(self) -> None:
        """During a live wait: the banner's numbers and the lag/buffer chart, both in place."""
        self._refresh_banner()
        if self.sampler is None:
            return
        try:
            from gamedaylib import charts
        except ImportError:
            return
        import io

        from IPython.display import Image

        try:
            fig = charts.timeline(self.sampler.rows(), self.journal.entries(), t0=self.clock.t0)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
        except (GamedayError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # the live chart is an optional observer: it may fail without failing the wait, but says so
            self.journal.record("error", phase=self.current_phase, error="live chart", message=str(exc))
            return
        image = Image(data=buf.getvalue(), format="png")
        if self._chart_display_id is None:
            import uuid

            self._chart_display_id = f"gameday-chart-{uuid.uuid4().hex}"
            _display_with_id(image, self._chart_display_id)
        else:
            _update_with_id(image, self._chart_display_id)

    def _judge_stop_conditions(self, reading: Reading) -> bool:
        """True when a stop condition fired: journaled, healed at once (the run goes on to verify)."""
        from gamedaylib.safety import StopConditions

        conditions = StopConditions(
            error_rate=self.params["stop_error_rate"],
            lag_limit=self.params["stop_lag_limit"],
            buffer_fraction=self.params["stop_buffer_fraction"],
        )
        sample = reading.as_sample()
        if self.baseline is not None and reading.requests_total is not None:
            sample["requests_total"] = reading.requests_total - (self.baseline.requests_total or 0)
            sample["requests_failed"] = (reading.requests_failed or 0) - (self.baseline.requests_failed or 0)
        fired = conditions.check(sample)
        detail: dict[str, str] = {}
        if fired is None and self._lag_ever_read and self._lag_failures >= LAG_UNREADABLE_POLLS:
            fired = ("lag_unreadable", self._lag_failures, LAG_UNREADABLE_POLLS - 1)
            detail["detail"] = (f"consumer lag unreadable on {self._lag_failures} polls in a row, NATS monitoring: "
                                f"{reading.errors.get('lag', 'unreadable')}; stop_lag_limit cannot be judged blind")
        if fired is None:
            return False
        name, value, limit = fired
        self.journal.record("stop_condition", phase=self.current_phase, condition=name, value=value, limit=limit,
                            **detail)
        self._stopped_by = StopConditionFired(name, value, limit, **detail)
        self.rollback(reason=str(self._stopped_by))
        return True

    # ------------------------------------------------------------------ phases
    def preflight(self) -> PhaseResult:
        """T-15: every service healthy, lag baseline under the threshold, a Prometheus snapshot where
        allowed, pre-chaos event counts, dashboards, the pre-gameday checklist."""
        with self._phase("preflight") as res:
            for check in self.target.preflight():
                self._check(res, check.name, check.ok, check.detail, check.fatal)
            self._run_commands("preflight", res)
            reading = self.read()
            self.baseline = reading
            if reading.lag is None:
                self._check(res, "consumer lag baseline", False, reading.errors.get("lag", "unreadable"), True)
            else:
                ok = reading.lag < self.params["lag_threshold"]
                self._check(res, "consumer lag baseline", ok,
                            f"{reading.lag:g} messages (threshold {self.params['lag_threshold']:g})", True)
            res.values["lag baseline (messages)"] = reading.lag
            res.values["gateway buffer"] = reading.buffer_size
            try:
                snap = self._probe("prometheus").snapshot()
                self._check(res, "Prometheus TSDB snapshot", True, str(snap), False)
            except ProbeError as exc:
                self._check(res, "Prometheus TSDB snapshot", False, exc.reason, False)
            try:
                events = self._probe("events")
                count = events.count_since(self.clock.started_at - timedelta(minutes=20))
                res.values["events stored in the last 20 min (pre-chaos)"] = count
                self._check(res, "events table reachable", True, f"{count} events in the last 20 min", True)
                missing = events.check_indexes()
                self._check(res, "events table indexes", not missing,
                            "all present" if not missing else f"missing: {missing}", False)
            except ProbeError as exc:
                self._check(res, "events table reachable", False, exc.reason, True)
            from gamedaylib import forms

            checklist = forms.checklist_form(self.journal, checklist=self.params["checklist"], live=self.live)
            if self.live:
                checklist.record(source="pre-flight")  # the state as it is now (headless: journaled once)
            dashboards = dict(self.endpoints.dashboards) | dict(self.params["dashboards"])
            if dashboards:
                _markdown("**Dashboards:** " + " · ".join(f"[{n}]({u})" for n, u in dashboards.items()))
            failed = [c.name for c in res.checks if c.fatal and not c.ok]
            if failed:
                res.ok = False
                details = "; ".join(f"{c.name}: {c.detail}" for c in res.checks if c.fatal and not c.ok)
                raise PreflightFailed(f"pre-flight failed: {details}; nothing was injected", failed)
        return res

    def inject(self) -> PhaseResult:
        """T+0: apply the partition with a deadline, confirmed active; T+0 is the confirmation."""
        with self._phase("injection") as res:
            duration = self.params["partition_seconds"] + self.params["partition_safety_margin_seconds"]
            self.journal.record("partition.requested", phase="injection", deadline_seconds=duration,
                                dry_run=self.dry_run)
            self._run_commands("injection", res)
            if self.dry_run:
                self._check(res, "partition applied", True, "dry run: not applied")
                return res
            t0 = self.target.inject(duration_seconds=duration)
            self.clock.set_t0(t0)
            active = self.target.partition_active()
            self.journal.record("partition.active", phase="injection", t0=t0.isoformat(), confirmed=active)
            self._check(res, "partition confirmed active", active, f"T+0 = {t0.isoformat(timespec='seconds')}", True)
            res.values["T+0"] = t0
            res.values["fault deadline (s)"] = duration
            self._notify("chaos_start", "injection",
                         f"chaos started: NATS network partition active at T+0 = {t0.isoformat(timespec='seconds')}"
                         f" for {self.params['partition_seconds']:g}s (heals itself within {duration:g}s)")
        return res

    def buffering(self) -> PhaseResult:
        """T+5 (half-way through the partition): buffer, retries, circuit breaker, user-facing errors,
        the SSE stream. Stop conditions are judged while waiting."""
        with self._phase("buffering") as res:
            if self.clock.t0 is not None:
                until = self.clock.t0 + timedelta(seconds=self.params["partition_seconds"] / 2)
                self._wait("partition running", until, stop_conditions=True)
            reading = self.read()
            base = self.baseline or Reading(at=reading.at)
            res.values["buffer size"] = reading.buffer_size
            res.values["buffer capacity"] = reading.buffer_capacity
            retries = _delta(reading.retries, base.retries)
            gateway_5xx = _delta(reading.gateway_5xx, base.gateway_5xx)
            canary_errors = self._canary_errors()
            res.values["retries since start"] = retries
            res.values["circuit breaker (0 closed, 1 half-open, 2 open)"] = reading.breaker
            res.values["gateway 5xx since start"] = gateway_5xx
            res.values["canary errors so far"] = canary_errors
            first_rise = self._first_lag_rise()
            res.values["lag started rising (s after T+0)"] = first_rise
            self._check(res, "services buffer events", bool(reading.buffer_size),
                        f"gateway buffer holds {_fmt(reading.buffer_size)} events")
            self._check(res, "retry logic engaged", bool(retries), f"{_fmt(retries)} retries since start")
            errors = (canary_errors or 0) + int(gateway_5xx or 0)
            self._check(res, "no user-facing errors", errors == 0, f"{errors} non-2xx answers so far")
            alive, detail = self._sse_alive()
            self._check(res, "Corp Cockpit SSE stream responsive", alive, detail)
            self._run_commands("buffering", res)
            self.observe("buffering")
        return res

    def heal(self) -> PhaseResult:
        """T+10: at the end of the partition, remove it and confirm NATS connectivity within
        ``heal_confirm_seconds``."""
        with self._phase("heal") as res:
            if self.clock.t0 is not None:
                until = self.clock.t0 + timedelta(seconds=self.params["partition_seconds"])
                self._wait("partition running", until, stop_conditions=True)
            self._run_commands("heal", res)
            if self.dry_run:
                return res
            healed = self.target.heal()
            self.healed_at = healed or self.healed_at or utcnow()
            self.journal.record("partition.healed", phase="heal", at=self.healed_at.isoformat(),
                                offset=self.clock.offset(self.healed_at))
            self._notify("heal", "heal", f"partition healed at {self.healed_at.isoformat(timespec='seconds')} "
                         f"({self.clock.offset(self.healed_at)}); watching the replay")
            deadline = self.healed_at + timedelta(seconds=self.params["heal_confirm_seconds"])
            reading = self._wait(
                "NATS connectivity", deadline,
                done=lambda r: r.gateway_connected == 1 and r.reporting_connected == 1,
            )
            nats_ok = False
            try:
                nats_ok = self._probe("nats").healthz()
            except ProbeError:
                nats_ok = False
            if reading is not None:
                took = (reading.at - self.healed_at).total_seconds()
                self._check(res, "NATS connections back", True,
                            f"gateway and reporting reconnected {took:.1f}s after heal "
                            f"(≤ {self.params['heal_confirm_seconds']:g}s)", False)
                res.values["reconnected after heal (s)"] = took
            else:
                self._check(res, "NATS connections back", False,
                            f"not reconnected within {self.params['heal_confirm_seconds']:g}s", False)
            self._check(res, "nats-server healthz", nats_ok, "/healthz", False)
            res.values["healed at"] = self.healed_at
        return res

    def replay(self) -> PhaseResult:
        """T+15: lag back under the threshold within the deadline, buffer drained, every accepted canary
        stored; duplicates found (and whether idempotency stopped them); data integrity."""
        with self._phase("replay") as res:
            if self.healed_at is None and not self.dry_run:
                self.healed_at = self.target.heal() or utcnow()
            start = self.healed_at or utcnow()
            deadline = start + timedelta(seconds=self.params["lag_recovery_deadline_seconds"])
            threshold = self.params["lag_threshold"]

            def lag_ok(r: Reading) -> bool:
                if r.lag is not None and r.lag < threshold and self.lag_recovered_at is None:
                    self.lag_recovered_at = r.at
                return self.lag_recovered_at is not None

            drained: list[Reading] = []

            def recovered(r: Reading) -> bool:
                lag_ok(r)
                if r.lag is None or r.lag >= threshold or (r.buffer_size or 0) > 0:
                    return False
                if not drained:
                    drained.append(r)  # healed, lag under the threshold, buffer empty: first seen now
                # events flow end to end again: every canary accepted since then is stored
                return self._canaries_flowing(drained[0].at)

            reading = self._wait("waiting for recovery", deadline, done=recovered) if not self.dry_run else None
            if reading is not None and drained:
                self.recovered_at = drained[0].at
                self.journal.record("note", phase="replay", note="recovered",
                                    recovered_at=self.recovered_at.isoformat(),
                                    flow_confirmed_at=reading.at.isoformat())
            if self.canaries is not None:
                self.canaries.stop()
                # the last canaries (sent just before the stop) get a short grace period to be stored
                since = drained[0].at if drained else start
                grace = utcnow() + timedelta(seconds=max(5.0, 5 * self.params["sample_interval_seconds"]))
                self._wait("last canaries", grace, done=lambda r: self._canaries_flowing(since, margin=0.0))
            res.values["lag under threshold at"] = self.lag_recovered_at
            res.values["full recovery at"] = self.recovered_at
            last = self.readings[-1] if self.readings else None
            self._check(res, f"consumer lag < {threshold:g} within deadline", self.lag_recovered_at is not None,
                        f"lag {_fmt(last.lag if last else None)}" if last is None or last.lag is not None
                        else f"lag unreadable: NATS monitoring: {last.errors.get('lag', '?')}")
            self._check(res, "gateway buffer drained", bool(last and last.buffer_size == 0),
                        f"buffer {_fmt(last.buffer_size if last else None)}")
            dups = self._duplicates()
            res.values["duplicate rows in the gameday window"] = dups[0] if dups else None
            logs = self._duplicate_logs()
            res.values["`duplicate_event` log lines (reporting)"] = logs
            if dups is not None:
                self._check(res, "idempotency keys prevent duplicates", dups[0] == 0,
                            f"{dups[0]} extra rows over {len(dups[1])} keys; {_fmt(logs)} duplicate_event logs "
                            "(duplicates caught by the consumer)")
            self._run_commands("replay", res)
            self.observe("replay")
        return res

    def verify_rto(self) -> PhaseResult:
        """T+30: RTO = T+0 → full recovery (healed, lag under threshold, buffer empty, every stored
        canary accounted for); services healthy; SSE delivering."""
        with self._phase("rto") as res:
            t0 = self.clock.t0
            target = self.params["rto_target_seconds"]
            blind = self._lag_blind_since(self.healed_at)  # NATS monitoring down: recovery unseen
            if t0 is None:
                self._measure(Metric.not_measured("rto_seconds", target, "no confirmed injection (T+0)", unit="s"))
            elif self.recovered_at is None and blind:
                self._measure(Metric.not_measured(
                    "rto_seconds", target, f"{blind}; full recovery needs consumer lag under "
                    f"{self.params['lag_threshold']:g}, which could not be seen", unit="s"))
            elif self.recovered_at is not None:
                rto = (self.recovered_at - t0).total_seconds()
                self._measure(Metric.judged(
                    "rto_seconds", round(rto, 1), target,
                    f"T+0 {t0.isoformat(timespec='seconds')} (partition confirmed) → full recovery "
                    f"{self.recovered_at.isoformat(timespec='seconds')} (healed, lag < "
                    f"{self.params['lag_threshold']:g}, buffer empty; confirmed by every canary accepted "
                    "from then on being stored: events flow end to end); "
                    f"polled every {self.params['sample_interval_seconds']:g}s", unit="s"))
            else:
                waited = ((self.readings[-1].at if self.readings else utcnow()) - t0).total_seconds()
                self._measure(Metric(
                    "rto_seconds", round(waited, 1), target, "<=", "fail",
                    f"no full recovery within the lag recovery deadline: RTO > {waited:.0f}s", "s"))
            lag_target = self.params["lag_recovery_deadline_seconds"]
            if self.healed_at is None:
                self._measure(Metric.not_measured("lag_recovery_seconds", lag_target, "never healed", unit="s"))
            elif self.lag_recovered_at is None and blind:
                self._measure(Metric.not_measured(
                    "lag_recovery_seconds", lag_target,
                    f"{blind}; lag may have gone under {self.params['lag_threshold']:g} unseen", unit="s"))
            elif self.lag_recovered_at is not None:
                took = max(0.0, (self.lag_recovered_at - self.healed_at).total_seconds())
                self._measure(Metric.judged("lag_recovery_seconds", round(took, 1), lag_target,
                                            "heal → first poll with consumer lag under the threshold", unit="s"))
            else:
                self._measure(Metric("lag_recovery_seconds", lag_target, lag_target, "<=", "fail",
                                     f"lag never under {self.params['lag_threshold']:g} within the deadline", "s"))
            rto_metric = self.scorecard.metric("rto_seconds")
            res.values["RTO (s)"] = rto_metric.value if rto_metric else None
            for check in self.target.preflight():
                if "lag" in check.name.lower():
                    continue
                self._check(res, f"healthy after recovery: {check.name}", check.ok, check.detail)
            alive, detail = self._sse_alive()
            self._check(res, "SSE stream delivering", alive, detail)
            self._run_commands("rto", res)
        return res

    def verify_rpo(self) -> PhaseResult:
        """T+45: canaries accounted (lost → loss window → RPO), the lab's ground truth, critical event
        types, the events window."""
        with self._phase("rpo") as res:
            report = self._canary_report()
            rpo_target = self.params["rpo_target_seconds"]
            truth_loss: int | None = None
            truth = self.target.ground_truth()
            if truth is not None:
                truth_loss = len([k for k in truth.accepted_keys if truth.stored_keys.get(k, 0) == 0])
                res.values["ground truth: user events accepted (202)"] = len(truth.accepted_keys)
                res.values["ground truth: accepted but not stored"] = truth_loss
                res.values["ground truth: gateway events_dropped_total"] = truth.dropped_total
                res.values["ground truth: user posts answered 503"] = truth.rejected
            if isinstance(report, ProbeError):
                for name in ("rpo_seconds", "event_loss_count"):
                    self._measure(Metric.not_measured(name, self.scorecard.targets[name], report.reason))
            else:
                ev = self.scorecard.events
                ev.update(canaries_sent=int(report.sent), canaries_stored=int(report.stored),
                          canaries_lost=int(report.lost), canaries_duplicated=int(report.duplicated))
                rpo = float(report.rpo_seconds or 0.0)
                self._measure(Metric.judged(
                    "rpo_seconds", round(rpo, 1), rpo_target,
                    f"loss window of lost canaries ({report.lost} of {report.sent} lost; 0 when none lost): "
                    f"{report.evidence}",
                    unit="s"))
                loss = int(report.lost)
                evidence = f"{report.lost} canaries accepted (2xx) but never stored"
                if truth_loss is not None:
                    loss += truth_loss
                    evidence += (f" + {truth_loss} simulated-user events the gateway accepted (202) that are "
                                 "not in the events table (lab ground truth)")
                self._measure(Metric.judged("event_loss_count", loss, 0, evidence, comparison="==",
                                            unit="events"))
                self._figure("canaries.png", lambda charts: charts.canary_figure(report, self.clock.t0))
                res.values["canaries sent / stored / lost / duplicated"] = (
                    f"{report.sent} / {report.stored} / {report.lost} / {report.duplicated}")
            self._measure_errors()
            self._measure_duplicates(report)
            try:
                events = self._probe("events")
                crit = events.critical_types(self.clock.started_at, list(CRITICAL_EVENT_TYPES))
                res.values["critical events stored since start"] = ", ".join(f"{k}: {v}" for k, v in crit.items())
                window = events.window_stats(self.clock.started_at - timedelta(hours=1))
                res.values["events in the last hour (min created, max created, count)"] = (
                    f"{_fmt(window[0])}, {_fmt(window[1])}, {window[2]}")
            except ProbeError as exc:
                self._check(res, "events table", False, exc.reason)
            for name in ("rpo_seconds", "event_loss_count", "user_facing_errors", "duplicate_count"):
                m = self.scorecard.metric(name)
                if m:
                    res.values[PLAYBOOK_METRIC_LABELS[name]] = f"{_fmt(m.value)} ({m.status})"
            self._run_commands("rpo", res)
        return res

    def incident_response(self) -> PhaseResult:
        """T+60: the alert timeline (first gameday alert after T+0), the stamps, team response."""
        with self._phase("incident_response") as res:
            fire_target = self.params["alert_fire_target_seconds"]
            t0 = self.clock.t0
            if t0 is None:
                self._measure(Metric.not_measured("alert_fire_seconds", fire_target, "no T+0", unit="s"))
            else:
                try:
                    probe = self._probe("alerts")
                    event = probe.first_fire_after(t0)
                    deadline = t0 + timedelta(seconds=fire_target)
                    if event is None and utcnow() < deadline:
                        # not fired yet: watch until the target has passed (a late alert still counts)
                        self._wait("waiting for the first alert", deadline,
                                   done=lambda r: probe.first_fire_after(t0) is not None)
                        event = probe.first_fire_after(t0)
                    try:
                        timeline = probe.timeline(self.clock.started_at)
                        if timeline:
                            res.values["alert timeline"] = "; ".join(
                                f"{_alert_label(e)} at {self.clock.offset(e.starts_at)}" for e in timeline)
                    except ProbeError as exc:
                        res.values["alert timeline"] = f"unavailable: {exc.reason}"
                    if event is None:
                        waited = (utcnow() - t0).total_seconds()
                        self._measure(Metric("alert_fire_seconds", None, fire_target, "<=", "fail",
                                             f"no gameday alert fired within {waited:.0f}s after T+0", "s"))
                    else:
                        at = self._alert_at = event.starts_at
                        self._measure(Metric.judged(
                            "alert_fire_seconds", round((at - t0).total_seconds(), 1), fire_target,
                            f"first alert {_alert_label(event)} fired at {at.isoformat(timespec='seconds')} "
                            "(Alertmanager/Prometheus) − T+0", unit="s"))
                except ProbeError as exc:
                    self._measure(Metric.not_measured("alert_fire_seconds", fire_target, exc.reason, unit="s"))
            from gamedaylib import forms

            forms.stamp_buttons(self.journal, self.clock, stamps=self.params["stamps"], live=self.live)
            self._measure_team_response(res)
            self._run_commands("incident_response", res)
            self.observe("incident_response")
        return res

    def postmortem(self) -> PhaseResult:
        """T+90: debrief answers, open questions (unanswered ones), action items."""
        with self._phase("postmortem") as res:
            self.observe("postmortem")
            from gamedaylib import forms

            # live: a form, each "Add" journals an item; headless: the parameter, journaled once;
            # both show the static table (archived as action-items.csv by finish())
            forms.action_items_form(self.journal, items=self.params["action_items"], live=self.live)
            res.values["open questions"] = len(self.open_questions())
        return res

    def success_metrics(self) -> str:
        """The playbook's success-metrics table, filled and judged (shown and returned as Markdown)."""
        self.scorecard.fill_missing()
        table = table_markdown(self.scorecard.metrics)
        text = (f"**Verdict so far:** `{self.scorecard.verdict if self.finished else _provisional(self)}` · "
                f"profile `{self.params['profile']}` · required: {', '.join(self.params['required_metrics'])}\n\n"
                + table)
        _markdown(text)
        self.chart()
        return ShownText(text)

    def chart(self) -> Path | None:
        """The timeline figure (phases shaded) as a static PNG in the archive, shown inline."""
        rows = self.sampler.rows() if self.sampler is not None else []
        return self._figure(TIMELINE_PNG, lambda charts: charts.timeline(rows, self.journal.entries(),
                                                                         t0=self.clock.t0))

    def _figure(self, name: str, make: Callable[[Any], Any]) -> Path | None:
        """Save a chart as a PNG in the archive and show it (static: no widget, no script)."""
        try:
            from gamedaylib import charts
        except ImportError:
            return None
        path = self.archive_dir / name
        try:
            fig = make(charts)
            fig.savefig(path, dpi=90, bbox_inches="tight")
        except (GamedayError, ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            # a chart is an optional observer: it may fail without failing the run, but says so
            self.journal.record("error", phase=self.current_phase, error="chart", message=f"{name}: {exc}")
            return None
        from IPython.display import Image

        _display(Image(filename=str(path)))
        return path

    # ------------------------------------------------------------------ rollback and finish
    def rollback(self, reason: str = "requested") -> datetime | None:
        """The playbook's rollback procedure: remove the partition (confirmed), journal it. Safe twice."""
        self.journal.record("note", phase="rollback", note=f"rollback: {reason}")
        healed: datetime | None = None
        if not self.dry_run:
            healed = self.target.heal()
            if healed is not None:
                self.healed_at = self.healed_at or healed
                self.journal.record("partition.healed", phase="rollback", at=healed.isoformat(), by="rollback")
        for command in self.params["commands"].get("rollback", []):
            self.runner.run(command, timeout=self.params["cell_timeout_seconds"] / 2, phase="rollback")
        _markdown(f"**Rollback** ({reason}): partition "
                  + ("removed and confirmed" if healed else "was not active (nothing to heal)"))
        return healed

    def finish(self) -> dict[str, Any]:
        """Stop canaries and sampler, write the scorecard, samples and incident report; heal in finally."""
        try:
            self.current_phase = None
            if self.canaries is not None:
                self.canaries.stop()
            if self.sampler is not None:
                self.sampler.stop()
            self.finished = True
            self.scorecard.completed = self._stopped_by is None  # a stop condition aborts the run
            self.scorecard.reason = str(self._stopped_by or ("dry run: nothing applied, nothing measured"
                                                              if self.dry_run else ""))
            self.scorecard.finished_at = utcnow().isoformat()
            self.scorecard.fill_missing()
            self.scorecard.write(self.archive_dir / SCORECARD_FILE)
            self.write_action_items()
            self.write_incident_report()
            verdict = self.scorecard.verdict
            self.journal.record("run.finished", verdict=verdict, reason=str(self._stopped_by or "ran to the end"))
            self._notify("end", next(reversed(self.results), None),
                         f"gameday finished: verdict {verdict}"
                         + (f" ({self._stopped_by})" if self._stopped_by else ""))
            finish_note = f"## Verdict: `{verdict}`\n\nArchive: `{self.archive_dir}`"
            if self.live:  # gameday run writes these itself; a live session needs the saved notebook
                finish_note += ("\n\nSave the notebook now, then add it and `report.html` to the archive:"
                                f"\n\n    gameday archive {self.archive_dir}\n\n"
                                "(add `--notebook PATH` if it is saved anywhere but "
                                "`notebooks/nats_partition_gameday.ipynb`)")
            _markdown(finish_note)
            return ShownDict(self.scorecard.as_dict())
        finally:
            self.close()

    def close(self) -> None:
        """Heal (again), release the lock and the target; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.dry_run:
                self.target.heal()
        finally:
            for probe in self._probe_cache.values():
                closer = getattr(probe, "close", None)
                if callable(closer):
                    closer()
            if self.lock is not None:
                self.lock.release()
            self.target.close()

    def open_questions(self) -> list[tuple[str, str]]:
        """Playbook questions without an answer in the journal (forms live, parameters headless)."""
        from gamedaylib.forms import open_questions

        return open_questions(self.journal)

    def _notify(self, event: str, phase: str | None, text: str) -> None:
        """Post to the configured webhooks (journaled; a failed post never stops the gameday)."""
        self.notifier.send(event, phase, text)  # type: ignore[arg-type]

    def write_action_items(self) -> Path:
        """``action-items.csv`` from the journal (title, owner, due, ticket, recorded_at)."""
        from gamedaylib.forms import write_action_items_csv

        return write_action_items_csv(self.journal, self.archive_dir / ACTION_ITEMS_FILE)

    def write_incident_report(self) -> Path:
        path = self.archive_dir / REPORT_FILE
        path.write_text(
            render_incident_report(self.archive_dir, scorecard=self.scorecard.as_dict(),
                                   params=self.params, journal=self.journal.entries()),
            encoding="utf-8",
        )
        return path

    # ------------------------------------------------------------------ measurements
    def _canary_results(self) -> list[Any]:
        return list(self.canaries.results()) if self.canaries is not None else []

    def _canary_errors(self) -> int | None:
        if self.canaries is None:
            return None
        return sum(1 for r in self._canary_results() if not r.accepted)

    def _canary_report(self) -> Any:
        if self.canaries is None:
            return ProbeError("canary", "no ingest URL: no canaries were sent")
        try:
            from gamedaylib.canary import account

            return account(self._canary_results(), self._probe("events").lookup_keys)
        except ProbeError as exc:
            return exc

    def _canaries_flowing(self, since: datetime | None, margin: float | None = None) -> bool:
        """Every canary accepted after ``since`` (and older than the in-flight margin) is stored, and
        there is at least one: events flow end to end again. Canaries lost during the partition do not
        hold recovery back (they are the RPO's business)."""
        if self.canaries is None:
            return True
        if margin is None:
            margin = max(2.0, 2 * self.params["sample_interval_seconds"])
        cutoff = utcnow() - timedelta(seconds=margin)
        recent = [r for r in self._canary_results()
                  if r.accepted and (since is None or r.sent_at >= since) and r.sent_at <= cutoff]
        if not recent:
            return False
        try:
            from gamedaylib.canary import account

            return int(account(recent, self._probe("events").lookup_keys).lost) == 0
        except ProbeError:
            return False

    def _first_lag_rise(self) -> float | None:
        if self.clock.t0 is None or self.baseline is None or self.baseline.lag is None:
            return None
        for r in self.readings:
            if r.at >= self.clock.t0 and r.lag is not None and r.lag > self.baseline.lag:
                return round((r.at - self.clock.t0).total_seconds(), 1)
        return None

    def _sse_alive(self) -> tuple[bool, str]:
        url = self.endpoints.stream_url
        if not url:
            return False, "no stream URL"
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                line = resp.readline()
                while line and not line.strip():
                    line = resp.readline()
                return bool(line), f"HTTP {resp.status}, first line {line[:80]!r}"
        except OSError as exc:
            return False, f"{url}: {exc}"

    def _duplicates(self) -> tuple[int, list[tuple[str, int]]] | None:
        try:
            rows = self._probe("events").duplicates(self.clock.started_at, utcnow())
        except ProbeError:
            return None
        rows = [(str(k), int(c)) for k, c in rows]
        return sum(c - 1 for _, c in rows), rows

    def _duplicate_logs(self) -> int | None:
        try:
            lines = self.target.service_logs(REPORTING, since=self.clock.started_at)
        except GamedayError:
            return None
        return sum(1 for line in lines if "duplicate_event" in line)

    def _measure_errors(self) -> None:
        base = self.baseline
        last = self.read()
        canary_errors = self._canary_errors()
        canary_5xx = sum(1 for r in self._canary_results() if (r.status or 0) >= 500)
        gw = _delta(last.gateway_5xx, base.gateway_5xx if base else None)
        if canary_errors is None and gw is None:
            self._measure(Metric.not_measured("user_facing_errors", 0, "no canaries and no gateway metrics",
                                              comparison="==", unit="errors"))
            return
        others = max(0, int(gw or 0) - canary_5xx) if gw is not None else 0
        value = int(canary_errors or 0) + others
        evidence = (f"{canary_errors or 0} canary answers other than 2xx (incl. no answer)"
                    + (f" + {others} other 5xx answers of the gateway since start (http_requests_total)"
                       if gw is not None else "; gateway 5xx not measured"))
        self._measure(Metric.judged("user_facing_errors", value, 0, evidence, comparison="==", unit="errors"))

    def _measure_duplicates(self, report: Any) -> None:
        dups = self._duplicates()
        if dups is None:
            self._measure(Metric.not_measured("duplicate_count", 0, "events table unreadable",
                                              comparison="==", unit="rows"))
            return
        canary_dup = 0 if isinstance(report, ProbeError) else int(report.duplicated)
        self._measure(Metric.judged(
            "duplicate_count", dups[0], 0,
            f"{dups[0]} extra rows over {len(dups[1])} idempotency keys stored more than once since the run "
            f"started ({canary_dup} of them canaries)", comparison="==", unit="rows"))

    def _measure_team_response(self, res: PhaseResult) -> None:
        """First 'acknowledged' stamp (journal: buttons live, parameters headless) − the alert's fire time."""
        from gamedaylib.forms import team_response_seconds

        target = self.params["team_response_target_seconds"]
        response = team_response_seconds(self.journal.entries(), self._alert_at)
        if response.seconds is None:
            self._measure(Metric.not_measured("team_response_seconds", target, response.evidence, unit="s"))
            return
        self._measure(Metric.judged("team_response_seconds", round(response.seconds, 1), target,
                                    response.evidence, unit="s"))
        res.values["team response (s)"] = round(response.seconds, 1)

    def _stamp_time(self, value: Any) -> datetime | None:
        if isinstance(value, (int, float)):
            return None if self.clock.t0 is None else self.clock.t0 + timedelta(seconds=float(value))
        return parse_time(value)


def _delta(now: float | None, before: float | None) -> float | None:
    if now is None:
        return None
    return now - (before or 0.0)


# the label that tells apart the same alert firing for several services (the lab and Prometheus scrape
# jobs carry ``job``; Kubernetes service monitors add ``service``), most telling first
ALERT_SOURCE_LABELS = ("service", "job", "instance")


def _alert_label(event: AlertEvent) -> str:
    """``NATSUnreachable (api-gateway)``: the alert's name and where it fired."""
    where = next((event.labels[k] for k in ALERT_SOURCE_LABELS if event.labels.get(k)), "")
    return f"{event.name} ({where})" if where else event.name


def _provisional(gd: Gameday) -> str:
    from gamedaylib.scorecard import verdict

    return verdict(gd.scorecard.metrics, completed=True, required=gd.scorecard.required_metrics)


def _base_dir() -> Path:
    """Where relative paths (``lab_dir``, ``outputs/``) point: the project when gamedaylib runs from
    its checkout (a notebook kernel starts in ``notebooks/``), else the working directory."""
    root = project_root()
    return root if (root / "pyproject.toml").exists() and (root / "notebooks").is_dir() else Path.cwd()


def make_target(params: Mapping[str, Any]) -> Target:
    """The target named by ``params['target']`` (the Kubernetes one imported lazily)."""
    if params["target"] == "lab":
        from gamedaylib.targets.lab import LabTarget

        return LabTarget.from_params(params)
    from gamedaylib.targets.kubernetes import KubernetesTarget

    return KubernetesTarget.from_params(params)


__all__ = ["Gameday", "PhaseResult", "Reading", "make_target"]
