"""Monitoring outages are reported honestly: with Prometheus and Alertmanager down the run goes on and
the alerting metric is ``not_measured`` with the reason; with the events database down at
verification time the data metrics are ``not_measured``; with NATS monitoring unreachable the
gameday refuses to inject (it could not judge lag or stop conditions). A missing measurement never
yields verdict ``pass``. (Tests run in file order: the database outage breaks the module's lab.)"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from safetytools import ROOT, SHORT, LabHandle, gameday, params_args, read_journal, scorecard

sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
from fake_apiserver import FakeApiServer, free_port, pods_for_lab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAMESPACE = "teei-gameday"
REQUIRED = "required_metrics=[rto_seconds, rpo_seconds, event_loss_count, user_facing_errors, alert_fire_seconds]"


def _metrics(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in card["metrics"]}


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.1)


def test_nats_monitoring_unreachable_refuses_to_inject(lab: LabHandle, tmp_path: Path) -> None:
    s = lab.state
    server = FakeApiServer(pods=pods_for_lab(lab.lab_dir, NAMESPACE), proxy_control_url=s["proxy_control_url"],
                           inject_delay=0.3, recover_delay=0.3)
    closed = f"http://127.0.0.1:{free_port()}"
    with server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
        proc = gameday("run", "--target", "kubernetes", *params_args({
            **SHORT, "namespace": NAMESPACE, "kubeconfig": str(kubeconfig), "kube_context": "fake-cluster",
            "nats_monitor_url": closed, "prometheus_url": closed, "ingest_url": s["gateway_url"] + "/v1/events",
            "chaos_manifest": str(ROOT / "chaos" / "experiments" / "nats-partition.yaml"),
        }), "-p", "nats_selector={app.kubernetes.io/name: nats}", "--output-dir", str(tmp_path / "out"),
            env={**os.environ, "PYTHONWARNINGS": "ignore", "GAMEDAY_EVENTS_DSN": s["events_dsn"]})
        assert server.chaos_objects() == []
    assert proc.returncode == 2, proc.stderr[-2000:]
    archive = Path(proc.stdout.strip().splitlines()[-1])
    entries = read_journal(archive)
    lag = next(e for e in entries if e["kind"] == "check" and e["name"] == "consumer lag baseline")
    assert lag["ok"] is False and lag["detail"]
    assert not any(e["kind"].startswith("partition.") and e["kind"] != "partition.requested" for e in entries)
    card = scorecard(archive)
    assert card["verdict"] == "aborted" and "consumer lag baseline" in card["reason"]
    assert all(m["status"] == "not_measured" and m["evidence"] for m in card["metrics"])


def test_prometheus_and_alertmanager_down_alerting_not_measured(lab: LabHandle, tmp_path: Path) -> None:
    lab.settle()
    for name in ("prometheus", "alertmanager"):
        if lab.state.get(f"{name}_url"):
            _kill(lab.state["pids"][name])
    proc = gameday("run", "-p", f"lab_dir={lab.lab_dir}", *params_args(SHORT), "-p", REQUIRED,
                   "--output-dir", str(tmp_path / "out"))
    archive = Path(proc.stdout.strip().splitlines()[-1])
    entries = read_journal(archive)
    assert any(e["kind"] == "run.finished" and e["reason"] == "ran to the end" for e in entries), proc.stderr[-3000:]
    assert lab.partition()["active"] is False
    card = scorecard(archive)
    alert = _metrics(card)["alert_fire_seconds"]
    assert alert["status"] == "not_measured" and alert["evidence"], alert
    assert _metrics(card)["rto_seconds"]["status"] != "not_measured", "the rest was measured"
    assert card["verdict"] == "fail", "a required metric not measured never passes"
    assert proc.returncode == 1


def test_events_database_down_at_verification(lab: LabHandle, tmp_path: Path, start_run: Any) -> None:
    lab.settle()
    run = start_run(lab, output_dir=tmp_path / "out", **{**SHORT, "lag_recovery_deadline_seconds": 10})
    healed = lab.wait_active() and lab.wait_healed(timeout=60)
    assert healed
    _kill(lab.state["pids"]["postgres"], signal.SIGQUIT)  # immediate shutdown
    rc = run.wait(timeout=240)
    archive = run.archive()
    entries = read_journal(archive)
    card = scorecard(archive)
    assert lab.partition()["active"] is False
    phases = [e["phase"] for e in entries if e["kind"] == "phase.finished"]
    assert "rpo" in phases, "the verification phases ran"
    m = _metrics(card)
    for name in ("event_loss_count", "duplicate_count"):
        assert m[name]["status"] == "not_measured" and m[name]["evidence"], m[name]
    assert card["verdict"] != "pass"
    assert rc in (1, 2)
