"""Monitoring outages are reported honestly: with Prometheus and Alertmanager down the run goes on and
the alerting metric is ``not_measured`` with the reason; with the events database down at
verification time the data metrics are ``not_measured``; with NATS monitoring unreachable the
gameday refuses to inject (it could not judge lag or stop conditions); with NATS monitoring going
down while the partition runs, the partition is healed at once (stop condition ``lag_unreadable``),
the verification phases still run and the lag-based metrics are ``not_measured``. A missing
measurement never yields verdict ``pass``. (Tests run in file order: the database outage breaks the
module's lab.)"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from safetytools import (
    ROOT,
    SHORT,
    LabHandle,
    TcpForwarder,
    gameday,
    params_args,
    read_journal,
    record_figure,
    scorecard,
    ts,
)

sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
from fake_apiserver import FakeApiServer, free_port, pods_for_lab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAMESPACE = "teei-gameday"


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
            "chaos_manifest": "",
        }), "-p", "nats_selector={app.kubernetes.io/name: nats}", "--output-dir", str(tmp_path / "out"),
            env={**os.environ, "PYTHONWARNINGS": "ignore", "GAMEDAY_EVENTS_DSN": s["events_dsn"]})
        assert server.chaos_objects() == []
    assert proc.returncode == 2, proc.stderr[-2000:]
    archive = Path(proc.stdout.strip().splitlines()[-1])
    entries = read_journal(archive)
    lag = next(e for e in entries if e["kind"] == "check" and e["name"] == "consumer lag baseline")
    assert lag["ok"] is False and lag["detail"]
    assert not any(e["kind"].startswith("fault.") and e["kind"] != "fault.requested" for e in entries)
    card = scorecard(archive)
    assert card["verdict"] == "aborted" and "consumer lag baseline" in card["reason"]
    assert all(m["status"] == "not_measured" and m["evidence"] for m in card["metrics"])


def test_nats_monitoring_down_during_the_partition(lab: LabHandle, tmp_path: Path, start_run: Any) -> None:
    """The run reads NATS monitoring through real TCP forwarders, one in front of each node's monitoring
    port (the consumer's leader is found among them); once the partition is active every forwarder
    stops, so no monitoring URL answers for the rest of the run."""
    lab.settle()
    urls = lab.state.get("nats_monitor_urls") or [lab.state["nats_monitor_url"]]
    with contextlib.ExitStack() as stack:
        forwarders = [stack.enter_context(TcpForwarder(url)) for url in urls]
        run = start_run(lab, output_dir=tmp_path / "out", nats_monitor_urls=[f.url for f in forwarders],
                        **{**SHORT, "lag_recovery_deadline_seconds": 10})
        active_at = lab.wait_active()
        for forwarder in forwarders:
            forwarder.stop()
        down_at = time.time()
        used = sum(f.accepted for f in forwarders)
        assert all(f.refuses() for f in forwarders), "the monitoring URLs must refuse connections from now on"
        healed_at = lab.wait_healed(timeout=60)
        rc = run.wait(timeout=240)
        assert all(f.refuses() for f in forwarders) and sum(f.accepted for f in forwarders) == used
    assert used > 0, "the run read NATS monitoring through the forwarders (the explicit nats_monitor_urls won)"
    record_figure("NATS monitoring down (lag unreadable)", healed_at - down_at)
    assert lab.partition()["active"] is False
    assert healed_at < active_at + SHORT["partition_seconds"] - 5, "healed at once, well before the planned end"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert rc == 2, run.stderr[-3000:]

    archive = run.archive()
    entries = read_journal(archive)
    kinds = [e["kind"] for e in entries]
    probe = [e for e in entries if e["kind"] == "error" and e.get("error") == "nats monitoring"]
    assert len(probe) == 1 and "consumer lag unreadable" in probe[0]["message"], probe
    assert ts(probe[0]) >= down_at - 0.5, "the baseline and the first polls read the lag"
    stop = next(e for e in entries if e["kind"] == "stop_condition")
    assert stop["condition"] == "lag_unreadable" and "NATS monitoring" in stop["detail"], stop
    assert stop["value"] == 3 and stop["limit"] == 2
    i = kinds.index("stop_condition")
    assert kinds[i + 1:i + 3] == ["note", "fault.healed"], kinds[i:i + 4]  # rollback note, then the heal
    assert entries[i + 2]["by"] == "rollback"
    assert ts(entries[i + 2], "at") - ts(stop) < 5
    phases = [e["phase"] for e in entries if e["kind"] == "phase.finished"]
    assert phases[-5:] == ["replay", "rto", "rpo", "incident_response", "postmortem"], phases
    finished = entries[-1]
    assert finished["kind"] == "run.finished" and "lag_unreadable" in finished["reason"]

    card = scorecard(archive)
    assert card["verdict"] == "aborted" and "NATS monitoring" in card["reason"], card.get("reason")
    m = _metrics(card)
    for name in ("lag_recovery_seconds", "rto_seconds"):
        assert m[name]["status"] == "not_measured" and "NATS monitoring" in m[name]["reason"], m[name]
    for name in ("rpo_seconds", "event_loss_count", "user_facing_errors"):
        assert m[name]["status"] != "not_measured", m[name]  # canaries and the events table still count
    assert card["verdict"] != "pass"


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
