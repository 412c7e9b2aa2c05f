"""GAMEDAY-002's CloudNativePG side against the fake API server, whose CloudNativePG stand-in runs a pair
of instances with chosen timings (``fake_instances.ScriptedPair``), and a real Prometheus scraping the
instance pods as the Cluster's PodMonitor would. What a facilitator would check: which pod was killed,
when, who is primary now, whether two instances ever accepted writes, and what a refusal says."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cluster_prometheus import ClusterPrometheus
from fake_apiserver import NAMESPACE, FakeApiServer, FakeCnpgCluster, wait_for
from fake_instances import PodNetwork, ScriptedPair

from gamedaylib import chaos
from gamedaylib.exceptions import HealFailed, InjectionFailed, InvalidParameters, ProbeError
from gamedaylib.gamedays.postgres_failover.database import ClusterState
from gamedaylib.gamedays.postgres_failover.params import FailoverParams
from gamedaylib.lab.processes import monitoring_binaries
from gamedaylib.parameters import as_dict, validate
from gamedaylib.targets import cnpg
from gamedaylib.targets.base import Fault
from gamedaylib.targets.kubernetes import KubernetesTarget

pytestmark = pytest.mark.timeout(120)

CLUSTER = "events-db"
PODS = ("events-db-1", "events-db-2")
DSN_ENV = "GAMEDAY_CNPG_TEST_DSN"


@pytest.fixture(scope="module")
def network() -> Iterator[PodNetwork]:
    with PodNetwork() as net:
        yield net


@pytest.fixture(scope="module")
def prometheus(network: PodNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPrometheus]:
    """The cluster's Prometheus (a real one): a CloudNativePG cluster's replicas, lag and writable
    instances are read there. Without Prometheus (or hidden by GAMEDAY_LAB_WITHOUT) these tests skip."""
    if monitoring_binaries()[0] is None:
        pytest.skip("no Prometheus (or hidden by GAMEDAY_LAB_WITHOUT): the CloudNativePG side reads Prometheus")
    prom = ClusterPrometheus(tmp_path_factory.mktemp("cnpg-prometheus"), scrape_interval="500ms")
    prom.scrape_cnpg(network, NAMESPACE, CLUSTER, PODS)
    with prom:
        yield prom


@dataclasses.dataclass
class Env:
    fake: FakeApiServer
    cluster: FakeCnpgCluster
    pair: ScriptedPair
    params: dict[str, Any]


def params_for(fake: FakeApiServer, tmp_path: Path, prometheus_url: str, **extra: Any) -> dict[str, Any]:
    """GAMEDAY-002's parameters validated by its own rules, as ``make_fault``/``make_reader`` get them."""
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    raw = {
        "target": "kubernetes",
        "namespace": NAMESPACE,
        "kubeconfig": str(kubeconfig),
        "kube_context": "fake-cluster",
        "run_id": f"cnpg-{tmp_path.name[-20:].lower().replace('_', '-')}",
        "prometheus_url": prometheus_url,
        "events_dsn_env": DSN_ENV,
        **extra,
    }
    return as_dict(validate(FailoverParams, raw))


@pytest.fixture()
def env(network: PodNetwork, prometheus: ClusterPrometheus, tmp_path: Path) -> Iterator[Env]:
    pair = ScriptedPair(failover_after=0.5, rejoin_after=0.5)
    with FakeApiServer() as fake:
        cluster = fake.add_cnpg_cluster(CLUSTER, pair, network=network, recreate_delay=0.8, start_delay=0.3)
        yield Env(fake, cluster, pair, params_for(fake, tmp_path, prometheus.url))
    for pod in PODS:  # the next test's fake registers its own pods
        network.unregister(NAMESPACE, pod)


