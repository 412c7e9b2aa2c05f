"""The API session: who and where the run acts (shown at pre-flight, judged by the production guard),
transient answers retried, and a token that expires mid-run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import NAMESPACE, FakeApiServer, jwt_token

from gamedaylib.exceptions import HealFailed, InvalidParameters, ProductionGuard, TargetError
from gamedaylib.targets.kubernetes import KubernetesTarget, refuse_unconfirmed_production

pytestmark = pytest.mark.timeout(120)


def target_for(params: dict[str, Any], **overrides: Any) -> KubernetesTarget:
    return KubernetesTarget.from_params({**params, **overrides})


def check(checks: list[Any], name: str) -> Any:
    return next(c for c in checks if c.name == name)


# --- 8. identity, credentials ------------------------------------------------------------------


def test_preflight_shows_the_context_and_api_server_it_acts_on(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        shown = check(target.preflight(), "kubernetes: acting on")
    finally:
        target.close()
    assert shown.ok
    assert f"context fake-cluster (cluster fake, API server {fake.url}, user gameday)" in shown.detail
    assert f"namespace {NAMESPACE}" in shown.detail
    assert "authenticated as system:serviceaccount:teei-prod:gameday" in shown.detail


def test_confirm_production_needs_an_explicit_context_before_any_request(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    with pytest.raises(InvalidParameters) as err:
        target_for(k8s_params, namespace="teei-prod", confirm_production=True, kube_context="")
    assert list(err.value.problems) == ["kube_context"]
    assert "explicit kube_context" in err.value.problems["kube_context"]
    assert fake.requests == [], "refused before any side effect"


def test_production_guard_judges_the_context_and_cluster_too(
    fake: FakeApiServer, k8s_params: dict[str, Any], tmp_path: Path
) -> None:
    """A namespace called `teei` on the production cluster is production all the same."""
    kubeconfig = fake.write_kubeconfig(
        tmp_path / "prod", context="prod-eu1", cluster="gke_acme_europe-west1_prod", namespace="teei"
    )
    params = {**k8s_params, "kubeconfig": str(kubeconfig), "kube_context": "prod-eu1", "namespace": "teei"}
    with pytest.raises(ProductionGuard) as err:
        target_for(params)
    assert "context 'prod-eu1'" in str(err.value) and "cluster 'gke_acme_europe-west1_prod'" in str(err.value)
    assert "production_cluster_patterns" in str(err.value)
    assert fake.mutating_requests() == []
    target_for(params, confirm_production=True).close()
    target_for(params, dry_run=True).close()  # a dry run changes nothing: not guarded
    # the same refusal for `gameday run` before the notebook starts: the kubeconfig is read, no request
    asked = len(fake.requests)
    with pytest.raises(ProductionGuard, match="context 'prod-eu1'"):
        refuse_unconfirmed_production(params)
    refuse_unconfirmed_production({**params, "dry_run": True})
    with pytest.raises(InvalidParameters, match="kube_context"):
        refuse_unconfirmed_production({**params, "confirm_production": True, "kube_context": ""})
    assert len(fake.requests) == asked
    with pytest.raises(InvalidParameters, match="context 'nope' is not in"):
        target_for(params, kube_context="nope")


def test_an_expired_token_is_read_again_from_the_kubeconfig(
    fake: FakeApiServer, k8s_params: dict[str, Any], kubeconfig: Path
) -> None:
    """Mid-run the token expires; the facilitator puts a new one in the kubeconfig (kubectl create token
    ...): the next call gets 401, reads the kubeconfig again and goes on."""
    target = target_for(k8s_params)
    try:
        target.inject(duration_seconds=30)
        fake.expire_token()
        fake.write_kubeconfig(kubeconfig, namespace=NAMESPACE)
        assert target.partition_active()
        assert target.api.reloads == 1
        assert [c for _, p, c in fake.answers if target.chaos_name in p][-2:] == [401, 200]
        assert target.heal() is not None
    finally:
        target.close()


def test_an_expired_token_not_renewed_fails_clearly_and_heal_names_the_command(
    fake: FakeApiServer, k8s_params: dict[str, Any]
) -> None:
    target = target_for(k8s_params)
    try:
        target.inject(duration_seconds=30)
        fake.expire_token()  # nobody renews it
        with pytest.raises(TargetError) as err:
            target.fault_status()
        message = str(err.value)
        assert "HTTP 401 Unauthorized" in message and "context fake-cluster" in message
        assert f"kubectl create token gameday -n {NAMESPACE} --duration=3h" in message
        with pytest.raises(HealFailed) as heal_err:
            target.heal()
        assert "401" in str(heal_err.value)
        assert f"kubectl delete networkchaos {target.chaos_name} -n {NAMESPACE}" in str(heal_err.value)
    finally:
        target.close()
    # the fault still has its duration: Chaos Mesh ends it without the runbook (30 s + 30 s from creation)


def test_a_token_that_ends_before_the_playbook_is_refused_at_preflight(
    k8s_params: dict[str, Any], tmp_path: Path, data_plane: dict[str, Any]
) -> None:
    from fake_apiserver import pods_for_lab

    token = jwt_token(time.time() + 50 * 60)  # 50 minutes left
    with FakeApiServer(pods=pods_for_lab(data_plane["lab_dir"], NAMESPACE), token=token) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kc", namespace=NAMESPACE)
        rehearsal = target_for(k8s_params, kubeconfig=str(kubeconfig))  # about 35 minutes
        try:
            shown = check(rehearsal.preflight(), "kubernetes: acting on")
        finally:
            rehearsal.close()
        assert shown.ok and "min left" in shown.detail
        full = target_for(
            k8s_params,
            kubeconfig=str(kubeconfig),
            partition_seconds=600,
            partition_safety_margin_seconds=300,
            lag_recovery_deadline_seconds=900,
            rto_target_seconds=3600,
        )
        try:
            shown = check(full.preflight(), "kubernetes: acting on")
        finally:
            full.close()
    assert not shown.ok and shown.fatal
    assert "the gameday may last 120 min" in shown.detail
    assert f"kubectl create token gameday -n {NAMESPACE} --duration=2h" in shown.detail


def test_transient_answers_on_reads_are_retried(fake: FakeApiServer, k8s_params: dict[str, Any]) -> None:
    # urllib3 itself waits out a 429 that carries Retry-After (GET is idempotent); the 5xx are ours to retry
    fake.fail_next("GET", f"/namespaces/{NAMESPACE}/pods", 429, 500, 503)
    target = target_for(k8s_params)
    try:
        checks = target.preflight()
    finally:
        target.close()
    assert [c for c in checks if c.fatal and not c.ok] == []
    codes = [c for m, p, c in fake.answers if m == "GET" and p.split("?")[0].endswith("/pods")]
    assert codes[:4] == [429, 500, 503, 200]
    assert target.api.retried == 2
