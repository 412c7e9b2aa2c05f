"""The fake API server answers like a real one at the HTTP level (the other tests rely on it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from fake_apiserver import TOKEN, FakeApiServer, FakePod, selector_matches, wait_for

from gamedaylib import chaos

pytestmark = pytest.mark.timeout(60)
NS = "ns1"
CHAOS = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos"


@pytest.fixture()
def server() -> Iterator[FakeApiServer]:
    pods = [
        FakePod("nats-0", {"app": "nats"}, NS),
        FakePod(
            "api-gateway-1-a", {"app": "api-gateway", "tier": "be"}, NS, log_lines=["one", "two", "three"]
        ),
        FakePod("other-0", {"app": "other"}, "elsewhere"),
    ]
    with FakeApiServer(pods=pods, inject_delay=0.1, recover_delay=0.1) as s:
        yield s


def call(
    server: FakeApiServer, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, code, ctype = resp.read(), resp.status, resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        raw, code, ctype = exc.read(), exc.code, exc.headers["Content-Type"]
    return code, json.loads(raw) if ctype == "application/json" else raw.decode()


def body(name: str = "nats-partition-r1", duration: str = "2s") -> dict[str, Any]:
    b = chaos.build_network_chaos(
        chaos.load_template(),
        namespace=NS,
        run_id="r1",
        name=name,
        nats_selector={"app": "nats"},
        service_selector={"app": "api-gateway"},
        duration_seconds=1,
    )
    b["spec"]["duration"] = duration
    return b


def test_requests_need_the_token(server: FakeApiServer) -> None:
    code, status = call(server, "GET", f"/api/v1/namespaces/{NS}/pods", token=None)
    assert code == 401 and status["kind"] == "Status" and status["reason"] == "Unauthorized"


def test_pods_list_filters_by_namespace_and_selector(server: FakeApiServer) -> None:
    code, pods = call(
        server, "GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=app+in+(nats,api-gateway),tier!=x"
    )
    assert code == 200 and pods["kind"] == "PodList"
    assert [p["metadata"]["name"] for p in pods["items"]] == ["nats-0", "api-gateway-1-a"]
    _, pods = call(server, "GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=tier%3Dbe")
    assert [p["metadata"]["name"] for p in pods["items"]] == ["api-gateway-1-a"]
    code, log = call(server, "GET", f"/api/v1/namespaces/{NS}/pods/api-gateway-1-a/log?tailLines=2")
    assert code == 200 and log == "two\nthree\n"
    code, status = call(server, "GET", f"/api/v1/namespaces/{NS}/pods/nope/log")
    assert (code, status["reason"], status["status"]) == (404, "NotFound", "Failure")


def test_selector_syntax() -> None:
    labels = {"a": "1", "b": "2"}
    assert selector_matches("a=1,b==2", labels) and selector_matches("a in (1,3),c notin (1)", labels)
    assert selector_matches("a,!c", labels) and not selector_matches("c", labels)
    assert not selector_matches("a!=1", labels) and selector_matches("", labels)


def test_networkchaos_lifecycle_like_chaos_mesh(server: FakeApiServer) -> None:
    code, created = call(server, "POST", CHAOS, body())
    assert code == 201 and created["metadata"]["creationTimestamp"] and created["metadata"]["uid"]
    code, status = call(server, "POST", CHAOS, body())
    assert (code, status["reason"]) == (409, "AlreadyExists")

    def phase() -> dict[str, Any]:
        return call(server, "GET", f"{CHAOS}/nats-partition-r1")[1]["status"]

    status = wait_for(lambda: (s := phase()) and s["experiment"].get("containerRecords") and s, 5)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["AllInjected"] == "True" and status["experiment"]["desiredPhase"] == "Run"
    assert server.proxy_calls[0]["active"] is True
    # duration (2 s from creation) expires: Stop, AllRecovered, the object stays
    wait_for(lambda: phase()["experiment"]["desiredPhase"] == "Stop", 5)
    conditions = {c["type"]: c["status"] for c in phase()["conditions"]}
    assert conditions["AllRecovered"] == "True" and conditions["AllInjected"] == "False"
    assert server.proxy_calls[-1] == {"active": False}
    code, listed = call(server, "GET", f"{CHAOS}?labelSelector=app.kubernetes.io/managed-by%3Dgameday")
    assert code == 200 and [o["metadata"]["name"] for o in listed["items"]] == ["nats-partition-r1"]
    code, deleted = call(server, "DELETE", f"{CHAOS}/nats-partition-r1")
    assert code == 200 and deleted["metadata"]["deletionTimestamp"]
    wait_for(lambda: call(server, "GET", f"{CHAOS}/nats-partition-r1")[0] == 404, 5)
    code, status = call(server, "DELETE", f"{CHAOS}/nats-partition-r1")
    assert (code, status["reason"], status["details"]["name"]) == (404, "NotFound", "nats-partition-r1")


def test_invalid_bodies_get_422_and_dry_run_persists_nothing(server: FakeApiServer) -> None:
    bad = body()
    del bad["spec"]["target"]
    code, status = call(server, "POST", CHAOS, bad)
    assert (code, status["reason"]) == (422, "Invalid")
    assert any("needs a target" in c["message"] for c in status["details"]["causes"])
    code, _ = call(server, "POST", CHAOS + "?dryRun=All", body())
    assert code == 201 and server.chaos_objects() == []
    wrong_ns = body()
    wrong_ns["metadata"]["namespace"] = "other"
    assert call(server, "POST", CHAOS, wrong_ns)[0] == 400


def test_denied_verb_is_denied_by_review_and_by_the_call(server: FakeApiServer) -> None:
    server.deny("delete", "networkchaos", group="chaos-mesh.org")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": NS,
                "verb": "delete",
                "group": "chaos-mesh.org",
                "resource": "networkchaos",
            }
        },
    }
    code, answer = call(server, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
    assert code == 201 and answer["status"]["allowed"] is False
    review["spec"]["resourceAttributes"]["verb"] = "create"
    assert call(server, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)[1][
        "status"
    ]["allowed"]
    call(server, "POST", CHAOS, body(duration="1m"))
    code, status = call(server, "DELETE", f"{CHAOS}/nats-partition-r1")
    assert (code, status["reason"]) == (403, "Forbidden")
    assert 'cannot delete resource "networkchaos" in API group "chaos-mesh.org"' in status["message"]


def test_crd_is_served_unless_uninstalled(server: FakeApiServer) -> None:
    code, crd = call(
        server, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/networkchaos.chaos-mesh.org"
    )
    assert code == 200 and crd["spec"]["names"]["plural"] == "networkchaos"
    server.crd_installed = False
    assert (
        call(
            server,
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/networkchaos.chaos-mesh.org",
        )[0]
        == 404
    )
    assert call(server, "GET", CHAOS)[0] == 404


def test_logs_of_a_pod_with_a_sidecar_need_the_container(server: FakeApiServer) -> None:
    server.pods.append(
        FakePod(
            "reporting-5f8b9c7d6-q4kzp",
            {"app": "reporting"},
            NS,
            log_lines=["stored"],
            sidecars=("istio-proxy",),
        )
    )
    path = f"/api/v1/namespaces/{NS}/pods/reporting-5f8b9c7d6-q4kzp/log"
    code, status = call(server, "GET", path)
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"] == (
        "a container name must be specified for pod reporting-5f8b9c7d6-q4kzp, "
        "choose one of: [reporting istio-proxy]"
    )
    assert call(server, "GET", path + "?container=reporting") == (200, "stored\n")
    code, status = call(server, "GET", path + "?container=reporting&previous=true")
    assert code == 400 and "previous terminated container" in status["message"]
    assert call(server, "GET", path + "?container=reporting&limitBytes=3") == (200, "sto")


def test_transient_answers_and_an_expired_token(server: FakeApiServer) -> None:
    server.fail_next("GET", "/pods", 429, 503)
    code, status = call(server, "GET", f"/api/v1/namespaces/{NS}/pods")
    assert (code, status["reason"], status["details"]["retryAfterSeconds"]) == (429, "TooManyRequests", 1)
    assert call(server, "GET", f"/api/v1/namespaces/{NS}/pods")[0] == 503
    assert call(server, "GET", f"/api/v1/namespaces/{NS}/pods")[0] == 200
    old = server.token
    new = server.expire_token()
    assert call(server, "GET", f"/api/v1/namespaces/{NS}/pods", token=old)[0] == 401
    assert call(server, "GET", f"/api/v1/namespaces/{NS}/pods", token=new)[0] == 200


def test_selecting_nothing_leaves_only_a_kubernetes_event(server: FakeApiServer) -> None:
    b = body()
    b["spec"]["selector"]["labelSelectors"] = {"app": "natz"}
    assert call(server, "POST", CHAOS, b)[0] == 201
    events = f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3Dnats-partition-r1"
    wait_for(lambda: any(e["reason"] == "Failed" for e in call(server, "GET", events)[1]["items"]), 5)
    failed_event = next(e for e in call(server, "GET", events)[1]["items"] if e["reason"] == "Failed")
    assert failed_event["message"] == "Failed to select targets: no target has been selected"
    assert failed_event["type"] == "Warning" and failed_event["involvedObject"]["kind"] == "NetworkChaos"
    status = call(server, "GET", f"{CHAOS}/nats-partition-r1")[1]["status"]
    assert "containerRecords" not in status["experiment"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Selected": "False",
        "AllInjected": "False",
        "AllRecovered": "False",
        "Paused": "False",
    }


def test_pause_stops_the_fault_and_recovers_every_record(server: FakeApiServer) -> None:
    assert call(server, "POST", CHAOS, body(duration="1m"))[0] == 201
    wait_for(lambda: server.proxy_calls, 5)
    server.pause(NS, "nats-partition-r1")
    wait_for(
        lambda: (
            call(server, "GET", f"{CHAOS}/nats-partition-r1")[1]["status"]["experiment"]["desiredPhase"]
            == "Stop"
        ),
        5,
    )
    obj = wait_for(
        lambda: (
            (o := call(server, "GET", f"{CHAOS}/nats-partition-r1")[1])
            and all(r["phase"] == "Not Injected" for r in o["status"]["experiment"]["containerRecords"])
            and o
        ),
        5,
    )
    assert [e["operation"] for e in obj["status"]["experiment"]["containerRecords"][0]["events"]] == [
        "Apply",
        "Recover",
    ]
    assert server.proxy_calls[-1] == {"active": False}
    reasons = [e["reason"] for e in server.events_for("nats-partition-r1")]
    assert reasons[0] == "Started" and "Paused" in reasons and "Recovered" in reasons