def parts(env: Env, **overrides: Any) -> tuple[KubernetesTarget, cnpg.CnpgDatabase, cnpg.CnpgPrimaryKill]:
    params = {**env.params, **overrides}
    target = KubernetesTarget.from_params(params)
    fault = cnpg.cnpg_primary_kill(target, params)
    fault.settings = dataclasses.replace(
        fault.settings, heal_timeout_seconds=20.0, inject_timeout_seconds=10.0
    )
    return target, cnpg.cnpg_database(target, params), fault


def settled(db: cnpg.CnpgDatabase, primary: str = "events-db-1") -> ClusterState:
    """Wait until Prometheus has scraped this test's pods and the cluster reads healthy."""

    def ok() -> Any:
        try:
            state = db.state()
        except ProbeError:
            return None
        return (
            state if state.primary == primary and state.writable == (primary,) and state.streaming else None
        )

    return wait_for(ok, 20, 0.2)


def check(checks: list[Any], name: str) -> Any:
    found = [c for c in checks if c.name.startswith(name)]
    assert found, f"no check {name!r} in {[c.name for c in checks]}"
    return found[0]


# --- the database: state, writes, pre-flight ------------------------------------------------------


def test_state_reads_the_cluster_status_and_the_instances_metrics(env: Env) -> None:
    target, db, _ = parts(env)
    try:
        state = settled(db)
    finally:
        db.close()
        target.close()
    assert state.primary == "events-db-1" and state.timeline == 1
    assert state.writable == ("events-db-1",), "one instance out of recovery"
    assert state.streaming == ("events-db-2",), "the replica's WAL receiver is up and the primary lists it"
    assert "Cluster in healthy state" in state.detail


def test_preflight_of_a_healthy_cluster_refuses_only_the_missing_dsn(env: Env) -> None:
    os.environ.pop(DSN_ENV, None)
    target, db, fault = parts(env)
    try:
        settled(db)
        checks = fault.preflight()
    finally:
        db.close()
        target.close()
    refused = [c for c in checks if c.fatal and not c.ok]
    assert [c.name for c in refused] == [f"${DSN_ENV} set (the -rw Service's DSN)"], refused
    assert "events-db-rw." in refused[0].detail, "it says which DSN to export"
    assert (
        check(checks, "primary pod found").ok and check(checks, "the pod is the Cluster's current primary").ok
    )
    assert check(checks, "PodChaos accepted (server dry run)").ok
    assert check(checks, "rbac: patch clusters/status.postgresql.cnpg.io").ok
    assert check(checks, "every replica streaming").ok
    assert check(checks, "synchronous replication configured").ok
    assert env.fake.chaos_objects(plural="podchaos") == [], "the dry run stored nothing"
    assert env.pair.kills == []


