"""One gameday at a time per target: a second `gameday run` on a lab while one is running is refused
(exit 2) with a message naming the first, and touches nothing (the first run's partition stays)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from runtools import cluster_endpoints
from safetytools import SHORT, LabHandle, gameday, params_args, read_journal, scorecard

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_second_run_on_a_busy_lab_is_refused_naming_the_first(lab: LabHandle, start_run: Any, tmp_path) -> None:
    lab.settle()
    first = start_run(lab, **SHORT)
    lab.wait_active()
    first_id = re.search(r" run (\S+) \(", first.stderr).group(1)
    cuts = lab.partition()["cuts"]

    second = gameday("run", "-p", f"lab_dir={lab.lab_dir}", *params_args(SHORT), "--output-dir",
                     str(tmp_path / "second"), timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert "another gameday is in progress" in second.stderr and first_id in second.stderr
    assert lab.partition()["active"] is True, "the refused run did not heal the first run's partition"
    assert lab.partition()["cuts"] == cuts
    assert second.stdout.strip() == "" and not (tmp_path / "second").exists(), "a refused run writes nothing"

    assert first.wait() in (0, 1), first.stderr[-3000:]
    assert scorecard(first.archive())["verdict"] in ("pass", "fail")
    assert not (lab.lab_dir / "gameday.lock").exists(), "the first run released the lock"


def test_second_run_on_a_cluster_with_a_gameday_networkchaos_is_refused(lab: LabHandle, tmp_path) -> None:
    import os
    import sys

    from safetytools import ROOT

    sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
    from fake_apiserver import FakeApiServer, pods_for_lab

    namespace = "teei-gameday"
    s = lab.state
    server = FakeApiServer(pods=pods_for_lab(lab.lab_dir, namespace), proxy_control_url=s["proxy_control_url"],
                           inject_delay=0.3, recover_delay=0.3)
    with server:
        server.put_chaos({
            "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": "nats-partition-run-first", "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "gameday", "gameday.dev/run-id": "run-first"}},
            "spec": {"action": "partition", "mode": "all", "duration": "600s",
                     "selector": {"namespaces": [namespace], "labelSelectors": {"app.kubernetes.io/name": "nats"}},
                     "direction": "both", "target": {"mode": "all", "selector": {"namespaces": [namespace]}}},
        })
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace)
        proc = gameday("run", "--target", "kubernetes", *params_args({
            **SHORT, "namespace": namespace, "kubeconfig": str(kubeconfig), "kube_context": "fake-cluster",
            **cluster_endpoints(s),
            "chaos_manifest": "",
        }), "-p", "nats_selector={app.kubernetes.io/name: nats}", "--output-dir", str(tmp_path / "out"),
            env={**os.environ, "PYTHONWARNINGS": "ignore", "GAMEDAY_EVENTS_DSN": s["events_dsn"]})
        names = [o["metadata"]["name"] for o in server.chaos_objects()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no other gameday in progress" in proc.stderr and "run-first" in proc.stderr
    assert names == ["nats-partition-run-first"], "the first run's NetworkChaos is untouched, none added"
    archive = tmp_path / "out" / "GAMEDAY-001" / proc.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    assert not any(e["kind"] in ("fault.active", "fault.healed") for e in read_journal(archive))
