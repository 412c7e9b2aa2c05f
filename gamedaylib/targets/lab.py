"""The embedded lab behind the ``Target`` protocol.

``LabTarget`` uses a lab already running at ``lab_dir`` (and leaves it running) or starts its own
(and stops it in ``close()``). Knobs that differ from those of the running lab are refused with
``InvalidParameters`` naming the knob. An explicit ``nats_monitor_url`` parameter wins over the lab's
own monitoring URL (pre-flight and every probe then read NATS through it). ``inject`` cuts the proxy
with a deadline and reads its status back; T+0 is when the proxy reports the cut active. ``heal``
heals and confirms.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gamedaylib.clock import parse_time, utcnow
from gamedaylib.exceptions import HealFailed, InjectionFailed, InvalidParameters, LabError, ProbeError
from gamedaylib.lab import processes as proc
from gamedaylib.lab.knobs import DEFAULT_KNOBS
from gamedaylib.lab.truth import read_answers
from gamedaylib.probes import http_request
from gamedaylib.targets.base import Check, Endpoints, GroundTruth

CONFIRM_SECONDS = 10.0
MONITORING = ("prometheus", "alertmanager")  # down = the alerting metrics are not measured, no reason to stop
SETTLE_SECONDS = 5.0


def lab_knobs(params: Mapping[str, Any]) -> dict[str, Any]:
    return {name: params[name] for name in DEFAULT_KNOBS if name in params}


def check_knobs(wanted: Mapping[str, Any], running: Mapping[str, Any]) -> None:
    """Refuse knobs that differ from those the running lab was started with."""
    problems = {
        name: f"the running lab has {name}={running.get(name)!r}, this run asks for {value!r} "
        "(stop it with `gameday lab down` or use the same knobs)"
        for name, value in wanted.items()
        if name in running and _norm(running[name]) != _norm(value)
    }
    if problems:
        raise InvalidParameters(problems)


def _norm(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class LabTarget:
    name = "lab"

    def __init__(self, lab_dir: str | Path, knobs: Mapping[str, Any] | None = None, *, start: bool = True,
                 nats_monitor_url: str | None = None) -> None:
        from gamedaylib.lab.client import Lab

        self.lab_dir = Path(lab_dir).resolve()
        self.nats_monitor_url = nats_monitor_url or None  # explicit parameter: wins over the lab's own
        self.lab = Lab(self.lab_dir)
        self.knobs = dict(knobs or {})
        self.started_here = False
        if self.lab.is_up():
            self.state = self.lab.status()
            check_knobs(self.knobs, self.state.get("knobs") or {})
        elif start:
            self.state = self.lab.up(self.knobs)
            self.started_here = True
        else:
            raise LabError(f"no lab is up in {self.lab_dir}")
        self._closed = False
        self.since = utcnow()  # ground truth counts the answers of this run only

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LabTarget:
        return cls(params["lab_dir"], lab_knobs(params), nats_monitor_url=params.get("nats_monitor_url") or None)

    @property
    def endpoints(self) -> Endpoints:
        s = self.state
        metrics = {"api-gateway": s["gateway_metrics_url"], "reporting": s["reporting_metrics_url"]}
        if s.get("exporter_metrics_url"):
            metrics["nats-exporter"] = s["exporter_metrics_url"]
        return Endpoints(
            ingest_url=s["gateway_url"].rstrip("/") + "/v1/events",
            stream_url=s["gateway_url"].rstrip("/") + "/v1/metrics/stream",
            nats_monitor_url=self.nats_monitor_url or s.get("nats_monitor_url"),
            prometheus_url=s.get("prometheus_url"),
            alertmanager_url=s.get("alertmanager_url"),
            events_dsn=s.get("events_dsn"),
            service_metrics=metrics,
        )

    def preflight(self) -> list[Check]:
        checks = []
        status = self.lab.status()
        checks.append(Check("lab up", bool(status.get("up")), str(self.lab_dir)))
        for name, info in sorted((status.get("processes") or {}).items()):
            checks.append(Check(f"process {name} running", bool(info.get("alive")), f"pid {info.get('pid')}",
                                fatal=name not in MONITORING))
        for service, url in (
            ("api-gateway", status.get("gateway_url")),
            ("reporting", _base(status.get("reporting_metrics_url"))),
            ("nats", self.nats_monitor_url or status.get("nats_monitor_url")),
        ):
            if not url:
                checks.append(Check(f"{service} healthy", False, "no URL"))
                continue
            try:
                answer = http_request(url.rstrip("/") + "/healthz", probe=service, timeout=2.0)
                checks.append(Check(f"{service} healthy", answer.status == 200, f"/healthz → {answer.status}"))
            except ProbeError as exc:
                checks.append(Check(f"{service} healthy", False, exc.reason))
        active = status.get("partition_active")
        checks.append(Check("no partition active", active is False, f"partition_active={active}"))
        return checks

    def inject(self, *, duration_seconds: float) -> datetime:
        try:
            answer = self.lab.partition(True, duration_seconds)
        except (LabError, InvalidParameters) as exc:
            raise InjectionFailed(f"the lab proxy refused the cut: {exc}") from exc
        answer = self._await_partition(answer, active=True)
        if not answer.get("active"):
            raise InjectionFailed(f"the proxy did not report the partition active: {answer}")
        return utcnow()

    def _await_partition(self, answer: dict[str, Any], *, active: bool) -> dict[str, Any]:
        """Re-read the proxy's status until it reports ``active`` or ``CONFIRM_SECONDS`` pass; the last
        status read."""
        deadline = time.monotonic() + CONFIRM_SECONDS
        while bool(answer.get("active")) != active and time.monotonic() <= deadline:
            time.sleep(0.1)
            answer = self._proxy_status()
        return answer

    def _proxy_status(self) -> dict[str, Any]:
        return proc.http_json(self.state["proxy_control_url"].rstrip("/") + "/partition", timeout=2.0)

    def heal(self) -> datetime | None:
        try:
            if not self.lab.is_up():
                return None
            before = self._proxy_status()
            if not before.get("active"):
                return None
            answer = self._await_partition(self.lab.partition(False), active=False)
            if answer.get("active"):
                raise HealFailed(f"the proxy still reports the partition active: {answer}")
        except LabError as exc:
            raise HealFailed(f"could not heal the lab partition: {exc}") from exc
        return utcnow()

    def partition_active(self) -> bool:
        try:
            return bool(self._proxy_status().get("active"))
        except LabError:
            return False

    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        name = {"api-gateway": "gateway"}.get(service, service)
        path = self.lab_dir / "logs" / f"{name}.log"
        try:
            return path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise LabError(f"cannot read {path}: {exc}") from exc

    def ground_truth(self) -> GroundTruth | None:
        from gamedaylib.probes.events import EventsStore
        from gamedaylib.probes.metrics import scrape

        # answers of this run, old enough to have been stored by a healthy pipeline
        until = utcnow() - timedelta(seconds=SETTLE_SECONDS)
        answers = [a for a in read_answers(self.lab_dir) if self.since <= parse_time(a["ts"]) <= until]
        accepted = frozenset(a["idempotency_key"] for a in answers if a.get("status") == 202)
        rejected = sum(1 for a in answers if a.get("status") == 503)
        errors = sum(1 for a in answers if a.get("status") not in (202, 503))
        dropped = 0
        try:
            dropped = int(scrape(self.state["gateway_metrics_url"]).value("events_dropped_total") or 0)
        except ProbeError:
            dropped = -1
        store = EventsStore(self.state["events_dsn"])
        try:
            info = store.lookup_keys(sorted(accepted)) if accepted else {}
        finally:
            store.close()
        return GroundTruth(
            accepted_keys=accepted, rejected=rejected, errors=errors, dropped_total=dropped,
            stored_keys={k: v.count for k, v in info.items()},
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.started_here:
            self.lab.down()


def _base(url: str | None) -> str | None:
    if not url:
        return None
    return url.rsplit("/metrics", 1)[0]