def test_a_write_that_fails_never_shows_the_dsn(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = "postgresql://teei:s3cr3t-pw-42@127.0.0.1:9/events?application_name=gameday"
    monkeypatch.setenv(DSN_ENV, dsn)
    target, db, fault = parts(env)
    try:
        ok, why = db.write()
        checks = fault.database.preflight()
    finally:
        db.close()
        target.close()
    assert not ok and why
    written = check(checks, "a write through the -rw Service is acknowledged")
    assert not written.ok and written.fatal
    for text in (why, written.detail):
        assert "s3cr3t-pw-42" not in text and dsn not in text


def test_a_cluster_the_identity_may_not_read_is_refused_with_the_rbac_fix(env: Env) -> None:
    env.fake.deny("get", "clusters", group=cnpg.GROUP)
    target, db, fault = parts(env)
    try:
        checks = fault.preflight()
        with pytest.raises(ProbeError, match="403"):
            db.state()
    finally:
        db.close()
        target.close()
    rbac = check(checks, "rbac: get clusters.postgresql.cnpg.io")
    assert not rbac.ok and rbac.fatal and "deploy/rbac.yaml" in rbac.detail
    readable = check(checks, f"Cluster {NAMESPACE}/{CLUSTER}")
    assert not readable.ok and readable.fatal
    assert "not readable by this identity (RBAC)" in readable.detail and "deploy/rbac.yaml" in readable.detail


def test_a_cluster_that_does_not_exist_is_named(env: Env) -> None:
    target, db, fault = parts(
        env,
        cnpg_cluster="orders-db",
        primary_selector={"cnpg.io/cluster": "orders-db", "cnpg.io/instanceRole": "primary"},
    )
    try:
        checks = fault.preflight()
    finally:
        db.close()
        target.close()
    found = check(checks, "primary pod found")
    assert not found.ok and found.fatal and "no pod in" in found.detail and "orders-db" in found.detail
    readable = check(checks, f"Cluster {NAMESPACE}/orders-db")
    assert not readable.ok and "no Cluster" in readable.detail and "cnpg_cluster" in readable.detail


def test_a_selector_for_another_cluster_is_refused_before_anything() -> None:
    problems = cnpg.selector_problems(
        {
            "cnpg_cluster": "events-db",
            "primary_selector": {"cnpg.io/cluster": "orders-db", "cnpg.io/instanceRole": "primary"},
        }
    )
    assert "another cluster" in problems["primary_selector"]
    assert (
        "kills the primary"
        in cnpg.selector_problems(
            {
                "cnpg_cluster": "events-db",
                "primary_selector": {"cnpg.io/cluster": "events-db", "cnpg.io/instanceRole": "replica"},
            }
        )["primary_selector"]
    )
    assert (
        cnpg.selector_problems(
            {
                "cnpg_cluster": "events-db",
                "primary_selector": {"cnpg.io/cluster": "events-db", "cnpg.io/instanceRole": "primary"},
            }
        )
        == {}
    )


def test_prometheus_without_the_clusters_series_is_refused(env: Env) -> None:
    target, db, fault = parts(
        env, prometheus_selectors={CLUSTER: 'namespace="teei-prod",pod=~"events-db-[0-9]+"'}
    )
    try:
        checks = fault.database.preflight()
        with pytest.raises(ProbeError, match="no cnpg_pg_replication"):
            db.state()
    finally:
        db.close()
        target.close()
    blind = check(checks, "Prometheus holds the cluster's cnpg_* series")
    assert (
        not blind.ok
        and blind.fatal
        and "would be blind" in blind.detail
        and "enablePodMonitor" in blind.detail
    )


# --- the primary's pod in odd states --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"phase": "Pending", "ready": False}, "Pending"),
        ({"deleting": True}, "Terminating"),
        ({"waiting_reason": "CrashLoopBackOff", "ready": False, "restarts": 4}, "CrashLoopBackOff"),
    ],
    ids=["pending", "terminating", "crashloop"],
)
def test_a_primary_pod_that_does_not_serve_refuses_the_kill(
    env: Env, fields: dict[str, Any], said: str
) -> None:
    env.cluster.hold("events-db-1", **fields)
    target, db, fault = parts(env)
    try:
        wait_for(lambda: said in check(fault.preflight(), "primary pod found").detail, 5, 0.2)
        found = check(fault.preflight(), "primary pod found")
        with pytest.raises(InjectionFailed, match=said):
            fault.inject(deadline_seconds=30)
    finally:
        db.close()
        target.close()
    assert not found.ok and found.fatal and "not serving" in found.detail
    assert env.fake.chaos_objects(plural="podchaos") == [] and env.pair.kills == []


def test_two_pods_labelled_primary_refuse_a_kill_in_mode_one(env: Env) -> None:
    env.cluster.hold("events-db-2", labels={**cnpg_labels("events-db-2"), "cnpg.io/instanceRole": "primary"})
    target, db, fault = parts(env)
    try:

        def two() -> Any:
            found = check(fault.preflight(), "primary pod found")
            return found if "2 pods" in found.detail else None

        found = wait_for(two, 5, 0.2)
    finally:
        db.close()
        target.close()
    assert not found.ok and "at random" in found.detail


