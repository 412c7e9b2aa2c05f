"""Fakes for running a gameday's phases without a lab (imported as ``runfakes``): a ``Target`` whose
fault is a flag, and a ``Reader`` whose readings follow a script of the target's state. Everything
else is real: ``Run.start`` (validation, archive, journal, lock, sampler thread), the phases, the
stop conditions, the scorecard."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from gamedaylib.clock import utcnow
from gamedaylib.gamedays.nats_partition import SCENARIO
from gamedaylib.observers import RunObserver
from gamedaylib.readings import Reading
from gamedaylib.run import Run
from gamedaylib.targets.base import Check, Endpoints, FaultStatus, GroundTruth

# the shortest scenario the parameters allow, read every 50 ms
FAST: dict[str, Any] = {
    "partition_seconds": 1.0,
    "partition_safety_margin_seconds": 5.0,
    "heal_confirm_seconds": 2.0,
    "lag_recovery_deadline_seconds": 3.0,
    "sample_interval_seconds": 0.05,
    "baseline_seconds": 0.0,
    "alert_fire_target_seconds": 1.0,
}


class FakeTarget:
    """A target whose fault is a flag. ``ends_early`` makes the fault end by itself (as Chaos Mesh's
    ``duration`` would) that many seconds after it was applied."""

    name = "fake"

    def __init__(self, *, checks: Sequence[Check] = (), logs: Sequence[str] = (), truth: GroundTruth | None = None,
                 ends_early: float | None = None, endpoints: Endpoints | None = None) -> None:
        self.checks = list(checks)
        self.logs = list(logs)
        self.truth = truth
        self.ends_early = ends_early
        self._endpoints = endpoints or Endpoints()
        self.applied: list[float] = []  # the deadline of every injection
        self.heals = 0  # heals that ended a fault in force
        self.closed = False
        self._active_since: float | None = None

    @property
    def endpoints(self) -> Endpoints:
        return self._endpoints

    @property
    def active(self) -> bool:
        if self._active_since is None:
            return False
        return self.ends_early is None or time.monotonic() - self._active_since < self.ends_early

    def preflight(self) -> list[Check]:
        return list(self.checks)

    def inject(self, *, duration_seconds: float) -> datetime:
        self.applied.append(duration_seconds)
        self._active_since = time.monotonic()
        return utcnow()

    def heal(self) -> datetime | None:
        if not self.active:
            self._active_since = None
            return None
        self._active_since = None
        self.heals += 1
        return utcnow()

    def partition_active(self) -> bool:
        return self.active

    def fault_status(self) -> FaultStatus:
        if self._active_since is not None and not self.active:
            return FaultStatus(False, ended_early="duration expired", ended_at=utcnow(), detail="fake")
        return FaultStatus(self.active)

    def manifest(self) -> dict[str, Any]:
        return {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos", "spec": {"action": "partition"}}

    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        return list(self.logs)

    def ground_truth(self) -> GroundTruth | None:
        return self.truth

    def close(self) -> None:
        self.closed = True


Script = Callable[[FakeTarget, int], dict[str, Any]]


class ScriptedReader:
    """A ``Reader``: the n-th reading (from 1) holds ``script(target, n)`` and the fault's state."""

    reading_type = Reading

    def __init__(self, target: FakeTarget, script: Script) -> None:
        self.target = target
        self.script = script
        self.count = 0

    def read(self) -> Reading:
        self.count += 1
        values = {"fault_active": self.target.active, **self.script(self.target, self.count)}
        return Reading(at=utcnow(), **values)

    def close(self) -> None:
        pass


def healthy(target: FakeTarget, n: int) -> dict[str, Any]:
    """A healthy pipeline that buffers while cut off, without losing anything."""
    cut = target.active
    return {
        "lag_pending": 0.0 if cut else 2.0, "lag_ack_pending": 1.0,
        "buffer_size": 8.0 if cut else 0.0, "buffer_capacity": 40.0, "buffer_fraction_max": 0.25 if cut else 0.0,
        "dropped_total": 0.0, "requests_total": 100.0 + n, "requests_5xx": 0.0, "retries_total": 3.0 * n if cut else 0.0,
        "gateway_connected": 0.0 if cut else 1.0, "reporting_connected": 0.0 if cut else 1.0, "breaker": 0.0,
        "gateway_instances": 2.0, "reporting_instances": 2.0, "stored_total": 50.0, "published_total": 50.0,
    }


def start_run(tmp_path: Path, script: Script = healthy, *, target: FakeTarget | None = None,
              observers: Sequence[RunObserver] = (), **params: Any) -> tuple[Run, FakeTarget]:
    """``Run.start`` of GAMEDAY-001 on a fake target read by a scripted reader (the sampler runs)."""
    target = target or FakeTarget()
    scenario = dataclasses.replace(SCENARIO, make_reader=lambda run: ScriptedReader(target, script))
    raw = {"archive_dir": str(tmp_path / "archive"), "lab_dir": str(tmp_path / "lab"), "run_id": "unit-1", **FAST,
           **params}
    return Run.start(scenario, raw, target=target, observers=observers), target


def kinds(run: Run) -> list[str]:
    return [e["kind"] for e in run.journal.entries()]
