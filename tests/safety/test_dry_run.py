"""Dry run and the production guard. ``dry_run=True`` walks every phase, shows every command and the
fault it would apply, and changes nothing: the lab proxy is never cut, a shell step is not run, no
NetworkChaos is created on a (fake) cluster. A production namespace is refused before anything
happens unless ``confirm_production=True``."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtools import cluster_endpoints
from safetytools import ROOT, SHORT, LabHandle, gameday, params_args, read_journal, scorecard

from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK

PHASE_IDS = PLAYBOOK.phase_ids

sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
from fake_apiserver import FakeApiServer, pods_for_lab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAMESPACE = "teei-gameday"


def _watch_partition(lab: LabHandle, stop: threading.Event, seen: list[bool]) -> None:
    while not stop.is_set():
        seen.append(bool(lab.partition()["active"]))
        stop.wait(0.1)


def test_dry_run_on_the_lab_changes_nothing(lab: LabHandle, tmp_path: Path) -> None:
    lab.settle()
    before = lab.partition()["cuts"]
    marker = tmp_path / "marker"
    seen: list[bool] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_partition, args=(lab, stop, seen), daemon=True)
    watcher.start()
    try:
        proc = gameday("run", "-p", f"lab_dir={lab.lab_dir}", "-p", "dry_run=true", *params_args(SHORT),
                       "-p", json.dumps({"commands": {"injection": [f"touch {marker}"],
                                                      "heal": [f"rm -rf {tmp_path}/nothing"]}})[1:-1]
                       .replace('"commands": ', "commands="),
                       "--output-dir", str(tmp_path / "out"))
    finally:
        stop.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr  # a dry run that walked every phase is not a failed gameday
    assert "dry run" in proc.stderr
    assert seen and not any(seen), "the proxy was never cut"
    assert lab.partition()["cuts"] == before
    assert not marker.exists(), "the shell step was shown, not run"
    archive = Path(proc.stdout.strip().splitlines()[-1])
    entries = read_journal(archive)
    finished = [e["phase"] for e in entries if e["kind"] == "phase.finished"]
    assert finished == list(PHASE_IDS), "every phase was walked"
    requested = next(e for e in entries if e["kind"] == "fault.requested")
    assert requested["dry_run"] is True
    assert not any(e["kind"] in ("fault.active", "fault.healed") for e in entries)
    commands = [e for e in entries if e["kind"] == "command"]
    assert commands and all(e["dry_run"] for e in commands)
    notebook = (archive / "runbook.ipynb").read_text(encoding="utf-8")
    assert f"touch {marker}" in notebook, "the command is shown"
    assert scorecard(archive)["verdict"] != "pass", "a dry run measures nothing, so it cannot pass"


@pytest.fixture
def cluster(lab: LabHandle, tmp_path: Path) -> Iterator[tuple[FakeApiServer, Path]]:
    server = FakeApiServer(pods=pods_for_lab(lab.lab_dir, NAMESPACE), proxy_control_url=lab.state["proxy_control_url"],
                           inject_delay=0.3, recover_delay=0.3)
    with server:
        yield server, server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)


def _env(lab: LabHandle) -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "GAMEDAY_EVENTS_DSN": lab.state["events_dsn"]}


def _k8s_args(lab: LabHandle, kubeconfig: Path, namespace: str) -> list[str]:
    s = lab.state
    return ["--target", "kubernetes", *params_args({
        "namespace": namespace, "kubeconfig": str(kubeconfig), "kube_context": "fake-cluster",
        **cluster_endpoints(s),
        "stream_url": s["gateway_url"] + "/v1/metrics/stream",
        "chaos_manifest": "", **SHORT,
    }), "-p", "nats_selector={app.kubernetes.io/name: nats}"]


def test_dry_run_on_kubernetes_creates_no_networkchaos(lab: LabHandle, cluster: Any, tmp_path: Path) -> None:
    server, kubeconfig = cluster
    before = lab.partition()["cuts"]
    proc = gameday("run", *_k8s_args(lab, kubeconfig, NAMESPACE), "-p", "dry_run=true",
                   "--output-dir", str(tmp_path / "out"), env=_env(lab))
    assert proc.returncode == 0, proc.stderr
    assert server.chaos_objects() == [], "no NetworkChaos was created"
    assert lab.partition()["cuts"] == before
    archive = Path(proc.stdout.strip().splitlines()[-1])
    entries = read_journal(archive)
    assert [e["phase"] for e in entries if e["kind"] == "phase.finished"] == list(PHASE_IDS)
    assert "NetworkChaos" in (archive / "runbook.ipynb").read_text(encoding="utf-8"), "the object is shown"


@pytest.mark.parametrize("namespace", ["teei-prod", "prod-eu"])
def test_production_namespace_is_refused_before_anything(lab: LabHandle, cluster: Any, tmp_path: Path,
                                                          namespace: str) -> None:
    server, kubeconfig = cluster
    proc = gameday("run", *_k8s_args(lab, kubeconfig, namespace), "--output-dir", str(tmp_path / "out"),
                   env=_env(lab))
    assert proc.returncode == 2
    assert "confirm_production" in proc.stderr and namespace in proc.stderr
    assert server.mutating_requests() == [] and server.chaos_objects() == []
    assert proc.stdout.strip() == "" and not (tmp_path / "out").exists(), "a refused run writes nothing"


def test_confirmed_production_dry_run_passes_the_guard(lab: LabHandle, cluster: Any, tmp_path: Path) -> None:
    server, kubeconfig = cluster
    proc = gameday("run", *_k8s_args(lab, kubeconfig, "teei-prod"), "-p", "confirm_production=true",
                   "-p", "dry_run=true", "--output-dir", str(tmp_path / "out"), env=_env(lab))
    assert "confirm_production" not in proc.stderr.split("verdict")[0] or "refused" not in proc.stderr
    entries = read_journal(Path(proc.stdout.strip().splitlines()[-1]))
    assert any(e["kind"] == "phase.started" for e in entries), "the guard let the confirmed run go on"
    assert server.chaos_objects() == []
