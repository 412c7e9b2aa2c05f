"""End to end: ``gameday run --gameday GAMEDAY-002 --target kubernetes`` against the fake API server, whose
CloudNativePG stand-in drives a GAMEDAY-002 lab's Patroni pair (``gameday lab up --gameday GAMEDAY-002``):
the PodChaos pod-kill SIGKILLs the lab's primary, Patroni fails over, the "operator" creates the killed
pod again and starts its node, which rejoins as a replica. A cluster's Prometheus (a second, real
Prometheus) scrapes each instance pod as the Cluster's PodMonitor would and federates the lab's services
with the namespace added, and evaluates the gamedays' alert rules. The runbook sees only the cluster's
side (API server, Prometheus, the -rw DSN, the ingest URL); the scorecard must agree with what the lab
measured itself: the kill's moment, the first write a new primary acknowledged, every event stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cluster_prometheus import ClusterPrometheus
from fake_apiserver import FakeApiServer, pods_for_lab, wait_for
from fake_instances import LabPair, PodNetwork

from gamedaylib.lab.processes import monitoring_binaries

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NAMESPACE = "teei-gameday"
CLUSTER = "events-db"
REPO = Path(__file__).resolve().parents[2]
GAMEDAY = [sys.executable, "-m", "gamedaylib.cli"]
DSN_ENV = "GAMEDAY_E2E_EVENTS_DSN"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A GAMEDAY-002 lab, started as a user would (no Alertmanager: the cluster's Prometheus alerts)."""
    if monitoring_binaries()[0] is None:
        pytest.skip("no Prometheus (or hidden by GAMEDAY_LAB_WITHOUT): a CloudNativePG cluster's readings come "
                    "from Prometheus, and this test runs one as the cluster's")
    lab_dir = tmp_path_factory.mktemp("cnpg-e2e") / "lab"
    env = {**os.environ, "GAMEDAY_LAB_WITHOUT": "alertmanager"}
    try:
        up = subprocess.run(
            [*GAMEDAY, "lab", "up", "--gameday", "GAMEDAY-002", "--lab-dir", str(lab_dir)],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            cwd=REPO,
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        status = subprocess.run(
            [*GAMEDAY, "lab", "status", "--json", "--lab-dir", str(lab_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        state = json.loads(status.stdout)
        assert state.get("pg_plan") and state.get("prometheus_url"), "a GAMEDAY-002 lab with Prometheus"
        yield {**state, "lab_dir": lab_dir}
    finally:
        subprocess.run(
            [*GAMEDAY, "lab", "down", "--lab-dir", str(lab_dir)], capture_output=True, timeout=120, cwd=REPO
        )


@pytest.fixture()
def cluster(lab: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The fake cluster: the chart-shaped pods of the pipeline, the Cluster ``events-db`` whose instances
    are the lab's pg1 and pg2, their metrics endpoints, and the cluster's Prometheus."""
    from gamedaylib.lab.pgclient import PgClusterClient
    from gamedaylib.lab.pgcluster import PgClusterPlan
    from gamedaylib.lab.pgrunner import Spawner

    client = PgClusterClient(PgClusterPlan.from_json(lab["pg_plan"]), launcher=Spawner())
    pair = LabPair(client)
    with (
        PodNetwork() as network,
        FakeApiServer(
            pods=pods_for_lab(lab["lab_dir"], NAMESPACE, nats_nodes=3),
            proxy_control_url=lab["proxy_control_url"],
        ) as fake,
    ):
        fake.add_cnpg_cluster(
            CLUSTER, pair, namespace=NAMESPACE, network=network, recreate_delay=2.0, start_delay=1.0
        )
        prometheus = ClusterPrometheus(tmp_path / "cluster-prometheus", scrape_interval="1s")
        prometheus.scrape_cnpg(network, NAMESPACE, CLUSTER, [f"{CLUSTER}-{i}" for i in (1, 2)])
        prometheus.federate(lab["prometheus_url"], NAMESPACE, ["api-gateway", "reporting", "nats-exporter"])
        prometheus.with_lab_rules()
        with prometheus:
            yield {
                "fake": fake,
                "pair": pair,
                "client": client,
                "prometheus": prometheus,
                "kubeconfig": fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE),
            }


def params_file(lab: dict[str, Any], cluster: dict[str, Any], tmp_path: Path, **extra: Any) -> Path:
    gateway = lab["gateway_url"]
    params = {
        "target": "kubernetes",
        "profile": "rehearsal",
        "namespace": NAMESPACE,
        "kubeconfig": str(cluster["kubeconfig"]),
        "kube_context": "fake-cluster",
        "cnpg_cluster": CLUSTER,
        "primary_selector": {"cnpg.io/cluster": CLUSTER, "cnpg.io/instanceRole": "primary"},
        "chaos_manifest": "",
        "prometheus_url": cluster["prometheus"].url,
        "prometheus_selectors": {
            s: f'namespace="{NAMESPACE}",job="{s}"' for s in ("api-gateway", "reporting")
        },
        "alertmanager_url": "",
        "nats_monitor_urls": list(lab["nats_monitor_urls"]),
        "service_selectors": {
            s: {"app.kubernetes.io/name": s, "app.kubernetes.io/instance": "teei"}
            for s in ("api-gateway", "reporting")
        },
        "ingest_url": gateway + "/v1/events",
        "stream_url": gateway + "/v1/metrics/stream",
        "events_dsn_env": DSN_ENV,
        "commands": {"injection": ["echo podchaos applied"]},
        **extra,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


class TruthWriter:
    """The lab's own measure of the failover: a write through the read-write endpoint every 0.1 s, and
    which node acknowledged it (its port)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.acks: list[tuple[datetime, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from gamedaylib.clock import utcnow

        while not self._stop.wait(0.1):
            why, port = self.client.write(self.client.rw_dsn, "e2e-truth", 1.0)
            if not why and port is not None:
                self.acks.append((utcnow(), port))

    def __enter__(self) -> TruthWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def first_ack_after(self, at: datetime, port: int) -> datetime | None:
        return next((t for t, p in self.acks if t > at and p == port), None)


def stored_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, count(*) FROM events GROUP BY idempotency_key"
        ).fetchall()
    return {str(k): int(n) for k, n in rows}


def test_gameday_002_on_the_fake_cluster_agrees_with_the_lab(
    lab: dict[str, Any], cluster: dict[str, Any], tmp_path: Path
) -> None:
    from gamedaylib.gamedays import monitoring_dirs
    from gamedaylib.lab.truth import read_answers

    fake: FakeApiServer = cluster["fake"]
    pair: LabPair = cluster["pair"]
    client = cluster["client"]
    primary_before = client.primary()
    assert primary_before is not None
    # the cluster's Prometheus has the instances before the run starts (its first scrape takes a few s)
    wait_for(lambda: _series(cluster["prometheus"].url, "cnpg_pg_replication_in_recovery") >= 2, 60, 0.5)
    started = time.time()
    with TruthWriter(client) as truth:
        done = subprocess.run(
            [
                *GAMEDAY,
                "run",
                "--gameday",
                "GAMEDAY-002",
                "--target",
                "kubernetes",
                "--params",
                str(params_file(lab, cluster, tmp_path)),
                "--output-dir",
                str(tmp_path / "outputs"),
            ],
            capture_output=True,
            text=True,
            timeout=500,
            env={**os.environ, DSN_ENV: lab["events_dsn"]},
            cwd=REPO,
        )
    took = time.time() - started
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    archive = Path(done.stdout.strip().splitlines()[-1])
    card = json.loads((archive / "scorecard.json").read_text(encoding="utf-8"))
    metrics = {m["name"]: m for m in card["metrics"]}
    journal = [
        json.loads(line) for line in (archive / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    ]

    # the kill went through the cluster API: one PodChaos on the primary's pod (its node SIGKILLed),
    # deleted at heal
    creates = [p for m, p in fake.requests if m == "POST" and p.endswith("/podchaos")]
    assert len(creates) == 1 and fake.chaos_objects(NAMESPACE, plural="podchaos") == []
    ((killed_node, killed_at),) = pair.kills
    assert killed_node == primary_before
    killed_pod = f"{CLUSTER}-{pair.nodes.index(killed_node) + 1}"
    applied = [
        e for e in fake.events if e["involvedObject"]["kind"] == "PodChaos" and e["reason"] == "Applied"
    ]
    assert [e["message"].rsplit(" ", 1)[-1] for e in applied] == [f"{NAMESPACE}/{killed_pod}"]
    (active,) = [e for e in journal if e["kind"] == "fault.active"]
    t0 = datetime.fromisoformat(active["t0"])
    assert 0 <= (t0 - killed_at).total_seconds() < 2, "T+0 is when the API shows the pod gone"

    # failover: measured by writing, and agreeing with the lab's own writer
    failover = metrics["failover_seconds"]
    assert failover["status"] == "pass" and failover["value"] is not None, failover
    survivor = next(n for n in pair.nodes if n != killed_node)
    first_ack = truth.first_ack_after(killed_at, client.node(survivor).pg_port)
    assert first_ack is not None, "the lab saw the survivor take writes"
    lab_failover = (first_ack - killed_at).total_seconds()
    assert abs(failover["value"] - lab_failover) <= 2.5, (failover, lab_failover)
    assert 10 <= lab_failover <= 40, "Patroni's ttl (20 s) bounds the lab's failover"

    # the cluster after: the survivor is primary on a new timeline, the killed instance streams from it
    status = fake.cnpg_cluster(CLUSTER, NAMESPACE)["status"]
    assert status["currentPrimary"] == f"{CLUSTER}-{pair.nodes.index(survivor) + 1}"
    assert status["phase"] == "Cluster in healthy state"
    assert metrics["split_brain_samples"]["status"] == "pass" and metrics["split_brain_samples"]["value"] == 0
    assert metrics["replica_rejoin_seconds"]["status"] == "pass", metrics["replica_rejoin_seconds"]

    # nothing users were told was accepted is lost, nothing stored twice; and the scorecard says the same
    finished = datetime.fromisoformat(card["finished_at"])
    accepted = {
        a["idempotency_key"]
        for a in read_answers(lab["lab_dir"])
        if a.get("status") == 202 and datetime.fromisoformat(a["ts"].replace("Z", "+00:00")) <= finished
    }
    assert accepted
    wait_for(lambda: not [k for k in accepted if k not in stored_counts(lab["events_dsn"])], 30, 0.5)
    assert [k for k, n in stored_counts(lab["events_dsn"]).items() if n > 1] == []
    assert metrics["event_loss_count"]["status"] == "pass" and metrics["event_loss_count"]["value"] == 0
    assert card["events"]["canaries_sent"] > 0 and card["events"]["canaries_lost"] == 0
    assert metrics["rpo_seconds"]["status"] == "pass" and metrics["rto_seconds"]["status"] == "pass"

    # the alerts come from the cluster's Prometheus, labelled with the namespace. GAMEDAY-002's rules
    # (PostgreSQLPrimaryDown, ...) live in its monitoring/ folder; without them no gameday alert can fire
    # and the run must not pass
    has_rules = any((d / "gameday-002.rules.yml").exists() for d in monitoring_dirs())
    fired = metrics["alert_fire_seconds"]
    if has_rules:
        assert fired["status"] == "pass", fired
        assert done.returncode == 0 and card["verdict"] == "pass", [
            m for m in card["metrics"] if m["status"] == "fail"
        ]
    else:
        assert fired["status"] == "fail" and done.returncode == 1
    print(
        f"cnpg e2e: gameday run {took:.1f}s, failover_seconds {failover['value']} (the lab's own writer: "
        f"{lab_failover:.1f}s), replica_rejoin_seconds {metrics['replica_rejoin_seconds']['value']}, "
        f"rto_seconds {metrics['rto_seconds']['value']}, alert {fired['value']}, verdict {card['verdict']}"
    )


def _series(prometheus_url: str, name: str) -> int:
    import urllib.parse
    import urllib.request

    query = urllib.parse.quote(f'{name}{{namespace="{NAMESPACE}"}}')
    url = f"{prometheus_url}/api/v1/query?query={query}"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return len(json.loads(resp.read())["data"]["result"])
    except OSError:
        return 0
