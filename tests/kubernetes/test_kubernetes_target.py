"""The Kubernetes target against the fake API server, whose Chaos Mesh stand-in really cuts the lab's
partition proxy in front of a real nats-server: what a facilitator would check is whether NATS still
answers through the proxy."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import (
    NAMESPACE,
    FakeApiServer,
    FakePod,
    nats_reachable_through,
    proxy_status,
    service_labels,
    wait_for,
)

from gamedaylib import chaos
from gamedaylib.exceptions import InjectionFailed, ProbeError, ProductionGuard
from gamedaylib.journal import utcnow
from gamedaylib.lab.processes import find_binary
from gamedaylib.targets.base import Target
from gamedaylib.targets.kubernetes import KubernetesTarget, is_injected, is_recovered

pytestmark = pytest.mark.timeout(120)


def target_for(params: dict[str, Any], **overrides: Any) -> KubernetesTarget:
    return KubernetesTarget.from_params({**params, **overrides})


def failed(checks: list[Any]) -> list[Any]:
    return [c for c in checks if c.fatal and not c.ok]


def test_preflight_passes_on_a_healthy_cluster(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    target = target_for(k8s_params)
    try:
        assert isinstance(target, Target)
        checks = target.preflight()
    finally:
        target.close()
    assert failed(checks) == [], failed(checks)
    names = [c.name for c in checks]
    assert any(n.startswith("rbac: create networkchaos.chaos-mesh.org") for n in names)
    assert "chaos mesh installed" in names
    dry = next(c for c in checks if c.name.startswith("chaos manifest accepted"))
    # rehearsal: 20 s partition + 30 s margin after T+0, + up to 50 s of injection wait (the clock of
    # Chaos Mesh's duration starts at creation)
    assert dry.ok and "duration 1m40s" in dry.detail and "deadline 50s from T+0" in dry.detail
    # pre-flight changed nothing: the server dry run persisted no object, the proxy was not cut
    assert fake.chaos_objects() == []
    assert not any(m == "POST" and "dryRun=All" not in p and "networkchaos" in p for m, p in fake.requests)
    assert fake.proxy_calls == []


def test_denied_verb_fails_preflight_naming_the_permission(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    fake.deny("create", "networkchaos", group="chaos-mesh.org")
    target = target_for(k8s_params)
    try:
        checks = target.preflight()
        bad = failed(checks)
        assert [c.name for c in bad] == [f"rbac: create networkchaos.chaos-mesh.org in namespace {NAMESPACE}"]
        assert "missing permission: create networkchaos.chaos-mesh.org" in bad[0].detail
        assert "deploy/rbac.yaml" in bad[0].detail
        # and the API refuses the real call too, should anyone try
        with pytest.raises(InjectionFailed, match='403.*cannot create resource "networkchaos"'):
            target.inject(duration_seconds=30)
    finally:
        target.close()
    assert fake.chaos_objects() == [] and fake.proxy_calls == []
    assert proxy_status(data_plane["proxy_control_url"])["active"] is False


def test_log_permission_denied_is_named(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    fake.deny("get", "pods", subresource="log")
    target = target_for(k8s_params)
    try:
        bad = failed(target.preflight())
        assert [c.name for c in bad] == [f"rbac: get pods/log in namespace {NAMESPACE}"]
        with pytest.raises(ProbeError, match="403"):
            target.service_logs("reporting")
    finally:
        target.close()


def test_inject_confirms_t0_at_all_injected_and_heal_is_idempotent(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    port = data_plane["proxy_port"]
    assert nats_reachable_through(port), "NATS answers through the proxy before the fault"
    target = target_for(k8s_params)
    try:
        asked = utcnow()
        t0 = target.inject(duration_seconds=60)
        # T+0 is the confirmation, not the request: the controller takes inject_delay to inject
        assert t0 - asked >= timedelta(seconds=fake.inject_delay)
        obj = fake.chaos_objects(NAMESPACE)[0]
        assert obj["metadata"]["name"] == chaos.chaos_name(k8s_params["run_id"])
        assert obj["metadata"]["labels"][chaos.RUN_ID_LABEL] == k8s_params["run_id"]
        assert obj["spec"]["duration"] == "2m", "60 s from T+0 + 60 s injection wait"
        assert obj["spec"]["target"]["selector"]["pods"][NAMESPACE] == [
            "api-gateway-7c9d5b6f4-x2x7k",
            "reporting-5f8b9c7d6-q4kzp",
        ]
        assert is_injected(obj) and target.partition_active()
        assert proxy_status(data_plane["proxy_control_url"])["active"] is True
        assert not nats_reachable_through(port, timeout=0.5), "the network is cut"

        healed = target.heal()
        assert healed is not None and healed > t0
        # recovered at once; the controller then drops its finalizer and the object goes
        assert all(is_recovered(o) for o in fake.chaos_objects(NAMESPACE))
        wait_for(lambda: fake.chaos_objects(NAMESPACE) == [], 5)
        assert not target.partition_active()
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
        assert wait_for(lambda: nats_reachable_through(port), 5)
        assert target.heal() is None, "second heal: nothing left to heal, no error"
    finally:
        target.close()


def test_duration_expiry_heals_when_the_runbook_is_killed(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    """The runbook dies mid-partition (it never heals): Chaos Mesh's duration does."""
    port = data_plane["proxy_port"]
    target = target_for(k8s_params)
    t0 = target.inject(duration_seconds=3)
    target.close()  # ... and nothing more from the runbook
    assert proxy_status(data_plane["proxy_control_url"])["active"] is True
    wait_for(lambda: proxy_status(data_plane["proxy_control_url"])["active"] is False, 12)
    healed_after = (utcnow() - t0).total_seconds()
    # the duration is 3 s from T+0 plus the injection wait (3 s) from creation; T+0 came inject_delay
    # after creation: healed by the controller at about 6 - 0.3 s after T+0, long before the proxy's
    # own backstop (30 s later)
    assert 3 <= healed_after < 3 + 3 + 2
    obj = fake.chaos_objects(NAMESPACE)[0]
    assert is_recovered(obj), "desiredPhase Stop, AllRecovered True; the object stays"
    assert wait_for(lambda: nats_reachable_through(port), 5)
    # a later rollback (another process, same run id) finds nothing active and cleans up the object
    rollback = target_for(k8s_params)
    try:
        assert not rollback.partition_active()
        assert rollback.heal() is None
        wait_for(lambda: fake.chaos_objects(NAMESPACE) == [], 5)
    finally:
        rollback.close()


