"""End to end: ``gameday run --target kubernetes`` drives the fake API server, whose Chaos Mesh
stand-in cuts the lab's partition proxy; the lab supplies NATS (3 nodes), the services (2 replicas
each: 2 pods each in the fake cluster), PostgreSQL, and Prometheus and Alertmanager when it has them.
The scorecard must agree with what the lab knows really happened.

Optional parts: whatever combination the lab found (``runtools.combination``: the lab's own lookup,
``GAMEDAY_LAB_WITHOUT`` honoured). The first test is marked ``optional_parts``: `make test` runs it
again with Alertmanager hidden and with both parts hidden, and it asserts the alerting metric for
the combination it got."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cluster_prometheus import ClusterPrometheus
from fake_apiserver import FakeApiServer, pods_for_lab, proxy_status, wait_for
from runtools import combination

from gamedaylib.targets.kubernetes import is_injected, is_recovered

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

NAMESPACE = "teei-gameday"
REPO = Path(__file__).resolve().parents[2]
GAMEDAY = [sys.executable, "-m", "gamedaylib.cli"]


def _has_run_command() -> bool:
    import contextlib
    import io

    from gamedaylib.cli import build_parser

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["run", "--help"])
    except SystemExit as exc:
        return exc.code == 0
    return True


needs_run = pytest.mark.skipif(
    not _has_run_command(), reason="`gameday run` (runbook issue) is not in gamedaylib/cli.py yet"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from gamedaylib.lab.client import Lab

    lab = Lab(tmp_path_factory.mktemp("k8s-e2e") / "lab")
    try:
        state = lab.up()
        yield {**state, "lab_dir": lab.lab_dir}
    finally:
        lab.down()


@pytest.fixture()
def lossy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A lab whose gateway silently drops the oldest buffered event once 20 are waiting."""
    from gamedaylib.lab.client import Lab

    lab = Lab(tmp_path_factory.mktemp("k8s-e2e-lossy") / "lab")
    try:
        state = lab.up({"lab_buffer_capacity": 20, "lab_overflow": "drop"})
        yield {**state, "lab_dir": lab.lab_dir}
    finally:
        lab.down()


def nats_monitor_urls(lab: dict[str, Any]) -> list[str]:
    """The lab's NATS nodes, one monitoring URL each (``nats_monitor_urls`` of ``gameday lab status
    --json`` once the lab runs a cluster), else its single node's."""
    return list(lab.get("nats_monitor_urls") or [lab["nats_monitor_url"]])


def declared(name: str) -> bool:
    """Whether the runbook declares this parameter yet (``gameday run`` refuses unknown ones)."""
    from paramtools import declared as names

    return name in names()


@pytest.fixture()
def cluster(lab: dict[str, Any], tmp_path: Path) -> Iterator[tuple[FakeApiServer, Path]]:
    # the three NATS pods of the official chart are the lab's NATS nodes: nats-<i> logs node i
    server = FakeApiServer(
        pods=pods_for_lab(lab["lab_dir"], NAMESPACE, nats_nodes=3),
        proxy_control_url=lab["proxy_control_url"],
        inject_delay=0.5,
        recover_delay=0.5,
    )
    with server:
        yield server, server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)


