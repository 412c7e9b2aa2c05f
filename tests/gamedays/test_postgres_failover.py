"""GAMEDAY-002 without a lab: its playbook as data, its alert rules (promtool on the shipped file and on
the PrometheusRule generated from it), and what the pre-flight and the alert fire time make of a
Prometheus that has not loaded the gameday's rules (a real Prometheus, on a fake target)."""

from __future__ import annotations

import dataclasses
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from runfakes import FakeTarget, healthy, start_run

from gamedaylib import pipeline
from gamedaylib.clock import utcnow
from gamedaylib.gamedays import monitoring_dirs
from gamedaylib.gamedays.nats_partition import SCENARIO as PARTITION
from gamedaylib.gamedays.postgres_failover import SCENARIO
from gamedaylib.gamedays.postgres_failover import phases as failover_phases
from gamedaylib.gamedays.postgres_failover.playbook import PLAYBOOK
from gamedaylib.lab.processes import find_binary, free_ports
from gamedaylib.lab.supervisor import write_lab_rules
from gamedaylib.phase import PhaseResult
from gamedaylib.targets.base import Endpoints
from gamedaylib.targets.prometheusrule import metric_names, render, rule_file_of

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheusrule-gameday-002.yaml"
PROMETHEUS = find_binary("prometheus")
PROMTOOL = find_binary("promtool")
CNPG_SERIES = ("cnpg_pg_replication_in_recovery", "cnpg_pg_replication_streaming_replicas",
               "cnpg_pg_replication_is_wal_receiver_up", "cnpg_pg_replication_lag")


def rules(path: Path) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


# -- the playbook as data -------------------------------------------------------------------------------


def test_the_playbook_as_data_matches_the_written_playbook() -> None:
    written = " ".join(SCENARIO.playbook_md.read_text(encoding="utf-8").split()).casefold()
    assert tuple(SCENARIO.phases) == PLAYBOOK.phase_ids
    for phase_id, question in PLAYBOOK.questions():
        assert question.casefold() in written, (phase_id, question)
    for phase in PLAYBOOK.phases:
        assert phase.title.casefold() in written
    assert PLAYBOOK.metric_names[:8] == ("failover_seconds", "rto_seconds", "rpo_seconds", "event_loss_count",
                                         "user_facing_errors", "split_brain_samples", "alert_fire_seconds",
                                         "team_response_seconds")


# -- alert rules ------------------------------------------------------------------------------------------


def test_every_first_alert_is_a_rule_the_lab_loads_and_reads_cloudnativepg_series() -> None:
    shipped = {name: rule for d in monitoring_dirs() for p in d.glob("*.rules.yml") for name, rule in
               rules(p).items()}
    assert set(SCENARIO.alerts) <= set(shipped), set(SCENARIO.alerts) - set(shipped)
    own = rules(rule_file_of("GAMEDAY-002"))
    assert {"PostgreSQLPrimaryDown", "PostgreSQLReplicationBroken", "ReportingNotStoring"} <= set(own)
    read = {m for rule in own.values() for m in metric_names(rule["expr"])}
    assert set(CNPG_SERIES) <= read
    assert "EventBufferGrowing" in rules(rule_file_of("GAMEDAY-001"))  # the pipeline's, shared


def test_the_lab_loads_them_with_a_for_short_enough_for_a_20_second_failover(tmp_path: Path) -> None:
    written = {p.name: rules(p) for p in write_lab_rules(tmp_path)}
    lab = written["gameday-002.rules.yml"]
    cluster = rules(rule_file_of("GAMEDAY-002"))
    assert set(lab) == set(cluster)
    for name, rule in lab.items():
        assert rule["labels"] == cluster[name]["labels"] and rule["annotations"] == cluster[name]["annotations"]
        assert int(rule["for"].rstrip("s")) <= 5, (name, rule["for"])
        assert int(cluster[name]["for"].rstrip("ms").rstrip()) > 0