def cnpg_labels(pod: str) -> dict[str, str]:
    from fake_apiserver import cnpg_labels as labels

    return labels(CLUSTER, pod, "replica")


# --- the kill -------------------------------------------------------------------------------------


def test_the_kill_goes_through_a_podchaos_and_the_cluster_fails_over(env: Env) -> None:
    target, db, fault = parts(env)
    assert isinstance(fault, Fault)
    try:
        settled(db)
        t0 = fault.inject(deadline_seconds=30)
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            state = db.state()
            seen.append(state)
            if state.writable == ("events-db-2",) and "events-db-1" in state.streaming:
                break
            time.sleep(0.1)
        assert fault.status().active, "a kill is in force until the instance is back"
        back = fault.heal()
        assert fault.heal() is None, "safe twice"
        status = fault.status()
    finally:
        db.close()
        target.close()
    # the API saw the victim gone: T+0 is right after the moment the pod's processes died
    ((node, died),) = env.pair.kills
    assert node == "pg1" and fault.killed == "events-db-1"
    assert died <= t0 < died + timedelta(seconds=2)
    obj_events = [e for e in env.fake.events if e["involvedObject"]["kind"] == "PodChaos"]
    assert any(
        e["reason"] == "Applied" and e["message"].endswith(f"{NAMESPACE}/events-db-1") for e in obj_events
    )
    assert env.fake.chaos_objects(plural="podchaos") == [], "heal deleted the PodChaos"
    # the cluster as the readings saw it: failing over (no primary), then events-db-2 on timeline 2, and the
    # killed pod's last samples (it was the primary) never counted as a second writable instance
    assert max(len(s.writable) for s in seen) == 1
    assert any(s.primary is None for s in seen)
    assert (
        seen[-1].primary == "events-db-2" and seen[-1].timeline == 2 and seen[-1].writable == ("events-db-2",)
    )
    assert "events-db-1" in seen[-1].streaming, "the old primary rejoined as a replica"
    assert back is not None and back > t0 and not status.active
    body = env.fake.cnpg_cluster(CLUSTER)["status"]
    assert (body["currentPrimary"], body["targetPrimary"], body["timelineID"]) == (
        "events-db-2",
        "events-db-2",
        2,
    )


def test_a_kill_chaos_mesh_cannot_apply_is_not_t0_and_is_removed(env: Env) -> None:
    env.fake.fail_apply.add("events-db-1")
    target, db, fault = parts(env)
    fault.settings = dataclasses.replace(fault.settings, inject_timeout_seconds=2.0)
    try:
        with pytest.raises(InjectionFailed) as err:
            fault.inject(deadline_seconds=30)
    finally:
        db.close()
        target.close()
    assert "not killed within 2s" in str(err.value) and "chaos-daemon" in str(err.value)
    assert "the PodChaos was deleted" in str(err.value)
    assert env.fake.chaos_objects(plural="podchaos") == [] and env.pair.kills == []


def test_another_runs_podchaos_with_our_name_is_left_untouched(env: Env) -> None:
    target, db, fault = parts(env)
    try:
        other = copy_body(fault.body)
        env.fake.put_chaos(other, plural="podchaos")  # as if another run with this run_id had created it
        with pytest.raises(InjectionFailed, match="already exists"):
            fault.inject(deadline_seconds=30)
        assert fault.heal() is None
    finally:
        db.close()
        target.close()
    assert not any(m == "DELETE" for m, _ in env.fake.requests)


def copy_body(body: dict[str, Any]) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(body)
    out["kind"] = "PodChaos"
    return out


def test_a_dry_run_sends_the_kill_with_dry_run_all_and_kills_nothing(env: Env) -> None:
    target, db, fault = parts(env, dry_run=True)
    try:
        at = fault.inject(deadline_seconds=30)
        assert fault.heal() is None
    finally:
        db.close()
        target.close()
    assert at is not None
    assert [p for m, p in env.fake.requests if m == "POST" and "podchaos" in p] and all(
        "dryRun=All" in p for m, p in env.fake.requests if m == "POST" and "podchaos" in p
    )
    assert env.fake.chaos_objects(plural="podchaos") == [] and env.pair.kills == []


