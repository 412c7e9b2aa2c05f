"""The embedded lab behind the ``Target`` protocol, and its partition fault.

``LabTarget`` uses a lab already running at ``lab_dir`` (and leaves it running) or starts its own
(and stops it in ``close()``). Knobs that differ from those of the running lab are refused with
``InvalidParameters`` naming the knob. An explicit ``nats_monitor_url(s)`` parameter wins over the
lab's own monitoring URLs (pre-flight and every reading then read NATS through it).

``LabPartition`` cuts the services off every NATS node through the lab's partition proxy, with a
deadline after which the proxy heals by itself; T+0 is when the proxy reports the cut in force.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gamedaylib.clock import parse_time, utcnow
from gamedaylib.exceptions import HealFailed, InjectionFailed, InvalidParameters, LabError, ProbeError
from gamedaylib.lab import processes as proc
from gamedaylib.lab.client import Lab
from gamedaylib.lab.knobs import check_knobs
from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.lab.pgcluster import PgClusterPlan
from gamedaylib.lab.pgrunner import Spawner
from gamedaylib.lab.truth import read_answers
from gamedaylib.probes import http_request
from gamedaylib.probes.events import EventsStore
from gamedaylib.probes.metrics import scrape
from gamedaylib.targets.base import Check, Endpoints, FaultStatus, GroundTruth

__all__ = ["LabPartition", "LabTarget"]

CONFIRM_SECONDS = 10.0
MONITORING = ("prometheus", "alertmanager")  # down = the alerting metrics are not measured, no reason to stop
SETTLE_SECONDS = 5.0


def _urls(state: Mapping[str, Any], plural: str, singular: str) -> tuple[str, ...]:
    many = state.get(plural)
    if isinstance(many, list) and many:
        return tuple(str(u) for u in many)
    one = state.get(singular)
    return (str(one),) if one else ()


class LabTarget:
    name = "lab"

    def __init__(self, lab_dir: str | Path, knobs: Mapping[str, Any] | None = None, *, start: bool = True,
                 nats_monitor_urls: Sequence[str] = ()) -> None:
        self.lab_dir = Path(lab_dir).resolve()
        self.nats_monitor_urls = tuple(nats_monitor_urls)  # explicit parameter: wins over the lab's own
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

    @property
    def endpoints(self) -> Endpoints:
        s = self.state
        monitors = self.nats_monitor_urls or _urls(s, "nats_monitor_urls", "nats_monitor_url")
        metrics = {"api-gateway": _urls(s, "gateway_metrics_urls", "gateway_metrics_url"),
                   "reporting": _urls(s, "reporting_metrics_urls", "reporting_metrics_url")}
        return Endpoints(
            ingest_url=s["gateway_url"].rstrip("/") + "/v1/events",
            stream_url=s["gateway_url"].rstrip("/") + "/v1/metrics/stream",
            nats_monitor_url=monitors[0] if monitors else None,
            nats_monitor_urls=monitors,
            prometheus_url=s.get("prometheus_url"),
            alertmanager_url=s.get("alertmanager_url"),
            events_dsn=s.get("events_dsn"),
            service_metrics={k: v for k, v in metrics.items() if v},
        )

    def preflight(self) -> list[Check]:
        checks = []
        status = self.lab.status()
        checks.append(Check("lab up", bool(status.get("up")), str(self.lab_dir)))
        for name, info in sorted((status.get("processes") or {}).items()):
            checks.append(Check(f"process {name} running", bool(info.get("alive")), f"pid {info.get('pid')}",
                                fatal=not name.startswith(MONITORING)))
        health = [("api-gateway", status.get("gateway_url"))]
        health += [(f"reporting {i}", _base(u)) for i, u in enumerate(_urls(status, "reporting_metrics_urls",
                                                                             "reporting_metrics_url"), 1)]
        health += [(f"nats {i}", u) for i, u in enumerate(self.endpoints.nats_monitor_urls, 1)]
        for service, url in health:
            if not url:
                checks.append(Check(f"{service} healthy", False, "no URL"))
                continue
            try:
                answer = http_request(url.rstrip("/") + "/healthz", probe=service, timeout=2.0)
                checks.append(Check(f"{service} healthy", answer.status == 200, f"/healthz → {answer.status}"))
            except ProbeError as exc:
                checks.append(Check(f"{service} healthy", False, exc.reason))
        return checks

    def pg_client(self, *, launcher: bool = False) -> PgClusterClient:
        """The lab's PostgreSQL failover pair (GAMEDAY-002's shape); ``launcher`` to restart a killed
        node (what it starts, ``lab down`` stops with the rest of the cluster)."""
        plan = self.state.get("pg_plan")
        if not plan:
            raise LabError(f"the lab in {self.lab_dir} has no PostgreSQL cluster (it was started for GAMEDAY-001's "
                           "shape: `gameday lab down`, then `gameday lab up --gameday GAMEDAY-002`)")
        return PgClusterClient(PgClusterPlan.from_json(plan), launcher=Spawner() if launcher else None)

    def proxy_status(self) -> dict[str, Any]:
        return proc.http_json(self.state["proxy_control_url"].rstrip("/") + "/partition", timeout=2.0)

    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        """Every replica's log lines of ``service`` (``api-gateway``, ``reporting``)."""
        name = {"api-gateway": "gateway"}.get(service, service)
        paths = sorted((self.lab_dir / "logs").glob(f"{name}*.log"))
        if not paths:
            raise LabError(f"no log of {service} in {self.lab_dir / 'logs'}")
        lines: list[str] = []
        for path in paths:
            try:
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as exc:
                raise LabError(f"cannot read {path}: {exc}") from exc
        return lines

    def ground_truth(self) -> GroundTruth | None:
        # answers of this run, old enough to have been stored by a healthy pipeline
        until = utcnow() - timedelta(seconds=SETTLE_SECONDS)
        answers = [a for a in read_answers(self.lab_dir) if self.since <= parse_time(a["ts"]) <= until]
        accepted = frozenset(a["idempotency_key"] for a in answers if a.get("status") == 202)
        rejected = sum(1 for a in answers if a.get("status") == 503)
        errors = sum(1 for a in answers if a.get("status") not in (202, 503))
        dropped = 0
        for url in self.endpoints.service_metrics.get("api-gateway", ()):
            try:
                dropped += int(scrape(url).value("events_dropped_total") or 0)
            except ProbeError:
                continue  # a dead replica: its drops are in the truth's loss, not in this counter
        store = EventsStore(self.state["events_dsn"])
        try:
            info = store.lookup_keys(sorted(accepted)) if accepted else {}
        finally:
            store.close()
        return GroundTruth(accepted_keys=accepted, rejected=rejected, errors=errors, dropped_total=dropped,
                           stored_keys={k: v.count for k, v in info.items()})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.started_here:
            self.lab.down()


