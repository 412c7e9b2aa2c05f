"""A Chaos Mesh object's life through the fake API server, whose controller behaves like Chaos Mesh's
(desiredPhase, records and their events, Kubernetes Events, finalizer): a fault that ends early, a heal
that has to push through a bad API server, a chaos-daemon that cannot recover, and GAMEDAY-002's
PodChaos through the same lifecycle."""

from __future__ import annotations

import dataclasses
import time
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from fake_apiserver import (
    NAMESPACE,
    FakeApiServer,
    FakePod,
    nats_reachable_through,
    proxy_status,
    wait_for,
)

from gamedaylib import chaos
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import HealFailed, InjectionFailed
from gamedaylib.probes import parse_time
from gamedaylib.targets.chaosmesh import POD_CHAOS, ChaosExperiment, records
from gamedaylib.targets.kubeapi import KubeApi
from gamedaylib.targets.kubernetes import KubernetesTarget

pytestmark = pytest.mark.timeout(120)


def target_for(params: dict[str, Any], **overrides: Any) -> KubernetesTarget:
    settings = {k: overrides.pop(k) for k in list(overrides) if k.endswith("_timeout_seconds")}
    target = KubernetesTarget.from_params({**params, **overrides})
    if settings:
        target.settings = dataclasses.replace(target.settings, **settings)
    return target


def last_recover(obj: dict[str, Any]) -> Any:
    return max(
        parse_time(e["timestamp"])
        for r in obj["status"]["experiment"]["containerRecords"]
        for e in r["events"]
        if e["operation"] == "Recover" and e["type"] == "Succeeded"
    )