def test_a_token_that_expires_mid_run_is_read_again_and_heal_still_works(env: Env, tmp_path: Path) -> None:
    target, db, fault = parts(env)
    kubeconfig = Path(env.params["kubeconfig"])
    try:
        settled(db)
        fault.inject(deadline_seconds=30)
        env.fake.expire_token()  # nobody renewed it yet
        with pytest.raises(ProbeError, match="401"):
            db.state()
        with pytest.raises(HealFailed, match="401") as err:
            fault.heal()
        assert "kubectl create token gameday" in str(err.value)
        env.fake.write_kubeconfig(kubeconfig, namespace=NAMESPACE)  # the facilitator puts a new token in
        assert wait_for(lambda: db.state().primary == "events-db-2", 10, 0.2)
        assert fault.heal() is not None, "heal goes on once the kubeconfig has a valid token"
    finally:
        db.close()
        target.close()
    assert env.fake.chaos_objects(plural="podchaos") == []


# --- the rollback's manual promotion --------------------------------------------------------------


def test_promotion_patches_the_status_like_kubectl_cnpg_promote_through_conflicts(env: Env) -> None:
    env.pair.failover_after = None  # the operator does not fail over by itself
    env.cluster.recreate_delay = 60.0  # ... and the killed pod stays away (a node gone)
    target, db, fault = parts(env)
    try:
        settled(db)
        fault.inject(deadline_seconds=30)
        time.sleep(1.5)
        assert (
            db.state().primary is None and env.fake.cnpg_cluster(CLUSTER)["status"]["phase"] == "Failing over"
        )
        env.cluster.bump_before_patch = (
            2  # the operator writes the status twice meanwhile: 409, 409, then it goes
        )
        view = fault.cluster.promote("events-db-2")
        assert view.target_primary == "events-db-2" and view.phase == cnpg.PHASE_SWITCHOVER
        state = wait_for(
            lambda: (s := db.state()).writable == ("events-db-2",) and s.primary == "events-db-2" and s, 10, 0.2
        )
        env.cluster.recreate_delay = 0.0
        fault.heal()
    finally:
        db.close()
        target.close()
    conflicts = [c for m, p, c in env.fake.answers if m == "PATCH" and p.endswith("/status")]
    assert conflicts == [409, 409, 200]
    patch = env.cluster.status_patches[-1]
    assert patch["metadata"]["resourceVersion"], "the optimistic lock: the version it read"
    assert patch["status"]["targetPrimary"] == "events-db-2"
    assert patch["status"]["phaseReason"] == "Switching over to events-db-2"
    assert datetime.fromisoformat(
        patch["status"]["targetPrimaryTimestamp"].replace("Z", "+00:00")
    ) <= datetime.now(timezone.utc)
    assert env.pair.promotions == ["pg2"] and state.timeline == 2 and state.writable == ("events-db-2",)


def test_the_rollback_promotes_the_surviving_replica_and_waits_for_a_write(env: Env) -> None:
    env.pair.failover_after = None
    env.cluster.recreate_delay = 60.0
    os.environ.pop(DSN_ENV, None)
    target, db, fault = parts(env)
    try:
        settled(db)
        fault.inject(deadline_seconds=30)
        with pytest.raises(HealFailed) as err:
            fault.promote(timeout=3.0)
        env.cluster.recreate_delay = 0.0
        fault.heal()
    finally:
        db.close()
        target.close()
    # promoted (the status patch went through, the operator promoted pg2) but no write could confirm it
    assert env.pair.promotions == ["pg2"]
    assert "events-db-2 promoted (targetPrimary) but not writable within 3s" in str(err.value)
    assert f"${DSN_ENV} is not set" in str(err.value)