def test_existing_gameday_chaos_blocks_preflight_and_409_leaves_it_alone(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    other = chaos.build_network_chaos(
        chaos.load_template(),
        namespace=NAMESPACE,
        run_id="20260101T000000Z-beef",
        nats_selector={"app.kubernetes.io/name": "nats"},
        service_selector={"app.kubernetes.io/part-of": "teei"},
        duration_seconds=600,
    )
    fake.put_chaos(other, injected=True)
    target = target_for(k8s_params)
    try:
        bad = failed(target.preflight())
        assert [c.name for c in bad] == ["no other gameday in progress"]
        assert (
            "nats-partition-20260101t000000z-beef" in bad[0].detail
            and "20260101T000000Z-beef" in bad[0].detail
        )
    finally:
        target.close()
    # the same run id again: the API server answers 409, and the runbook must not delete the other run's fault
    same = target_for(k8s_params, run_id="20260101T000000Z-beef")
    try:
        with pytest.raises(InjectionFailed, match="already exists.*left untouched"):
            same.inject(duration_seconds=30)
    finally:
        same.close()
    assert [o["metadata"]["name"] for o in fake.chaos_objects(NAMESPACE)] == [
        "nats-partition-20260101t000000z-beef"
    ]
    assert not any(m == "DELETE" for m, _ in fake.requests)


def test_injection_timeout_deletes_what_it_created(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    fake.inject_delay = 30.0  # the controller never gets to it in time
    target = target_for(k8s_params)
    target.settings = type(target.settings)(**{**target.settings.__dict__, "inject_timeout_seconds": 1.0})
    try:
        started = time.monotonic()
        with pytest.raises(InjectionFailed, match="not injected within 1s.*it was deleted"):
            target.inject(duration_seconds=60)
        assert time.monotonic() - started < 10
    finally:
        target.close()
    wait_for(lambda: fake.chaos_objects(NAMESPACE) == [], 5)
    assert fake.proxy_calls == []


def test_unready_pod_and_missing_crd_fail_preflight(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    next(p for p in fake.pods if p.name.startswith("reporting")).ready = False
    fake.crd_installed = False
    target = target_for(k8s_params)
    try:
        bad = {c.name: c.detail for c in failed(target.preflight())}
    finally:
        target.close()
    assert "not installed" in bad["chaos mesh installed"]
    assert (
        "not ready: reporting-5f8b9c7d6-q4kzp (Running, not ready)" in bad["reporting pods running and ready"]
    )


def test_production_namespace_needs_confirmation(k8s_params: dict[str, Any]) -> None:
    with pytest.raises(ProductionGuard, match="confirm_production"):
        target_for(k8s_params, namespace="teei-prod")


def test_dry_run_creates_nothing(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    target = target_for(k8s_params, dry_run=True, namespace=NAMESPACE)
    try:
        assert failed(target.preflight()) == []
        target.inject(duration_seconds=50)
        assert target.last_manifest is not None and target.last_manifest["spec"]["duration"] == "1m40s"
        assert not target.partition_active()
        assert target.heal() is None
    finally:
        target.close()
    assert fake.chaos_objects() == [] and fake.proxy_calls == []
    creates = [p for m, p in fake.requests if m == "POST" and "networkchaos" in p]
    assert creates and all("dryRun=All" in p for p in creates)


def test_service_logs_come_from_the_pods(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        lines = target.service_logs("reporting", since=utcnow() - timedelta(minutes=5))
        assert sum("duplicate_event" in line for line in lines) == 1
        assert lines[0].startswith("{") and '"msg": "stored"' in lines[0], "JSON log lines arrive verbatim"
        with pytest.raises(ProbeError, match="no Running pod of 'audit-logger'"):
            target.service_logs("audit-logger")
    finally:
        target.close()
    assert Path(data_plane["lab_dir"], "logs", "reporting.log").exists()


# --- the files a team applies to its cluster ----------------------------------------------------


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


REPO = Path(__file__).resolve().parents[2]


# granted for people, not asked by the runbook: the playbook's `kubectl get cluster events-db -w`,
# `kubectl get pods -l cnpg.io/cluster=events-db -w` and `kubectl get podchaos -w` watch; `kubectl
# annotate podchaos` patches
FOR_THE_FACILITATOR = {
    ("watch", "", "pods"),
    ("watch", "chaos-mesh.org", "podchaos"),
    ("patch", "chaos-mesh.org", "podchaos"),
    ("list", "postgresql.cnpg.io", "clusters"),
    ("watch", "postgresql.cnpg.io", "clusters"),
}


def test_rbac_grants_exactly_what_the_target_asks_for() -> None:
    from gamedaylib.targets.cnpg import CNPG_PERMISSIONS
    from gamedaylib.targets.kubernetes import PERMISSIONS

    docs = {d["kind"]: d for d in _yaml_docs(REPO / "deploy" / "rbac.yaml")}
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding"}, "namespaced only, no ClusterRole"
    granted = {
        (verb, group, resource)
        for rule in docs["Role"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        (p.verb, p.group, p.resource + (f"/{p.subresource}" if p.subresource else ""))
        for p in (*PERMISSIONS, *CNPG_PERMISSIONS)
    }
    assert granted == needed | FOR_THE_FACILITATOR
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert binding["subjects"][0]["name"] == docs["ServiceAccount"]["metadata"]["name"]
    assert {d["metadata"]["namespace"] for d in docs.values()} == {"teei-prod"}


def test_example_params_dry_run_against_a_playbook_shaped_cluster(
    fake: FakeApiServer, kubeconfig: Path, data_plane: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """params/teei-prod.yaml as shipped: Prometheus for the service readings, every NATS pod's monitoring
    URL through the chart's headless service, the charts' labels; refused without confirmation; as a dry
    run it reads the cluster and has the API server check the fault, creating nothing."""
    from fake_apiserver import pods_for_lab
    from paramtools import split, validated

    from gamedaylib.parameters import load_params_file
    from gamedaylib.targets.kubernetes import NEW_PARAMETERS

    shipped = load_params_file(str(REPO / "params" / "teei-prod.yaml"))
    assert shipped["prometheus_url"] and "service_metrics" not in shipped, "readings come from Prometheus"
    assert shipped["nats_monitor_urls"] == [
        f"http://nats-{i}.nats-headless.teei-prod.svc.cluster.local:8222" for i in range(3)
    ]
    assert shipped["nats_selector"]["app.kubernetes.io/component"] == "nats"
    assert set(shipped["service_selectors"]) == {"api-gateway", "reporting"}
    assert shipped["kube_context"], "an explicit context, required with confirm_production"

    fake.pods = pods_for_lab(data_plane["lab_dir"], "teei-prod")
    # here: the fake cluster's kubeconfig and context; no Prometheus, no cluster DNS for NATS
    local = {
        "kubeconfig": str(kubeconfig),
        "kube_context": "fake-cluster",
        "prometheus_url": "",
        "alertmanager_url": "",
        "nats_monitor_urls": [],
    }
    # the parameters the runbook does not declare yet reach the target as they are (from_params reads
    # them with params.get), the rest is validated
    # declared by the framework core already (not by the flat one): nats_monitor_urls, nats_account,
    # prometheus_selectors
    pending = {n.name for n in NEW_PARAMETERS} | {"nats_monitor_urls", "nats_account", "prometheus_selectors"}
    declared, undeclared = split({**shipped, **local})
    assert set(undeclared) <= pending, set(undeclared) - pending
    with pytest.raises(ProductionGuard, match="teei-prod"):
        KubernetesTarget.from_params({**validated(declared), **undeclared})
    target = KubernetesTarget.from_params({**validated({**declared, "dry_run": True}), **undeclared})
    try:
        checks = target.preflight()
        assert failed(checks) == [], failed(checks)
        target.inject(duration_seconds=900)
    finally:
        target.close()
    assert target.last_manifest is not None and target.last_manifest["spec"]["duration"] == "16m"
    spec = target.last_manifest["spec"]
    assert spec["target"]["selector"]["pods"] == {
        "teei-prod": ["api-gateway-7c9d5b6f4-x2x7k", "reporting-5f8b9c7d6-q4kzp"]
    }
    assert spec["selector"]["labelSelectors"] == shipped["nats_selector"]
    assert target.last_manifest["metadata"]["namespace"] == "teei-prod"
    assert fake.chaos_objects() == [] and fake.proxy_calls == []


def test_credentials_and_dsn_come_from_where_the_parameters_say(
    k8s_params: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gamedaylib.exceptions import InvalidParameters

    with pytest.raises(InvalidParameters, match="kubeconfig"):
        target_for(k8s_params, kubeconfig=str(tmp_path / "missing"))
    monkeypatch.setenv("GAMEDAY_EVENTS_DSN", "postgresql://teei:s3cret@db:5432/teei")
    target = target_for(k8s_params)
    try:
        assert target.endpoints.events_dsn == "postgresql://teei:s3cret@db:5432/teei"
        assert "s3cret" not in repr(target.settings)
    finally:
        target.close()
    monkeypatch.delenv("GAMEDAY_EVENTS_DSN")
    target = target_for(k8s_params)
    try:
        assert target.endpoints.events_dsn is None
    finally:
        target.close()


def test_unreachable_api_server_fails_preflight_not_the_runbook(
    k8s_params: dict[str, Any], tmp_path: Path
) -> None:
    from fake_apiserver import free_port

    stopped = FakeApiServer()  # a kubeconfig for a server that is not running
    stopped.start()
    path = stopped.write_kubeconfig(tmp_path / "dead", namespace=NAMESPACE)
    text = path.read_text(encoding="utf-8").replace(stopped.url, f"http://127.0.0.1:{free_port()}")
    stopped.stop()
    path.write_text(text, encoding="utf-8")
    target = target_for(k8s_params, kubeconfig=str(path))
    try:
        bad = failed(target.preflight())
        assert bad and all("unreachable" in c.detail or "cannot" in c.detail for c in bad)
        with pytest.raises(InjectionFailed, match="unreachable"):
            target.inject(duration_seconds=30)
    finally:
        target.close()


def test_service_labels_select_the_target_side(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    target = target_for(k8s_params, service_selector={"app.kubernetes.io/part-of": "teei"})
    try:
        assert failed(target.preflight()) == []
        target.inject(duration_seconds=30)
        (obj,) = fake.chaos_objects(NAMESPACE)
        assert obj["spec"]["target"]["selector"] == {
            "namespaces": [NAMESPACE],
            "labelSelectors": {"app.kubernetes.io/part-of": "teei"},
            "podPhaseSelectors": ["Running"],  # not the Evicted nor the Completed pod of the same labels
        }
        recorded = {r["id"] for r in obj["status"]["experiment"]["containerRecords"]}
        assert recorded == {
            f"{NAMESPACE}/{n}"
            for n in (
                "nats-0",
                "nats-1",
                "nats-2",
                "api-gateway-7c9d5b6f4-x2x7k",
                "reporting-5f8b9c7d6-q4kzp",
            )
        }
        assert proxy_status(data_plane["proxy_control_url"])["active"] is True
        assert target.heal() is not None
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
    finally:
        target.close()


# --- 5. pods chosen by labels, judged by state ----------------------------------------------------

CHART_SELECTORS = {
    "api-gateway": {"app.kubernetes.io/name": "api-gateway", "app.kubernetes.io/instance": "teei"},
    "reporting": {"app.kubernetes.io/name": "reporting", "app.kubernetes.io/instance": "teei"},
}


def test_chart_labels_select_the_pods_and_leave_out_nats_box_evicted_and_job_pods(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    """The namespace holds, beside the healthy pods, the chart's nats-box (same name label as NATS), an
    Evicted api-gateway pod, a Completed Job pod of reporting and reporting-db-0: none is judged, none
    is partitioned."""
    target = target_for(k8s_params, service_selectors=CHART_SELECTORS, service_pods=[])
    try:
        checks = target.preflight()
        assert failed(checks) == [], failed(checks)
        by_name = {c.name: c for c in checks}
        nats = next(c for n, c in by_name.items() if n.startswith("NATS pods"))
        assert "app.kubernetes.io/component notin (nats-box)" in nats.name
        assert nats.detail == "nats-0, nats-1, nats-2"
        assert by_name["nats-box not selected"].ok
        gateway = by_name["api-gateway pods running and ready"]
        assert gateway.ok and "ignored: api-gateway-7c9d5b6f4-bvn4r (Evicted)" in gateway.detail
        assert by_name["reporting pods running and ready"].detail == "reporting-5f8b9c7d6-q4kzp"
        target.inject(duration_seconds=30)
        (obj,) = fake.chaos_objects(NAMESPACE)
        recorded = sorted(r["id"].split("/")[1] for r in obj["status"]["experiment"]["containerRecords"])
        assert recorded == [
            "api-gateway-7c9d5b6f4-x2x7k",
            "nats-0",
            "nats-1",
            "nats-2",
            "reporting-5f8b9c7d6-q4kzp",
        ]
        assert obj["spec"]["selector"]["podPhaseSelectors"] == ["Running"]
    finally:
        target.heal()
        target.close()


def test_manifest_shows_the_pods_resolved_against_the_cluster(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    target = target_for(k8s_params, service_selectors=CHART_SELECTORS)
    try:
        before = target.manifest()  # nothing resolved yet: the pods are listed now
        assert before["spec"]["target"]["selector"]["pods"] == {
            NAMESPACE: ["api-gateway-7c9d5b6f4-x2x7k", "reporting-5f8b9c7d6-q4kzp"]
        }
        target.preflight()
        assert target.manifest() == target.last_manifest, "what the server dry run accepted"
    finally:
        target.close()
    assert all("dryRun=All" in p for _, p in fake.mutating_requests()), "nothing but the server dry run"


def test_name_prefixes_match_only_deployment_and_statefulset_pods(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    """The older `service_pods` names: `reporting` is reporting-<hash>-<id>, not reporting-db-0 nor
    reporting-backfill-29104520-k7z2d, and a pod being deleted is not judged."""
    next(p for p in fake.pods if p.name == "api-gateway-7c9d5b6f4-x2x7k").deleting = True
    fake.pods.append(
        FakePod(
            "api-gateway-7c9d5b6f4-qz8wm", service_labels("api-gateway"), NAMESPACE, sidecars=("istio-proxy",)
        )
    )
    target = target_for(k8s_params)
    try:
        checks = {c.name: c for c in target.preflight()}
        gateway = checks["api-gateway pods running and ready"]
        assert gateway.ok and gateway.detail.startswith("api-gateway-7c9d5b6f4-qz8wm; ignored:")
        assert "api-gateway-7c9d5b6f4-x2x7k (terminating)" in gateway.detail
        assert checks["reporting pods running and ready"].detail == "reporting-5f8b9c7d6-q4kzp"
        assert target.last_manifest is not None
        assert target.last_manifest["spec"]["target"]["selector"]["pods"][NAMESPACE] == [
            "api-gateway-7c9d5b6f4-qz8wm",
            "reporting-5f8b9c7d6-q4kzp",
        ]
    finally:
        target.close()


def test_pods_created_after_the_injection_are_reported(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    """Chaos Mesh selects once: a pod the Deployment starts afterwards talks to NATS freely while
    AllInjected stays True."""
    target = target_for(k8s_params, service_selectors=CHART_SELECTORS)
    try:
        target.inject(duration_seconds=60)
        assert target.coverage(fresh=True).uncovered == ()
        fake.pods.append(
            FakePod(
                "reporting-5f8b9c7d6-hx4tv", service_labels("reporting"), NAMESPACE, sidecars=("istio-proxy",)
            )
        )
        fake.pods = [p for p in fake.pods if p.name != "api-gateway-7c9d5b6f4-x2x7k"]
        target._coverage = None  # as if coverage_check_seconds had passed
        status = target.fault_status()
        assert status.active
        assert "not under the fault (created after injection): reporting-5f8b9c7d6-hx4tv" in status.detail
        assert "partitioned pods no longer running: api-gateway-7c9d5b6f4-x2x7k" in status.detail
        assert all(
            o["status"]["conditions"][1] == {"type": "AllInjected", "status": "True"}
            for o in fake.chaos_objects(NAMESPACE)
        ), "Chaos Mesh still says all injected"
    finally:
        target.heal()
        target.close()


# --- 6. logs of pods with sidecars ----------------------------------------------------------------


def test_logs_name_the_container_read_the_previous_one_and_stop_at_limit_bytes(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    reporting = next(p for p in fake.pods if p.name == "reporting-5f8b9c7d6-q4kzp")
    assert reporting.containers == ["reporting", "istio-proxy"]
    reporting.restarts = 1
    reporting.previous_lines = [
        '{"level": "warning", "msg": "duplicate_event", "key": "k-0"}',
        "before the restart",
    ]
    target = target_for(k8s_params)
    try:
        lines = target.service_logs("reporting")
        assert lines[:2] == reporting.previous_lines, "the restarted container's log first"
        assert sum("duplicate_event" in line for line in lines) == 2
        assert not any("envoy" in line for line in lines), "not the sidecar's log"
        logs = [p for m, p in fake.requests if m == "GET" and p.split("?")[0].endswith("/log")]
        assert all("container=reporting" in p and "limitBytes=" in p for p in logs)
        assert sum("previous=true" in p for p in logs) == 1
    finally:
        target.close()
    small = target_for(k8s_params, log_limit_bytes=40)
    try:
        lines = small.service_logs("reporting")
        assert lines and sum(len(line) for line in lines) <= 2 * 40, "40 bytes per read (previous + current)"
    finally:
        small.close()
    gateway = next(p for p in fake.pods if p.name == "api-gateway-7c9d5b6f4-x2x7k")
    gateway.container, gateway.log_file, gateway.log_lines = "gateway", None, ["accepted"]
    target = target_for(k8s_params)
    try:
        with pytest.raises(ProbeError, match=r"containers: \['gateway', 'istio-proxy'\].*service_containers"):
            target.service_logs("api-gateway")
    finally:
        target.close()
    named = target_for(k8s_params, service_containers={"api-gateway": "gateway"})
    try:
        assert named.service_logs("api-gateway") == ["accepted"]
    finally:
        named.close()


# --- 9. RBAC and Chaos Mesh's namespace filter ---------------------------------------------------


def test_diagnostic_permissions_are_checked_but_not_fatal(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    for verb, resource, sub in (
        ("list", "events", ""),
        ("get", "namespaces", ""),
        ("create", "pods", "portforward"),
    ):
        fake.deny(verb, resource, subresource=sub)
    target = target_for(k8s_params)
    try:
        checks = target.preflight()
        assert failed(checks) == [], failed(checks)
        denied = {c.name: c.detail for c in checks if not c.ok and c.name.startswith("rbac:")}
        assert set(denied) == {
            f"rbac: list events in namespace {NAMESPACE}",
            f"rbac: get namespaces in namespace {NAMESPACE}",
            f"rbac: create pods/portforward in namespace {NAMESPACE}",
        }
        assert "kubectl port-forward" in denied[f"rbac: create pods/portforward in namespace {NAMESPACE}"]
        assert "not checked" in next(c.detail for c in checks if c.name == "chaos mesh namespace filter")
        target.inject(duration_seconds=30)
        assert target.fault_status().active
    finally:
        target.heal()
        target.close()


def test_chaos_mesh_namespace_filter_is_checked(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    target = target_for(k8s_params, chaos_filter_namespace=True)
    try:
        bad = {c.name: c.detail for c in failed(target.preflight())}
        assert (
            f"kubectl annotate namespace {NAMESPACE} chaos-mesh.org/inject=enabled"
            in bad["chaos mesh namespace filter"]
        )
        fake.namespace_annotations[NAMESPACE] = {"chaos-mesh.org/inject": "enabled"}
        assert failed(target.preflight()) == []
    finally:
        target.close()
    relaxed = target_for(k8s_params)
    try:
        fake.namespace_annotations.clear()
        shown = next(c for c in relaxed.preflight() if c.name == "chaos mesh namespace filter")
        assert shown.ok and not shown.fatal and "enableFilterNamespace" in shown.detail
    finally:
        relaxed.close()


# --- 2. service readings from Prometheus ----------------------------------------------------------


class _Metrics:
    """A /metrics endpoint whose text the test changes (Prometheus scrapes it with honor_labels)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.text = ""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = owner.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


def _readings(namespace: str, *, buffer: bool = True) -> str:
    lines = []
    for job in ("api-gateway", "reporting"):
        lines.append(f'nats_connected{{namespace="{namespace}",job="{job}"}} 1')
        lines.append(f'http_requests_total{{namespace="{namespace}",job="{job}",code="202"}} 10')
    if buffer:
        lines.append(f'event_buffer_size{{namespace="{namespace}",job="api-gateway"}} 0')
        lines.append(f'event_buffer_capacity{{namespace="{namespace}",job="api-gateway"}} 10000')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus_readings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import subprocess

    from fake_apiserver import free_port

    binary = find_binary("prometheus")  # needs Prometheus (the lab's lookup: GAMEDAY_LAB_WITHOUT honoured)
    if binary is None:
        pytest.skip("prometheus not available (Debian package prometheus; or hidden by GAMEDAY_LAB_WITHOUT)")
    metrics = _Metrics()
    tmp = tmp_path_factory.mktemp("prom")
    port = free_port()
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: readings\n    honor_labels: true\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics.port}']}}]\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", metrics
    finally:
        proc.terminate()
        proc.wait(10)
        metrics.server.shutdown()


def _query_count(url: str, promql: str) -> int:
    import json
    import urllib.parse
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=2
        ) as r:
            return len(json.loads(r.read())["data"]["result"])
    except OSError:
        return -1


def _check(checks: list[Any], name: str) -> Any:
    return next(c for c in checks if c.name == name)


READINGS = "service readings for the stop conditions"
SCOPED = "service readings scoped to the namespace"


def test_service_readings_come_from_prometheus(
    fake: FakeApiServer, k8s_params: dict[str, Any], prometheus_readings: Any
) -> None:
    """What the runbook reads for the stop conditions, read the same way (``prometheus_selectors``,
    default ``job="<service>"``): present, missing (fatal), and not scoped to the namespace (flagged)."""
    url, metrics = prometheus_readings
    scoped = {s: f'namespace="{NAMESPACE}",job="{s}"' for s in ("api-gateway", "reporting")}
    metrics.text = _readings(NAMESPACE) + _readings("teei-prod")  # a shared Prometheus: two environments
    wait_for(lambda: _query_count(url, "event_buffer_size") == 2, 30, 0.2)
    target = target_for(k8s_params, prometheus_url=url, prometheus_selectors=scoped)
    try:
        checks = target.preflight()
        assert _check(checks, READINGS).ok
        assert f'nats_connected{{namespace="{NAMESPACE}",job="reporting"}}' in _check(checks, READINGS).detail
        assert SCOPED not in [c.name for c in checks]
        metrics.text = _readings(NAMESPACE, buffer=False) + _readings(
            "teei-prod"
        )  # our gateway's buffer: gone
        wait_for(lambda: _query_count(url, f'event_buffer_size{{namespace="{NAMESPACE}"}}') == 0, 30, 0.2)
        readings = _check(target.preflight(), READINGS)
        assert not readings.ok and readings.fatal
        assert (
            f'no event_buffer_size{{namespace="{NAMESPACE}",job="api-gateway"}}, '
            f'event_buffer_capacity{{namespace="{NAMESPACE}",job="api-gateway"}}:' in readings.detail
        )
        assert "stop conditions would be blind" in readings.detail
    finally:
        target.close()
    # the default selectors (job only) find teei-prod's gateway: readable, but not ours alone
    unscoped = target_for(k8s_params, prometheus_url=url)
    try:
        checks = unscoped.preflight()
        assert _check(checks, READINGS).ok
        flagged = _check(checks, SCOPED)
        assert not flagged.ok and not flagged.fatal and "other environments" in flagged.detail
    finally:
        unscoped.close()
    # the team's ServiceMonitor labels the gateway app="gateway": prometheus_selectors says so
    metrics.text = _readings(NAMESPACE).replace('job="api-gateway"', 'app="gateway"')
    wait_for(
        lambda: _query_count(url, f'event_buffer_size{{namespace="{NAMESPACE}",app="gateway"}}') == 1, 30, 0.2
    )
    selected = target_for(
        k8s_params,
        prometheus_url=url,
        prometheus_selectors={**scoped, "api-gateway": f'namespace="{NAMESPACE}",app="gateway"'},
    )
    try:
        assert _check(selected.preflight(), READINGS).ok
    finally:
        selected.close()
    metrics.text = _readings(NAMESPACE, buffer=False)
    wait_for(lambda: _query_count(url, f'event_buffer_size{{namespace="{NAMESPACE}"}}') == 0, 30, 0.2)
    direct = target_for(
        k8s_params,
        prometheus_url=url,
        prometheus_selectors=scoped,
        service_metrics={"api-gateway": "http://gw/m"},
    )
    try:
        readings = _check(direct.preflight(), READINGS)
        assert (
            not readings.ok
            and not readings.fatal
            and "scraped directly instead: api-gateway" in readings.detail
        )
    finally:
        direct.close()
