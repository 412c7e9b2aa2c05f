"""Every NetworkChaos body the project produces passes the real CRD schema (``openAPIV3Schema`` of
``../shared/chaos-mesh/chaos-mesh.org_networkchaos.yaml``, via jsonschema) and the webhook rules;
bodies the cluster would refuse are refused here too."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gamedaylib import chaos
from gamedaylib.exceptions import InvalidParameters

REPO = Path(__file__).resolve().parents[2]
CRD = REPO.parent / "shared" / "chaos-mesh" / "chaos-mesh.org_networkchaos.yaml"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    assert CRD.is_file(), f"the CRD must be at {CRD} (../shared beside the repo, in CI too)"
    loaded = chaos.load_crd_schema(CRD)
    assert loaded is not None
    return loaded


def raw_schema_errors(body: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The CRD schema as is (not our strict copy): what the API server itself enforces."""
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(body)]


def test_the_default_crd_is_found_where_ci_has_it() -> None:
    assert chaos.crd_schema_path() == CRD.resolve() or chaos.crd_schema_path() == CRD


def test_shipped_manifest_validates_as_is(schema: dict[str, Any]) -> None:
    body = yaml.safe_load(chaos.DEFAULT_MANIFEST.read_text(encoding="utf-8"))
    assert raw_schema_errors(body, schema) == []
    assert chaos.network_chaos_problems(body, schema) == []
    spec = body["spec"]
    assert (spec["action"], spec["direction"], spec["mode"]) == ("partition", "both", "all")
    assert body["metadata"]["name"] == "nats-partition" and body["metadata"]["namespace"] == "teei-prod"
    assert chaos.parse_duration(spec["duration"]) == 15 * 60  # full profile: 10 min + 5 min margin
    assert spec["selector"]["labelSelectors"] == {"app.kubernetes.io/name": "nats"}
    assert spec["target"]["selector"]["expressionSelectors"][0]["values"] == ["api-gateway", "reporting"]


BUILD_CASES = [
    dict(
        namespace="teei-prod",
        run_id="20261128T033000Z-ab12",
        nats_selector={"app.kubernetes.io/name": "nats"},
        service_selector={"app.kubernetes.io/part-of": "teei"},
        duration_seconds=900,
    ),
    dict(
        namespace="teei-staging",
        run_id="20261128T033000Z-ab12",
        nats_selector={"app": "nats"},
        service_selector={"app.kubernetes.io/name": ["api-gateway", "reporting"]},
        duration_seconds=50,
    ),
    dict(
        namespace="s",
        run_id="My_Run.ID with spaces and a very long tail " * 3,
        nats_selector={"app": "nats"},
        service_selector={},
        service_pods=["api-gateway-7c9d5b6f4-x2x7k", "reporting-0"],
        duration_seconds=0.4,
    ),
    dict(
        namespace="gameday",
        run_id="r",
        nats_selector={"statefulset.kubernetes.io/pod-name": "nats-0"},
        service_selector={"tier": "backend", "app": ["api-gateway"]},
        duration_seconds=3 * 3600 + 61.5,
    ),
]


@pytest.mark.parametrize("case", BUILD_CASES, ids=lambda c: c["namespace"])
def test_built_bodies_validate(case: dict[str, Any], schema: dict[str, Any]) -> None:
    template = chaos.load_template()
    before = copy.deepcopy(template)
    body = chaos.build_network_chaos(template, **case)
    assert template == before, "the template is not modified"
    assert raw_schema_errors(body, schema) == []
    assert chaos.network_chaos_problems(body, schema) == []
    meta = body["metadata"]
    assert meta["namespace"] == case["namespace"]
    assert meta["name"].startswith("nats-partition-") and len(meta["name"]) <= 63
    assert meta["labels"][chaos.MANAGED_BY_LABEL] == "gameday"
    assert len(meta["labels"][chaos.RUN_ID_LABEL]) <= 63
    assert chaos.parse_duration(body["spec"]["duration"]) >= case["duration_seconds"]
    assert chaos.parse_duration(body["spec"]["duration"]) < case["duration_seconds"] + 1
    assert body["spec"]["selector"]["namespaces"] == [case["namespace"]]
    assert body["spec"]["target"]["selector"]["namespaces"] == [case["namespace"]]