def test_the_prometheusrule_is_generated_from_the_rule_file_and_valid() -> None:
    expected = render(rule_file_of("GAMEDAY-002"), namespace="teei-prod")
    shipped = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    assert shipped == yaml.safe_load(expected), (
        "regenerate: python -m gamedaylib.targets.prometheusrule --gameday GAMEDAY-002 --namespace teei-prod > "
        + str(DEPLOY))
    assert shipped["metadata"]["name"] == "gameday-002-postgres-failover"
    for rule in shipped["spec"]["groups"][0]["rules"]:
        for metric in metric_names(rule["expr"]):
            assert rule["expr"].count(metric) == rule["expr"].count(f'{metric}{{namespace="teei-prod"'), metric


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules_and_their_unit_tests(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    monitoring = rule_file_of("GAMEDAY-002").parent
    spec = tmp_path / "spec.rules.yml"
    spec.write_text(yaml.safe_dump(yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))["spec"]), encoding="utf-8")
    checked = subprocess.run([PROMTOOL, "check", "rules", str(rule_file_of("GAMEDAY-002")), str(spec)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", "tests/gameday-002.test.yml"], cwd=monitoring,
                            capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr


# -- a Prometheus without the gameday's rules --------------------------------------------------------------


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus that has loaded GAMEDAY-001's rules only."""
    if PROMETHEUS is None:
        pytest.skip("Prometheus is not installed")
    (port,) = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"evaluation_interval": "1s"},
                                      "rule_files": [str(rule_file_of("GAMEDAY-001"))]}), encoding="utf-8")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_prometheus_without_the_gamedays_rules_is_named_and_the_alert_fire_time_not_measured(
    tmp_path: Path, prometheus: str
) -> None:
    target = FakeTarget(endpoints=Endpoints(prometheus_url=prometheus))
    run, _ = start_run(tmp_path / "001", target=target)
    try:
        res = PhaseResult("preflight")
        pipeline.check_alert_rules(run, res)
        assert [(c.ok, c.fatal) for c in res.checks] == [(True, False)]
        assert res.checks[0].detail.startswith(f"all {len(PARTITION.alerts)} loaded")
    finally:
        run.close()
    # the same run with GAMEDAY-002's first alerts: none loaded here
    target = FakeTarget(endpoints=Endpoints(prometheus_url=prometheus))
    run, _ = start_run(tmp_path / "002", target=target)
    run.scenario = dataclasses.replace(run.scenario, alerts=SCENARIO.alerts)
    try:
        res = PhaseResult("preflight")
        pipeline.check_alert_rules(run, res)
        (check,) = res.checks
        assert not check.ok and not check.fatal
        for name in ("PostgreSQLPrimaryDown", "ReportingNotStoring"):
            assert name in check.detail
        assert "EventBufferGrowing" not in check.detail.split("missing")[1].split(";")[0]  # GAMEDAY-001's: loaded
        run.inject(PhaseResult("injection"), deadline_seconds=30)
        run.phase("incident_response")
        alert = run.scorecard.metric("alert_fire_seconds")
        assert alert is not None and alert.status == "fail"  # EventBufferGrowing is loaded: it could have fired
        run.scenario = dataclasses.replace(run.scenario, alerts=("PostgreSQLPrimaryDown", "ReportingNotStoring"))
        run.phase("incident_response")
        alert = run.scorecard.metric("alert_fire_seconds")
        assert alert is not None and alert.status == "not_measured"
        assert "none of the gameday's alert rules (PostgreSQLPrimaryDown, ReportingNotStoring) is loaded" in (
            alert.evidence)
    finally:
        run.close()


# -- the rollback's step 3: restart reporting if it did not reconnect ------------------------------------------


def _stored(rises_after: int | None) -> Any:
    """A healthy pipeline whose events_stored_total rises from reading ``rises_after`` on (never: None)."""
    def script(target: FakeTarget, n: int) -> dict[str, Any]:
        rise = n - rises_after if rises_after and n > rises_after else 0
        return {**healthy(target, n), "stored_total": 50.0 + rise}
    return script


@pytest.mark.parametrize("can_restart", [True, False])
def test_reporting_that_stores_nothing_after_a_manual_promotion_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, can_restart: bool
) -> None:
    """Nothing stored within the reconnect window after the promotion: the fault's ``restart_consumer``
    (on Kubernetes a rollout restart of deployment/reporting) is called and journalled; a target that
    cannot restart says to do it by hand. Reporting that stores again is left alone."""
    monkeypatch.setattr(failover_phases, "REPORTING_RECONNECT_SECONDS", 0.5)
    for rises_after, restart_expected in ((None, True), (1, False)):
        run, _ = start_run(tmp_path / f"{rises_after}-{can_restart}", _stored(rises_after))
        restarts: list[str] = []
        if can_restart:
            run.fault.restart_consumer = lambda: restarts.append("x") or "deployment/reporting restarted"  # type: ignore[attr-defined]
        run.state = failover_phases.FailoverState()
        try:
            time.sleep(0.2)
            res = PhaseResult("rollback")
            failover_phases._restart_reporting_unless_reconnected(run, res, utcnow())
        finally:
            run.close()
        (check,) = res.checks
        if not restart_expected:
            assert check.ok and check.name == "reporting reconnected by itself (no restart)" and restarts == []
        elif can_restart:
            assert check.ok and check.name == "reporting restarted (it did not reconnect)", check
            assert restarts == ["x"] and check.detail == "deployment/reporting restarted"
        else:
            assert not check.ok and not check.fatal
            assert "restart reporting by hand" in check.detail
            assert "rollout restart deployment/reporting" in check.detail
