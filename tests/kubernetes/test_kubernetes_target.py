"""The Kubernetes target against the fake API server, whose Chaos Mesh stand-in really cuts the lab's
partition proxy in front of a real nats-server: what a facilitator would check is whether NATS still
answers through the proxy."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import NAMESPACE, FakeApiServer, nats_reachable_through, proxy_status, wait_for

from gamedaylib import chaos
from gamedaylib.exceptions import InjectionFailed, ProbeError, ProductionGuard
from gamedaylib.journal import utcnow
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
    assert dry.ok and "duration 50s" in dry.detail  # rehearsal: 20 s partition + 30 s margin
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
        assert obj["spec"]["duration"] == "1m"
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
    wait_for(lambda: proxy_status(data_plane["proxy_control_url"])["active"] is False, 8)
    healed_after = (utcnow() - t0).total_seconds()
    assert healed_after < 3 + 2, (
        "healed at the duration, by the controller (the proxy backstop is 30 s later)"
    )
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
    assert "reporting-5f8b9c7d6-q4kzp (Running, not ready)" in bad["reporting pods running and ready"]


def test_production_namespace_needs_confirmation(k8s_params: dict[str, Any]) -> None:
    with pytest.raises(ProductionGuard, match="confirm_production"):
        target_for(k8s_params, namespace="teei-prod")


def test_dry_run_creates_nothing(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    target = target_for(k8s_params, dry_run=True, namespace=NAMESPACE)
    try:
        assert failed(target.preflight()) == []
        target.inject(duration_seconds=50)
        assert target.last_manifest is not None and target.last_manifest["spec"]["duration"] == "50s"
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
        with pytest.raises(ProbeError, match="no pod of 'audit-logger'"):
            target.service_logs("audit-logger")
    finally:
        target.close()
    assert Path(data_plane["lab_dir"], "logs", "reporting.log").exists()


# --- the files a team applies to its cluster ----------------------------------------------------


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


REPO = Path(__file__).resolve().parents[2]


def test_rbac_grants_exactly_what_the_target_asks_for() -> None:
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
        (p.verb, p.group, p.resource + (f"/{p.subresource}" if p.subresource else "")) for p in PERMISSIONS
    }
    assert granted == needed
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert binding["subjects"][0]["name"] == docs["ServiceAccount"]["metadata"]["name"]
    assert {d["metadata"]["namespace"] for d in docs.values()} == {"teei-prod"}


def test_prometheusrule_embeds_the_rule_file(tmp_path: Path) -> None:
    import shutil
    import subprocess

    import yaml

    (rule,) = _yaml_docs(REPO / "deploy" / "prometheusrule-gameday-001.yaml")
    plain = yaml.safe_load(
        (REPO / "gamedaylib" / "gamedays" / "nats_partition" / "monitoring" / "gameday-001.rules.yml")
        .read_text(encoding="utf-8")
    )
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == plain["groups"], (
        "regenerate deploy/prometheusrule-gameday-001.yaml from the rule file"
    )
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not on PATH (Debian package prometheus; .ci/run installs it)")
    extracted = tmp_path / "from-prometheusrule.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    done = subprocess.run(
        [promtool, "check", "rules", str(extracted)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_params_dry_run_against_a_playbook_shaped_cluster(
    fake: FakeApiServer, kubeconfig: Path, data_plane: dict[str, Any]
) -> None:
    """params/teei-prod.yaml as shipped is refused (production guard); as a dry run it reads the
    cluster and has the API server check the fault, creating nothing."""
    from fake_apiserver import pods_for_lab

    from gamedaylib.parameters import load_params_file, validate

    fake.pods = pods_for_lab(data_plane["lab_dir"], "teei-prod")
    shipped = load_params_file(str(REPO / "params" / "teei-prod.yaml"))
    local = {"kubeconfig": str(kubeconfig), "prometheus_url": "", "alertmanager_url": ""}
    with pytest.raises(ProductionGuard, match="teei-prod"):
        KubernetesTarget.from_params(validate({**shipped, **local}))
    target = KubernetesTarget.from_params(validate({**shipped, **local, "dry_run": True}))
    try:
        checks = target.preflight()
        assert failed(checks) == [], failed(checks)
        target.inject(duration_seconds=900)
    finally:
        target.close()
    assert target.last_manifest is not None and target.last_manifest["spec"]["duration"] == "15m"
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
        }
        assert proxy_status(data_plane["proxy_control_url"])["active"] is True
        assert target.heal() is not None
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
    finally:
        target.close()