class LabPartition:
    """The services cut off every NATS node by the lab's partition proxy (blackhole or reset)."""

    description = "the services (api-gateway, reporting) cut off from every NATS server"

    def __init__(self, target: LabTarget) -> None:
        self.target = target
        self._heals_at: datetime | None = None
        self._injected = False

    def preflight(self) -> list[Check]:
        try:
            status = self.target.proxy_status()
        except LabError as exc:
            return [Check("partition proxy answers", False, str(exc))]
        active = bool(status.get("active"))
        return [Check("no partition in force", not active, f"partition proxy: active={active}")]

    def manifest(self) -> str:
        mode = (self.target.state.get("knobs") or {}).get("lab_partition_mode", "blackhole")
        return f"POST {self.target.state['proxy_control_url']}/partition {{\"active\": true, \"mode\": \"{mode}\"}}"

    def inject(self, *, deadline_seconds: float) -> datetime:
        try:
            answer = self.target.lab.partition(True, deadline_seconds)
        except (LabError, InvalidParameters) as exc:
            raise InjectionFailed(f"the lab proxy refused the cut: {exc}") from exc
        answer = self._await(answer, active=True)
        if not answer.get("active"):
            raise InjectionFailed(f"the proxy did not report the partition active: {answer}")
        self._injected = True
        self._heals_at = _time(answer.get("deadline"))
        return utcnow()

    def _await(self, answer: dict[str, Any], *, active: bool) -> dict[str, Any]:
        """Re-read the proxy's status until it reports ``active`` or ``CONFIRM_SECONDS`` pass."""
        deadline = time.monotonic() + CONFIRM_SECONDS
        while bool(answer.get("active")) != active and time.monotonic() <= deadline:
            time.sleep(0.1)
            answer = self.target.proxy_status()
        return answer

    def heal(self) -> datetime | None:
        try:
            if not self.target.lab.is_up():
                return None
            if not self.target.proxy_status().get("active"):
                return None
            answer = self._await(self.target.lab.partition(False), active=False)
            if answer.get("active"):
                raise HealFailed(f"the proxy still reports the partition active: {answer}")
        except LabError as exc:
            raise HealFailed(f"could not heal the lab partition: {exc}") from exc
        return utcnow()

    def status(self) -> FaultStatus:
        try:
            status = self.target.proxy_status()
        except LabError as exc:
            return FaultStatus(False, None, None, f"partition proxy unreadable: {exc}")
        if status.get("active"):
            return FaultStatus(True, detail=f"since {status.get('since')}, heals by itself at {status.get('deadline')}")
        if self._injected and self._heals_at is not None and utcnow() >= self._heals_at:
            return FaultStatus(False, "the lab proxy's deadline passed", self._heals_at, str(status))
        return FaultStatus(False, "healed outside the runbook" if self._injected else None, None, str(status))


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(value) if value else None
    except (TypeError, ValueError):
        return None


def _base(url: str | None) -> str | None:
    if not url:
        return None
    return url.rsplit("/metrics", 1)[0]
