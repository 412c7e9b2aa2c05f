"""The ``Gameday`` facade and its run against a fake target (no lab): journaling, T+0, rollback safe
twice, pre-flight refusing before any fault, invalid parameters writing nothing, and probes that cannot
measure turning into ``not_measured`` with a reason."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from gamedaylib import Gameday
from gamedaylib.exceptions import InvalidParameters, PreflightFailed
from gamedaylib.journal import Journal
from gamedaylib.targets.base import Check, Endpoints, FaultStatus, GroundTruth

pytestmark = pytest.mark.timeout(60)


class FakeTarget:
    """A cluster-like target whose fault is a flag; no endpoints, so every probe has nothing to read."""

    name = "kubernetes"

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.active = False
        self.injected_with: float | None = None
        self.heals = 0
        self.closed = 0

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints()

    def preflight(self) -> list[Check]:
        return [Check("services healthy", self.healthy, "fake")]

    def manifest(self) -> dict[str, str]:
        return {"kind": "NetworkChaos"}

    def inject(self, *, duration_seconds: float) -> datetime:
        self.injected_with = duration_seconds
        self.active = True
        return datetime.now(timezone.utc)

    def heal(self) -> datetime | None:
        self.heals += 1
        if not self.active:
            return None
        self.active = False
        return datetime.now(timezone.utc)

    def fault_status(self) -> FaultStatus:
        return FaultStatus(self.active)

    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        return []

    def ground_truth(self) -> GroundTruth | None:
        return None

    def close(self) -> None:
        self.closed += 1


def _params(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {"archive_dir": str(tmp_path / "run"), "lab_dir": str(tmp_path / "lab"), "dry_run": False,
            "partition_seconds": 1, "partition_safety_margin_seconds": 2, "sample_interval_seconds": 0.2,
            "lag_recovery_deadline_seconds": 1, "heal_confirm_seconds": 1, "alert_fire_target_seconds": 1,
            "baseline_seconds": 0.4, **extra}


def _kinds(tmp_path: Path) -> list[str]:
    return [e["kind"] for e in Journal.read(tmp_path / "run" / "journal.jsonl")]


def test_invalid_parameters_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameters) as info:
        Gameday.start(_params(tmp_path, partition_seconds=-1), target=FakeTarget())
    assert "partition_seconds" in info.value.problems
    assert not (tmp_path / "run").exists()


def test_unhealthy_preflight_refuses_before_any_fault(tmp_path: Path) -> None:
    target = FakeTarget(healthy=False)
    gd = Gameday.start(_params(tmp_path), target=target)
    with pytest.raises(PreflightFailed) as info:
        gd.phase("preflight")
    assert "services healthy" in info.value.failed_checks
    assert target.injected_with is None
    assert "fault.requested" not in _kinds(tmp_path)
    assert (tmp_path / "run" / "params.yaml").exists()
    gd.close()


def test_a_whole_run_without_probes_is_not_a_pass(tmp_path: Path) -> None:
    target = FakeTarget()
    gd = Gameday.start(_params(tmp_path, stamps={"acknowledged": 5}), target=target)
    with pytest.raises(PreflightFailed) as info:
        gd.phase("preflight")  # no lag, no service readings: blind stop conditions are fatal
    assert "consumer lag baseline" in info.value.failed_checks
    assert any(c.startswith("stop condition input readable") for c in info.value.failed_checks)
    gd.phase("injection")
    assert target.active and target.injected_with == 3
    assert gd.clock.t0 is not None and gd.clock.t0 <= datetime.now(timezone.utc)
    gd.phase("buffering")
    gd.phase("heal")
    assert not target.active
    for phase in ("replay", "rto", "rpo", "incident_response", "postmortem"):
        gd.phase(phase)
    gd.success_metrics()
    card = gd.finish()
    by_name = {m["name"]: m for m in card["metrics"]}
    assert by_name["rpo_seconds"]["status"] == "not_measured"
    assert "no canaries" in by_name["rpo_seconds"]["evidence"]
    assert by_name["alert_fire_seconds"]["status"] == "not_measured"
    assert by_name["rto_seconds"]["status"] == "fail"  # never confirmed recovered: not a pass
    assert card["verdict"] == "fail"  # required metrics not measured
    kinds = _kinds(tmp_path)
    assert kinds.count("phase.started") == kinds.count("phase.finished") == 9
    assert kinds.index("fault.requested") < kinds.index("fault.active") < kinds.index("fault.healed")
    assert kinds[-1] == "run.finished"
    assert target.closed == 1
    assert (tmp_path / "run" / "scorecard.json").exists() and (tmp_path / "run" / "incident-report.md").exists()


def test_rollback_is_safe_twice_and_a_failing_phase_rolls_back(tmp_path: Path) -> None:
    target = FakeTarget()
    gd = Gameday.start(_params(tmp_path), target=target)
    gd.phase("injection")
    first = gd.rollback(reason="test")
    second = gd.rollback(reason="again")
    assert first is not None and second is None and not target.active
    gd.phase("injection")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("probe exploded")

    gd.run.wait = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        gd.phase("buffering")
    assert not target.active  # the failed phase healed
    entries = list(Journal.read(tmp_path / "run" / "journal.jsonl"))
    failed = [e for e in entries if e["kind"] == "phase.finished" and e["status"] == "failed"]
    assert failed and failed[-1]["phase"] == "buffering"
    gd.close()
    gd.close()
    assert target.closed == 1
    assert gd.rollback() is None  # after the end: nothing to do, nothing raised


def test_an_unknown_phase_is_refused(tmp_path: Path) -> None:
    gd = Gameday.start(_params(tmp_path), target=FakeTarget())
    with pytest.raises(InvalidParameters, match="failover"):
        gd.phase("failover")
    gd.close()