def kubectl(fake: FakeApiServer, method: str, path: str) -> int:
    """What someone else does by hand (kubectl delete ...)."""
    req = urllib.request.Request(
        fake.url + path, method=method, headers={"Authorization": f"Bearer {fake.token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


# --- 4. a fault that ends early ----------------------------------------------------------------


def test_duration_expiry_is_reported_as_ended_early_with_the_recover_time(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        t0 = target.inject(duration_seconds=1)  # duration 1 s after T+0, + 1 s of injection wait
        assert target.fault_status().active
        status = wait_for(lambda: (s := target.fault_status()).ended_at and s, 10)
        assert not status.active and status.ended_early == "duration expired"
        (obj,) = fake.chaos_objects(NAMESPACE)
        assert status.ended_at == last_recover(obj), "ended_at is the records' last Recover event"
        # Chaos Mesh writes whole seconds (metav1.Time): ended at creation + 2 s, T+0 was 0.3 s after creation
        assert t0 - timedelta(seconds=1) < status.ended_at <= utcnow()
        assert [e["reason"] for e in fake.events_for(obj["metadata"]["name"]) if e["reason"] == "TimeUp"]
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
        assert target.heal() is None, "nothing was in force any more; the object is deleted all the same"
        wait_for(lambda: fake.chaos_objects(NAMESPACE) == [], 5)
    finally:
        target.close()


def test_pause_annotation_ends_the_fault_early(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        target.inject(duration_seconds=60)
        assert proxy_status(data_plane["proxy_control_url"])["active"] is True
        fake.pause(NAMESPACE, target.chaos_name)  # kubectl annotate ... experiment.chaos-mesh.org/pause=true
        status = wait_for(lambda: (s := target.fault_status()).ended_at and s, 10)
        assert status.ended_early == "paused" and not status.active
        assert status.ended_at == last_recover(fake.chaos_objects(NAMESPACE)[0])
        assert "ended: paused" in status.detail
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
        assert nats_reachable_through(data_plane["proxy_port"])
    finally:
        target.heal()
        target.close()


def test_fault_deleted_outside_the_runbook_is_reported(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        target.inject(duration_seconds=60)
        kubectl(
            fake,
            "DELETE",
            f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NAMESPACE}/networkchaos/{target.chaos_name}",
        )
        status = wait_for(lambda: (s := target.fault_status()).ended_early and s, 10)
        assert status.ended_early == "deleted outside the runbook" and not status.active
        wait_for(lambda: target.fault_status().detail.endswith("someone deleted it"), 10)
    finally:
        target.close()


def test_the_fault_lasts_its_planned_time_from_t0_whatever_the_injection_took(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    """Chaos Mesh's clock starts at creation: with 2 s of injection, a duration of exactly the plan would
    end the partition 2 s early."""
    fake.inject_delay = 2.0
    target = target_for(k8s_params)
    try:
        t0 = target.inject(duration_seconds=3)
        (obj,) = fake.chaos_objects(NAMESPACE)
        created = parse_time(obj["metadata"]["creationTimestamp"])
        assert (t0 - created).total_seconds() >= 1.0
        assert obj["spec"]["duration"] == "6s", "3 s after T+0 + 3 s of injection wait"
        while (target_now := time.time()) < t0.timestamp() + 2.7:
            assert target.fault_status().active, f"ended {target_now - t0.timestamp():.1f}s after T+0"
            time.sleep(0.2)
    finally:
        target.heal()
        target.close()


# --- 7. heal: DELETE first, through transient errors ---------------------------------------------


def test_heal_sends_delete_first_and_retries_transient_errors(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        t0 = target.inject(duration_seconds=60)
        name = target.chaos_name
        fake.fail_next("GET", f"/networkchaos/{name}", 500, 503, 500, 504)
        fake.fail_next("DELETE", f"/networkchaos/{name}", 429, 503)
        before = len(fake.answers)
        healed = target.heal()
        assert healed is not None and healed > t0
        during = [(m, p.split("?")[0].rsplit("/", 1)[-1], code) for m, p, code in fake.answers[before:]]
        assert during[0] == ("DELETE", name, 429), "DELETE goes first, no GET before it"
        assert ("DELETE", name, 503) in during and ("DELETE", name, 200) in during
        assert [c for m, _, c in during if m == "GET"][:4] == [500, 503, 500, 504], (
            "the poll loop read through them"
        )
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
        wait_for(lambda: fake.chaos_objects(NAMESPACE) == [], 5)
        assert target.heal() is None, "404: already gone"
    finally:
        target.close()


def test_heal_gives_up_at_its_deadline_naming_the_command(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    target = target_for(k8s_params, heal_timeout_seconds=2.0)
    try:
        target.inject(duration_seconds=60)
        fake.fail_next("DELETE", f"/networkchaos/{target.chaos_name}", *([503] * 200))
        started = time.monotonic()
        with pytest.raises(
            HealFailed, match=f"503.*kubectl delete networkchaos {target.chaos_name} -n {NAMESPACE}"
        ):
            target.heal()
        assert time.monotonic() - started < 6, "gave up at its deadline"
        assert sum(1 for m, p, c in fake.answers if m == "DELETE" and c == 503) >= 3, "it kept trying"
        fake.clear_faults()  # the API server is back
        assert target.heal() is not None
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
    finally:
        target.close()


def test_injection_wait_polls_through_transient_errors(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        name = chaos.chaos_name(k8s_params["run_id"])
        fake.fail_next("GET", f"/networkchaos/{name}", 500, 429, 503)
        t0 = target.inject(duration_seconds=30)
        assert t0 is not None and target.partition_active()
        assert [c for m, p, c in fake.answers if m == "GET" and p.endswith(name)][:3] == [500, 429, 503]
    finally:
        target.heal()
        target.close()


# --- 9. diagnostics ----------------------------------------------------------------------------


def test_selection_failure_is_read_from_kubernetes_events(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    """Chaos Mesh writes no record and no condition when it selects nothing (a namespace filter, a wrong
    label): only a Kubernetes Event says why."""
    target = target_for(
        k8s_params, nats_selector={"app.kubernetes.io/name": "natz"}, inject_timeout_seconds=1.5
    )
    try:
        with pytest.raises(InjectionFailed) as err:
            target.inject(duration_seconds=30)
    finally:
        target.close()
    message = str(err.value)
    assert "no record: Chaos Mesh selected no pod" in message
    assert "Failed to select targets: no target has been selected" in message
    assert "it was deleted" in message
    wait_for(lambda: fake.chaos_objects(NAMESPACE) == [], 5)


def test_chaos_events_keep_each_records_id_and_phase(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    target = target_for(k8s_params)
    try:
        target.inject(duration_seconds=30)
        lines = target.chaos_events()
    finally:
        target.heal()
        target.close()
    assert f"{NAMESPACE}/nats-0 (Injected): Apply Succeeded at " in lines[0]
    ids = {line.split(" ", 1)[0] for line in lines}
    assert ids == {
        f"{NAMESPACE}/{p}"
        for p in ("nats-0", "nats-1", "nats-2", "api-gateway-7c9d5b6f4-x2x7k", "reporting-5f8b9c7d6-q4kzp")
    }


def test_stuck_finalizer_points_at_chaos_daemon_on_that_pods_node(
    fake: FakeApiServer, k8s_params: dict[str, Any], data_plane: dict[str, Any]
) -> None:
    target = target_for(k8s_params, heal_timeout_seconds=2.0)
    try:
        target.inject(duration_seconds=60)
        fake.stuck_recover.add("reporting-5f8b9c7d6-q4kzp")  # chaos-daemon on node-b is down
        with pytest.raises(HealFailed) as err:
            target.heal()
        message = str(err.value)
        assert "finalizer chaos-mesh/records held" in message
        assert f"record {NAMESPACE}/reporting-5f8b9c7d6-q4kzp is Injected" in message
        assert "Recover Failed: rpc error" in message
        assert "on node node-b" in message and "app.kubernetes.io/component=chaos-daemon" in message
        assert "spec.nodeName=node-b" in message and "cleanFinalizer=forced" in message
        assert proxy_status(data_plane["proxy_control_url"])["active"] is True, "the network is still cut"
        fake.stuck_recover.clear()  # chaos-daemon is back: the next heal finishes the job
        assert target.heal() is not None
        wait_for(lambda: fake.chaos_objects(NAMESPACE) == [], 5)
        assert proxy_status(data_plane["proxy_control_url"])["active"] is False
    finally:
        target.close()


# --- 10. the same lifecycle for GAMEDAY-002's PodChaos -------------------------------------------


def test_pod_chaos_kills_the_primary_through_the_same_lifecycle(fake: FakeApiServer, kubeconfig: Any) -> None:
    cnpg = {"cnpg.io/cluster": "events-db", "app.kubernetes.io/name": "postgresql"}
    fake.pods += [
        FakePod("events-db-1", {**cnpg, "cnpg.io/instanceRole": "primary"}, NAMESPACE, owner="StatefulSet"),
        FakePod("events-db-2", {**cnpg, "cnpg.io/instanceRole": "replica"}, NAMESPACE, owner="StatefulSet"),
    ]
    body = chaos.build_pod_chaos(
        namespace=NAMESPACE,
        run_id="20260301T100000Z-cafe",
        selector={"cnpg.io/cluster": "events-db", "cnpg.io/instanceRole": "primary"},
        name_prefix="postgres-primary-kill",
    )
    assert chaos.pod_chaos_problems(body) == []
    api = KubeApi(kubeconfig=str(kubeconfig), context="fake-cluster")
    experiment = ChaosExperiment(api, POD_CHAOS, NAMESPACE, body["metadata"]["name"], poll_interval=0.1)
    try:
        experiment.create(body, InjectionFailed, dry_run=True)
        assert fake.chaos_objects(plural="podchaos") == []
        bad = {**body, "spec": {**body["spec"], "mode": "two"}}
        with pytest.raises(InjectionFailed, match="422.*spec.mode"):
            experiment.create(bad, InjectionFailed)
        experiment.create(body, InjectionFailed)
        killed_at = experiment.wait_injected(10)
        assert killed_at is not None
        (obj,) = fake.chaos_objects(NAMESPACE, plural="podchaos")
        assert [r.id for r in records(obj)] == [f"{NAMESPACE}/events-db-1"], "mode one: the primary only"
        assert obj["status"]["experiment"]["desiredPhase"] == "Run", "one-shot: never stopped by a clock"
        replacement = next(p for p in fake.pods if p.name == "events-db-1")
        assert replacement.ready is False, "the StatefulSet put a new pod in its place"
        status = experiment.fault_status()
        assert status.active and "one-shot" in status.detail
        was, moment = experiment.delete_and_wait(10)
        assert was and moment is not None
        assert fake.chaos_objects(plural="podchaos") == []
        kinds = [e["involvedObject"]["kind"] for e in fake.events_for(body["metadata"]["name"])]
        assert set(kinds) == {"PodChaos"}
    finally:
        api.close()


def test_kube_events_of_an_object_are_listed_oldest_first(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        target.inject(duration_seconds=30)
        events = target.experiment.kube_events()
    finally:
        target.heal()
        target.close()
    reasons = [e.reason for e in events]
    assert reasons[0] == "Started" and reasons.count("Applied") == 5
    assert all(e.at is not None for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events if e.at)


def test_create_is_retried_after_a_server_error(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    """A 5xx on create: look whether the object was stored, create again when it was not."""
    target = target_for(k8s_params)
    try:
        fake.fail_next("POST", "/networkchaos", 503)
        target.inject(duration_seconds=30)
        name = target.chaos_name
        calls = [
            (m, p.split("?")[0].rsplit("/", 1)[-1], c) for m, p, c in fake.answers if "networkchaos" in p
        ]
        assert calls[:3] == [("POST", "networkchaos", 503), ("GET", name, 404), ("POST", "networkchaos", 201)]
        assert len(fake.chaos_objects(NAMESPACE)) == 1 and target.partition_active()
    finally:
        target.heal()
        target.close()