def params_file(lab: dict[str, Any], kubeconfig: Path, tmp_path: Path, **extra: Any) -> Path:
    gateway = lab["gateway_url"]
    monitors = nats_monitor_urls(lab)
    where: dict[str, Any] = (
        {"nats_monitor_urls": monitors}
        if declared("nats_monitor_urls")
        else {"nats_monitor_url": monitors[0]}
    )
    if declared("service_selectors"):
        where["service_selectors"] = {
            s: {"app.kubernetes.io/name": s, "app.kubernetes.io/instance": "teei"}
            for s in ("api-gateway", "reporting")
        }
    # the lab's Prometheus series carry no namespace: the service readings are scraped directly
    readings = {
        service: lab[key]
        for service, key in (("api-gateway", "gateway_metrics_url"), ("reporting", "reporting_metrics_url"))
        if lab.get(key)
    }
    params = {
        "target": "kubernetes",
        "profile": "rehearsal",
        "namespace": NAMESPACE,
        "kubeconfig": str(kubeconfig),
        "kube_context": "fake-cluster",
        "nats_selector": {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats"},
        "service_selector": {},
        "service_pods": ["api-gateway", "reporting"],
        "service_metrics": readings,
        **where,
        "prometheus_url": lab.get("prometheus_url") or "",
        "alertmanager_url": lab.get("alertmanager_url") or "",
        "ingest_url": gateway + "/v1/events",
        "stream_url": gateway + "/v1/metrics/stream",
        "events_dsn_env": "GAMEDAY_E2E_EVENTS_DSN",
        "chaos_manifest": "",
        "commands": {"injection": ["echo networkchaos applied"]},
        **extra,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def _series(prometheus_url: str, query: str) -> int:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return len(json.loads(resp.read())["data"]["result"])
    except OSError:
        return 0


def run_env(lab: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, "GAMEDAY_E2E_EVENTS_DSN": lab["events_dsn"]}


def kernels_of(pgid: int) -> list[int]:
    """Jupyter kernels launched by any process of the run's process group (kernels run in a session
    of their own and carry ``JPY_PARENT_PID``), so that killing the run takes them down too."""
    group, environs = set(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                group.add(int(entry.name))
            environs[int(entry.name)] = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
    wanted = {f"JPY_PARENT_PID={pid}".encode() for pid in group}
    return [pid for pid, env in environs.items() if wanted.intersection(env)]


def kill_run(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run's process group and the kernels it launched: nothing of it may heal."""
    kernels = kernels_of(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in kernels:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)


def stored_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, count(*) FROM events GROUP BY idempotency_key"
        ).fetchall()
    return {str(k): int(n) for k, n in rows}


@needs_run
@pytest.mark.optional_parts
def test_gameday_run_against_the_fake_cluster_agrees_with_the_lab(
    lab: dict[str, Any], cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    from gamedaylib.lab.truth import read_answers

    fake, kubeconfig = cluster
    cuts_before = proxy_status(lab["proxy_control_url"])["cuts"]
    # With Prometheus, as a cluster runs it: the services' series (every replica) and JetStream's carry the
    # namespace (federated from the lab's Prometheus, the way ServiceMonitors label them), the gameday's
    # rules are loaded there, and the runbook reads the service readings and the alerts from it, scoped to
    # the namespace. Without Prometheus the replicas are scraped directly and the alert is not measured.
    with contextlib.ExitStack() as stack:
        extra: dict[str, Any] = {}
        if combination(lab) != "neither":
            prometheus = ClusterPrometheus(tmp_path / "cluster-prometheus")
            prometheus.federate(lab["prometheus_url"], NAMESPACE, ["api-gateway", "reporting", "nats-exporter"])
            prometheus.with_lab_rules()
            stack.enter_context(prometheus)
            extra = {
                "prometheus_url": prometheus.url,
                "alertmanager_url": "",
                "service_metrics": {},
                "prometheus_selectors": {s: f'namespace="{NAMESPACE}",job="{s}"' for s in ("api-gateway", "reporting")},
            }
            wait_for(lambda: _series(prometheus.url, f'up{{namespace="{NAMESPACE}"}}') > 0
                     and _series(prometheus.url, f'nats_connected{{namespace="{NAMESPACE}"}}') >= 4, 30, 0.5)
        started = time.time()
        done = subprocess.run(
            [
                *GAMEDAY,
                "run",
                "--target",
                "kubernetes",
                "--params",
                str(params_file(lab, kubeconfig, tmp_path, **extra)),
                "--output-dir",
                str(tmp_path / "outputs"),
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=run_env(lab),
            cwd=REPO,
        )
        took = time.time() - started
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    archive = Path(done.stdout.strip().splitlines()[-1])
    card = json.loads((archive / "scorecard.json").read_text(encoding="utf-8"))
    metrics = {m["name"]: m for m in card["metrics"]}
    assert card["target"] == "kubernetes"

    # the fault really went through the cluster API: one NetworkChaos, injected, then deleted
    creates = [p for m, p in fake.requests if m == "POST" and p.endswith("/networkchaos")]
    assert len(creates) == 1 and any(m == "DELETE" for m, _ in fake.requests)
    # ... on the chart-shaped pods: the three NATS pods and every pod of the two services (one per lab
    # replica), not nats-box, the Evicted pod, the Job's pod nor reporting-db-0
    name = next(
        e["involvedObject"]["name"] for e in fake.events if e["involvedObject"]["kind"] == "NetworkChaos"
    )
    applied = {e["message"].rsplit(" ", 1)[-1] for e in fake.events_for(name) if e["reason"] == "Applied"}
    replicas = len(lab["gateway_metrics_urls"])
    services = {
        p.name
        for p in pods_for_lab(lab["lab_dir"], NAMESPACE, nats_nodes=3)
        if p.phase == "Running" and p.name.startswith(("api-gateway-", "reporting-")) and p.owner == "ReplicaSet"
    }
    assert len(services) == 2 * replicas
    assert applied == {f"{NAMESPACE}/{p}" for p in ("nats-0", "nats-1", "nats-2", *services)}
    assert fake.chaos_objects(NAMESPACE) == [] or all(is_recovered(o) for o in fake.chaos_objects(NAMESPACE))
    assert not any(is_injected(o) for o in fake.chaos_objects(NAMESPACE))
    assert proxy_status(lab["proxy_control_url"])["cuts"] == cuts_before + 1, "the network was cut once"
    assert proxy_status(lab["proxy_control_url"])["active"] is False
    journal = [
        json.loads(line) for line in (archive / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert any(e["kind"] in ("partition.active", "fault.active") for e in journal)

    # the lab's ground truth: every event users were told was accepted (202) before the run ended is
    # stored, once (the simulated users keep posting: later ones may still be on their way)
    from datetime import datetime

    finished = datetime.fromisoformat(card["finished_at"])
    accepted = {
        a["idempotency_key"]
        for a in read_answers(lab["lab_dir"])
        if a.get("status") == 202 and datetime.fromisoformat(a["ts"].replace("Z", "+00:00")) <= finished
    }
    assert accepted

    def missing() -> list[str]:
        stored = stored_counts(lab["events_dsn"])
        return [k for k in accepted if k not in stored]

    try:
        wait_for(lambda: not missing(), 20, 0.5)
    except AssertionError:
        pytest.fail(f"{len(missing())} of {len(accepted)} events accepted by the gateway were never stored")
    duplicated = [k for k, n in stored_counts(lab["events_dsn"]).items() if n > 1]
    assert duplicated == []
    # ... and the scorecard, measured only through the cluster-facing endpoints, agrees
    assert metrics["event_loss_count"]["status"] == "pass" and metrics["event_loss_count"]["value"] == 0
    assert card["events"]["canaries_sent"] > 0 and card["events"]["canaries_lost"] == 0
    assert metrics["rto_seconds"]["status"] == "pass"
    assert metrics["rto_seconds"]["value"] >= 20 - 1, "RTO runs from T+0 through the 20 s partition"
    # the alert: with Prometheus (Alertmanager or not) it is measured, through Alertmanager or Prometheus's
    # ALERTS series; with neither, not measured, saying why
    alert = metrics["alert_fire_seconds"]
    if combination(lab) == "neither":
        assert alert["status"] == "not_measured" and "neither Alertmanager nor Prometheus" in alert["reason"], alert
    else:
        # the cluster's Prometheus: the alert fired in this namespace and was seen, and the stop conditions'
        # readings came from it, scoped to the namespace
        assert alert["status"] == "pass", (combination(lab), alert)
        checks = {e["name"]: e for e in journal if e["kind"] == "check"}
        assert f'namespace="{NAMESPACE}"' in checks["service readings for the stop conditions"]["detail"]
        assert checks.get("service readings scoped to the namespace", {"ok": True})["ok"] is True
        assert extra["prometheus_url"] in checks["every stop condition can see its input"]["detail"]
    assert card["verdict"] == ("pass" if done.returncode == 0 else "fail")
    print(f"kubernetes e2e: gameday run took {took:.1f}s, verdict {card['verdict']}")


@needs_run
def test_runbook_killed_mid_partition_is_healed_by_duration(
    lab: dict[str, Any], cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    fake, kubeconfig = cluster
    params = params_file(
        lab, kubeconfig, tmp_path, partition_seconds=8, partition_safety_margin_seconds=2, commands={}
    )
    proc = subprocess.Popen(
        [
            *GAMEDAY,
            "run",
            "--target",
            "kubernetes",
            "--params",
            str(params),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=run_env(lab),
        cwd=REPO,
        start_new_session=True,
    )
    try:
        injected = wait_for(lambda: [o for o in fake.chaos_objects(NAMESPACE) if is_injected(o)], 120, 0.2)
        assert proxy_status(lab["proxy_control_url"])["active"] is True
        kill_run(proc)  # the CLI, Papermill and the kernel: nobody heals
        name = injected[0]["metadata"]["name"]
        assert injected[0]["spec"]["duration"] == "20s", "8 s + 2 s after T+0, + 10 s of injection wait"
        assert proxy_status(lab["proxy_control_url"])["active"] is True, "still cut: the runbook did not heal"
        # Chaos Mesh's duration (20 s from creation) heals it; the object stays, Stop + AllRecovered
        wait_for(lambda: proxy_status(lab["proxy_control_url"])["active"] is False, 30, 0.2)
        (obj,) = [o for o in fake.chaos_objects(NAMESPACE) if o["metadata"]["name"] == name]
        assert is_recovered(obj), "expired, not deleted: Chaos Mesh healed it, not the runbook"
        assert not any(m == "DELETE" for m, _ in fake.requests)
    finally:
        if proc.poll() is None:
            kill_run(proc)


@needs_run
def test_a_lossy_system_fails_on_the_cluster_target_too(lossy_lab: dict[str, Any], tmp_path: Path) -> None:
    """Measured only through the cluster-facing endpoints (canaries, the events table), the
    scorecard still sees the loss the lab's ground truth records."""
    from datetime import datetime

    from gamedaylib.lab.truth import read_answers

    lab = lossy_lab
    with FakeApiServer(
        pods=pods_for_lab(lab["lab_dir"], NAMESPACE, nats_nodes=3),
        proxy_control_url=lab["proxy_control_url"],
        inject_delay=0.5,
        recover_delay=0.5,
    ) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
        done = subprocess.run(
            [
                *GAMEDAY,
                "run",
                "--target",
                "kubernetes",
                "--params",
                # the buffer does fill up (capacity 20): the stop condition, which now sees the
                # gateway's buffer, must not end the partition before the loss happens
                str(params_file(lab, kubeconfig, tmp_path, commands={}, stop_buffer_fraction=1.0)),
                "--output-dir",
                str(tmp_path / "outputs"),
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=run_env(lab),
            cwd=REPO,
        )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    card = json.loads(
        (Path(done.stdout.strip().splitlines()[-1]) / "scorecard.json").read_text(encoding="utf-8")
    )
    metrics = {m["name"]: m for m in card["metrics"]}
    finished = datetime.fromisoformat(card["finished_at"])
    accepted = {
        a["idempotency_key"]
        for a in read_answers(lab["lab_dir"])
        if a.get("status") == 202 and datetime.fromisoformat(a["ts"].replace("Z", "+00:00")) <= finished
    }
    time.sleep(3)
    stored = stored_counts(lab["events_dsn"])
    truly_lost = [k for k in accepted if k not in stored]
    assert truly_lost, "the lab really lost accepted events"
    assert card["verdict"] == "fail"
    assert metrics["event_loss_count"]["status"] == "fail" and metrics["event_loss_count"]["value"] > 0
    assert card["events"]["canaries_lost"] > 0