def test_name_carries_the_run_id() -> None:
    assert chaos.chaos_name("20261128T033000Z-AB12") == "nats-partition-20261128t033000z-ab12"
    long = chaos.chaos_name("x" * 200)
    assert len(long) == 63 and not long.endswith("-")
    assert chaos.chaos_name("--__..") == "nats-partition"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b["spec"].update(action="cut"), "spec.action"),
        (lambda b: b["spec"].pop("target"), "needs a target or externalTargets"),
        (lambda b: b["spec"].update(direction="sideways"), "spec.direction"),
        (lambda b: b["spec"].update(duration="10 minutes"), "not a Go duration"),
        (lambda b: b["spec"].pop("duration"), "spec.duration: required"),
        (lambda b: b["spec"].update(mode="fixed-percent", value="150"), "(0, 100]"),
        (lambda b: b["spec"].pop("selector"), "'selector' is a required property"),
        (lambda b: b["spec"].update(durration="10m"), "'durration' was unexpected"),
        (lambda b: b["spec"]["target"].pop("mode"), "'mode' is a required property"),
        (lambda b: b["metadata"].update(name="Nats_Partition"), "metadata.name"),
        (lambda b: b["metadata"]["labels"].update({"gameday.dev/run-id": "a b"}), "invalid label value"),
        (lambda b: b.update(apiVersion="chaos-mesh.org/v1"), "apiVersion"),
    ],
)
def test_invalid_bodies_are_rejected(mutate: Any, expected: str, schema: dict[str, Any]) -> None:
    body = chaos.build_network_chaos(chaos.load_template(), **BUILD_CASES[0])
    mutate(body)
    problems = chaos.network_chaos_problems(body, schema)
    assert any(expected in p for p in problems), problems
    with pytest.raises(InvalidParameters, match="chaos_manifest"):
        chaos.validate_network_chaos(body, schema)


def test_webhook_rule_holds_without_the_schema() -> None:
    body = chaos.build_network_chaos(chaos.load_template(), **BUILD_CASES[0])
    body["spec"].pop("target")
    assert any("needs a target" in p for p in chaos.network_chaos_problems(body, schema={}))
    body["spec"]["externalTargets"] = ["nats.example.org"]
    assert chaos.network_chaos_problems(body, schema={}) == []


def test_build_refuses_a_fault_without_deadline_or_sides() -> None:
    template = chaos.load_template()
    with pytest.raises(InvalidParameters, match="positive duration"):
        chaos.build_network_chaos(template, **{**BUILD_CASES[0], "duration_seconds": 0})
    with pytest.raises(InvalidParameters, match="service_selector"):
        chaos.build_network_chaos(template, **{**BUILD_CASES[0], "service_selector": {}})
    with pytest.raises(InvalidParameters, match="nats_selector"):
        chaos.build_network_chaos(template, **{**BUILD_CASES[0], "nats_selector": {}})


@pytest.mark.parametrize(
    ("seconds", "text"), [(600, "10m"), (630, "10m30s"), (0.2, "1s"), (3661, "1h1m1s"), (50, "50s")]
)
def test_durations_round_trip(seconds: float, text: str) -> None:
    assert chaos.format_duration(seconds) == text
    assert chaos.parse_duration(text) >= seconds


def test_label_selector_string() -> None:
    assert chaos.label_selector_string({"a": "b", "c": ["d", "e"]}) == "a=b,c in (d,e)"


# --- PodChaos (GAMEDAY-002) -----------------------------------------------------------------------
# Its schema is the NetworkChaos CRD's shared types (the pod selector, mode, value, duration: the same
# Go types in both kinds) plus PodChaos's own fields. When the real PodChaos CRD is at hand
# (GAMEDAY_PODCHAOS_CRD, or chaos-mesh.org_podchaos.yaml beside the NetworkChaos one) the bodies are
# checked against it too, and the derived schema must agree with it.

PODCHAOS_CRD_ENV = "GAMEDAY_PODCHAOS_CRD"


def real_podchaos_schema() -> dict[str, Any] | None:
    import os

    candidates = [Path(os.environ[PODCHAOS_CRD_ENV])] if os.environ.get(PODCHAOS_CRD_ENV) else []
    candidates.append(CRD.parent / "chaos-mesh.org_podchaos.yaml")
    for path in candidates:
        if path.is_file():
            crd = yaml.safe_load(path.read_text(encoding="utf-8"))
            assert crd["spec"]["names"]["kind"] == "PodChaos"
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == chaos.VERSION]
            return dict(version["schema"]["openAPIV3Schema"])
    return None


@pytest.fixture(scope="module")
def pod_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return chaos.pod_chaos_schema(schema)


def pod_template() -> dict[str, Any]:
    from gamedaylib.targets.cnpg import DEFAULT_MANIFEST

    return chaos.load_pod_chaos_template(DEFAULT_MANIFEST)