def test_promotion_forbidden_by_rbac_says_so(env: Env) -> None:
    env.fake.deny("patch", "clusters", group=cnpg.GROUP, subresource="status")
    target, db, fault = parts(env)
    try:
        with pytest.raises(HealFailed, match="403") as err:
            fault.cluster.promote("events-db-2")
    finally:
        db.close()
        target.close()
    assert "deploy/rbac.yaml" in str(err.value) and env.pair.promotions == []


def test_the_rollback_restarts_reporting_as_kubectl_rollout_restart_does(env: Env) -> None:
    """Rollback step 3 (reporting did not reconnect): the Deployment's pod template gets a fresh
    restartedAt annotation, so that its pods are replaced; without the Deployment, or without the
    permission, the error names the command to run by hand."""
    target, db, fault = parts(env)
    try:
        with pytest.raises(HealFailed) as missing:
            fault.restart_consumer()
        env.fake.add_deployment(NAMESPACE, "reporting")
        said = fault.restart_consumer()
        env.fake.deny("patch", "deployments", group="apps")
        with pytest.raises(HealFailed, match="403") as denied:
            fault.restart_consumer()
    finally:
        db.close()
        target.close()
    fix = f"kubectl -n {NAMESPACE} rollout restart deployment/reporting"
    assert "404" in str(missing.value) and fix in str(missing.value)
    assert fix in str(denied.value)
    deployment = env.fake.deployments[(NAMESPACE, "reporting")]
    stamp = deployment["spec"]["template"]["metadata"]["annotations"][cnpg.RESTARTED_AT]
    assert deployment["metadata"]["generation"] == 2, "patched once: the denied patch changed nothing"
    assert abs((datetime.fromisoformat(stamp.replace("Z", "+00:00")) - datetime.now(timezone.utc)).total_seconds()) < 60
    assert "deployment/reporting" in said and stamp in said
    patches = [p for m, p in env.fake.requests if m == "PATCH" and "/deployments/" in p]
    assert patches and all(p.startswith(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/reporting") for p in patches)


# --- the readings' rules (pure) -------------------------------------------------------------------


def _pod(name: str, created: datetime, *, deleting: bool = False) -> cnpg.InstancePod:
    return cnpg.InstancePod(name, f"uid-{name}", created, "Running", True, deleting, None)


def _view(primary: str | None, phase: str = cnpg.PHASE_HEALTHY) -> cnpg.ClusterView:
    return cnpg.ClusterView(CLUSTER, primary, primary, phase, "", 3, 2, 2, PODS, "7", 1)


def test_a_killed_primarys_last_samples_never_make_a_second_primary() -> None:
    now = datetime.now(timezone.utc)
    old = cnpg.InstanceMetrics("events-db-1", now - timedelta(seconds=2), 1, 0, 0, 0, 1)
    new = cnpg.InstanceMetrics("events-db-2", now, 1, 0, 0, 0, 0)
    recreated = _pod("events-db-1", now - timedelta(seconds=1))
    survivor = _pod("events-db-2", now - timedelta(hours=1))
    metrics = {"events-db-1": old, "events-db-2": new}
    assert cnpg.cluster_state(_view("events-db-2"), [survivor], metrics).writable == ("events-db-2",), (
        "pod gone"
    )
    assert cnpg.cluster_state(_view("events-db-2"), [recreated, survivor], metrics).writable == (
        "events-db-2",
    ), "a sample older than the pod belongs to the killed incarnation"
    deleting = _pod("events-db-1", now - timedelta(hours=1), deleting=True)
    assert cnpg.cluster_state(_view("events-db-2"), [deleting, survivor], metrics).writable == (
        "events-db-2",
    )
    # two instances of today out of recovery is a split brain, and it is counted
    fresh = cnpg.InstanceMetrics("events-db-1", now, 1, 0, 0, 0, 1)
    both = cnpg.cluster_state(
        _view("events-db-2"),
        [_pod("events-db-1", now - timedelta(hours=1)), survivor],
        {"events-db-1": fresh, "events-db-2": new},
    )
    assert both.writable == ("events-db-1", "events-db-2")


def test_no_primary_while_the_operator_changes_it() -> None:
    now = datetime.now(timezone.utc)
    pods = [_pod(p, now - timedelta(hours=1)) for p in PODS]
    failing = dataclasses.replace(_view("events-db-1", cnpg.PHASE_FAILOVER), target_primary="events-db-2")
    assert cnpg.cluster_state(failing, pods, {}).primary is None
    assert cnpg.cluster_state(_view("events-db-1"), pods[1:], {}).primary is None, "its pod is gone"
    assert cnpg.cluster_state(_view("events-db-1"), pods, {}).primary == "events-db-1"


def test_the_params_reach_the_settings(env: Env) -> None:
    target = KubernetesTarget.from_params(env.params)
    try:
        settings = cnpg.CnpgSettings.from_params(env.params, target)
        with pytest.raises(InvalidParameters, match="primary_selector"):
            cnpg.CnpgSettings.from_params({**env.params, "cnpg_cluster": "orders-db"}, target)
    finally:
        target.close()
    assert settings.selector == f'namespace="{NAMESPACE}",pod=~"events-db-[0-9]+"'
    assert settings.events_dsn_env == DSN_ENV and settings.run_id == env.params["run_id"]
    assert chaos.chaos_name(settings.run_id, "postgres-primary-kill").startswith(
        "postgres-primary-kill-cnpg-"
    )


def test_the_example_params_dry_run_against_a_playbook_shaped_cluster(tmp_path: Path) -> None:
    """params/teei-prod-postgres-failover.yaml as shipped, pointed at the fake cluster: refused without
    confirmation, and as a dry run it finds the primary, has the API server check the PodChaos, and kills
    nothing."""
    from gamedaylib.exceptions import ProductionGuard
    from gamedaylib.parameters import load_params_file

    repo = Path(__file__).resolve().parents[2]
    shipped = load_params_file(str(repo / "params" / "teei-prod-postgres-failover.yaml"))
    assert shipped["namespace"] == "teei-prod" and shipped["cnpg_cluster"] == "events-db"
    assert cnpg.selector_problems(shipped) == {}
    pair = ScriptedPair()
    with FakeApiServer() as fake:
        fake.add_cnpg_cluster("events-db", pair, namespace="teei-prod")
        kubeconfig = fake.write_kubeconfig(
            tmp_path / "kubeconfig", context="teei-prod", namespace="teei-prod"
        )
        raw = {**shipped, "kubeconfig": str(kubeconfig), "run_id": "20261128T033000Z-ab12"}
        with pytest.raises(ProductionGuard):
            KubernetesTarget.from_params(as_dict(validate(FailoverParams, raw)))
        params = as_dict(validate(FailoverParams, {**raw, "dry_run": True}))
        target = KubernetesTarget.from_params(params)
        try:
            fault = cnpg.cnpg_primary_kill(target, params)
            checks = fault.preflight()
            fault.inject(deadline_seconds=params["promote_deadline_seconds"])
        finally:
            fault.database.close()
            target.close()
        body = fault.body
        assert (
            check(checks, "primary pod found").ok and check(checks, "PodChaos accepted (server dry run)").ok
        )
        assert body["metadata"]["name"] == "postgres-primary-kill-20261128t033000z-ab12"
        assert body["metadata"]["namespace"] == "teei-prod" and body["spec"]["selector"]["namespaces"] == [
            "teei-prod"
        ]
        assert fake.chaos_objects(plural="podchaos") == [] and pair.kills == []
        assert not [r for r in fake.mutating_requests() if "dryRun=All" not in r[1]], (
            "a dry run changes nothing"
        )