def test_shipped_podchaos_validates_as_is(pod_schema: dict[str, Any]) -> None:
    body = pod_template()
    assert raw_schema_errors(body, pod_schema) == []
    assert chaos.pod_chaos_problems(body, pod_schema) == []
    spec = body["spec"]
    assert (spec["action"], spec["mode"], spec["gracePeriod"]) == ("pod-kill", "one", 0)
    assert spec["selector"]["labelSelectors"] == {
        "cnpg.io/cluster": "events-db",
        "cnpg.io/instanceRole": "primary",
    }
    assert spec["selector"]["podPhaseSelectors"] == ["Running"]
    assert "duration" not in spec, "a pod kill is one-shot: no duration applies"


POD_CASES = [
    dict(namespace="teei-prod", run_id="20261128T033000Z-ab12",
         selector={"cnpg.io/cluster": "events-db", "cnpg.io/instanceRole": "primary"}),
    dict(namespace="teei-staging", run_id="My_Run.ID with spaces and a very long tail " * 3,
         selector={"cnpg.io/cluster": "orders-db", "role": "primary"}),
    dict(
        namespace="gameday",
        run_id="r",
        selector={"cnpg.io/cluster": ["a-db", "b-db"], "cnpg.io/instanceRole": "primary"},
    ),
]


@pytest.mark.parametrize("case", POD_CASES, ids=lambda c: c["namespace"])
def test_built_podchaos_bodies_validate(case: dict[str, Any], pod_schema: dict[str, Any]) -> None:
    template = pod_template()
    before = copy.deepcopy(template)
    body = chaos.build_pod_chaos(**case, name_prefix="postgres-primary-kill", template=template)
    assert template == before, "the template is not modified"
    assert raw_schema_errors(body, pod_schema) == []
    assert chaos.pod_chaos_problems(body, pod_schema) == []
    real = real_podchaos_schema()
    if real is not None:
        assert raw_schema_errors(body, real) == []
        assert chaos.pod_chaos_problems(body, real) == []
    meta, spec = body["metadata"], body["spec"]
    assert meta["namespace"] == case["namespace"] and meta["name"].startswith("postgres-primary-kill-")
    assert len(meta["name"]) <= 63 and meta["labels"][chaos.MANAGED_BY_LABEL] == "gameday"
    assert spec["selector"]["namespaces"] == [case["namespace"]] and spec["gracePeriod"] == 0


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b["spec"].update(action="pod-explode"), "spec.action"),
        (lambda b: b["spec"].update(mode="two"), "spec.mode"),
        (lambda b: b["spec"].update(direction="both"), "'direction' was unexpected"),
        (lambda b: b["spec"].update(gracePeriod=-1), "gracePeriod"),
        (lambda b: b["spec"].update(mode="fixed-percent", value="150"), "(0, 100]"),
        (lambda b: b["spec"].pop("selector"), "'selector' is a required property"),
        (lambda b: b["spec"]["selector"].update(labelSelector={"a": "b"}), "'labelSelector' was unexpected"),
        (lambda b: b["spec"].update(action="pod-failure"), "pod-failure needs a duration"),
        (lambda b: b["metadata"].update(name="Postgres_Kill"), "metadata.name"),
    ],
)
def test_invalid_podchaos_bodies_are_rejected(mutate: Any, expected: str, pod_schema: dict[str, Any]) -> None:
    body = chaos.build_pod_chaos(**POD_CASES[0], name_prefix="postgres-primary-kill", template=pod_template())
    mutate(body)
    problems = chaos.pod_chaos_problems(body, pod_schema)
    assert any(expected in p for p in problems), problems
    with pytest.raises(InvalidParameters, match="chaos_manifest"):
        chaos.validate_pod_chaos(body, pod_schema)


def test_the_derived_podchaos_schema_agrees_with_the_real_crd(pod_schema: dict[str, Any]) -> None:
    real = real_podchaos_schema()
    if real is None:
        pytest.skip(f"no PodChaos CRD at hand (set {PODCHAOS_CRD_ENV} or put chaos-mesh.org_podchaos.yaml in "
                    f"{CRD.parent}): the bodies are checked against the NetworkChaos CRD's shared types only")
    derived, actual = pod_schema["properties"]["spec"], real["properties"]["spec"]
    assert set(derived["properties"]) <= set(actual["properties"])
    assert sorted(derived["required"]) == sorted(actual["required"])
    for name, field in derived["properties"].items():
        wanted = {k: v for k, v in actual["properties"][name].items() if k != "description"}
        got = {k: v for k, v in field.items() if k != "description"}
        if name == "selector":
            assert got["properties"].keys() == wanted["properties"].keys()
        else:
            assert got == wanted, name
