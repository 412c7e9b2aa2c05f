"""Chaos Mesh ``NetworkChaos`` bodies: built from the shipped template, checked like the cluster would.

``build_network_chaos`` fills the template shipped with the gameday
(``gamedays/nats_partition/nats-partition.yaml``) for one run:
namespace, a name carrying the run id, the gameday labels, the NATS and service selectors, and
``duration`` = planned partition + safety margin (Chaos Mesh stops the fault by itself at
creationTimestamp + duration, so the cluster heals even if the runbook dies).

``network_chaos_problems`` / ``validate_network_chaos`` check a body the way the API server and the
Chaos Mesh admission webhook would, *before* anything is sent:

- structure and object metadata (apiVersion, kind, DNS-1123 name and namespace, label syntax);
- the CRD's ``openAPIV3Schema`` with ``jsonschema``, **strictly**: an unknown field is an error (the API
  server would silently prune it, and a pruned ``duration`` is a fault without a deadline). The schema
  is read from the CRD file named by ``GAMEDAY_NETWORKCHAOS_CRD`` (the tests point it at the real CRD);
  the project ships no copy and reads nothing outside the package at run time. Without it, only the
  structural rules below and the webhook rules run (on a cluster the API server's server-side dry run
  checks the rest), and ``crd_schema_path()`` says so;
- the webhook's rules: ``direction: from|both`` needs ``target`` or ``externalTargets``; ``duration``
  is a Go duration; ``value`` fits ``mode``; and ours: a gameday fault must have a ``duration``.

GAMEDAY-002's ``PodChaos`` (``pod-kill`` of the CloudNativePG primary): ``load_pod_chaos_template``,
``build_pod_chaos`` and ``pod_chaos_problems`` / ``validate_pod_chaos``, whose schema
(``pod_chaos_schema``) is built from the NetworkChaos CRD: the pod selector, ``mode``, ``value`` and
``duration`` are the same Go types in both kinds, PodChaos adds ``action``, ``gracePeriod`` and
``containerNames``.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from gamedaylib.exceptions import InvalidParameters

GROUP = "chaos-mesh.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NetworkChaos"
PLURAL = "networkchaos"
CRD_NAME = f"{PLURAL}.{GROUP}"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gameday"
RUN_ID_LABEL = "gameday.dev/run-id"
GAMEDAY_ID_LABEL = "gameday.dev/gameday-id"
NAME_PREFIX = "nats-partition"

CRD_ENV = "GAMEDAY_NETWORKCHAOS_CRD"
DEFAULT_MANIFEST = Path(__file__).resolve().parent / "gamedays" / "nats_partition" / "nats-partition.yaml"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_GO_DURATION = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_GO_UNIT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

LabelSelector = Mapping[str, "str | Sequence[str]"]


# --- names, labels, durations -------------------------------------------------------------------


def chaos_name(run_id: str, prefix: str = NAME_PREFIX) -> str:
    """``nats-partition-<run_id>``: lowercased, DNS-1123 label safe, at most 63 characters."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    name = f"{prefix}-{slug}" if slug else prefix
    return name[:63].rstrip("-")


def label_value(text: str) -> str:
    """``text`` made a valid label value (at most 63 characters of ``[A-Za-z0-9._-]``, alnum ends)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def format_duration(seconds: float) -> str:
    """A Go duration string, whole seconds rounded up: 630 -> ``"10m30s"``."""
    total = max(1, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string (``"15m"``, ``"1h2m3.5s"``); ValueError when it is not one."""
    if not isinstance(text, str) or not _GO_DURATION.match(text):
        raise ValueError(f"not a Go duration: {text!r}")
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_UNIT.findall(text))


def label_selector_string(labels: LabelSelector, exclude: Mapping[str, Sequence[str]] | None = None) -> str:
    """The ``labelSelector`` query string for a list call: ``a=b,c in (d,e),f notin (g)``."""
    parts = []
    for key, value in labels.items():
        if isinstance(value, str):
            parts.append(f"{key}={value}")
        else:
            parts.append(f"{key} in ({','.join(value)})")
    for key, values in (exclude or {}).items():
        parts.append(f"{key} notin ({','.join(values)})")
    return ",".join(parts)


def pod_selector(
    namespace: str,
    labels: LabelSelector | None = None,
    pods: Sequence[str] = (),
    *,
    exclude: Mapping[str, Sequence[str]] | None = None,
    phases: Sequence[str] = (),
) -> dict[str, Any]:
    """A Chaos Mesh ``PodSelectorSpec``: single values become ``labelSelectors``, lists become
    ``expressionSelectors`` with operator ``In``, ``exclude`` becomes ``NotIn`` (a pod without the label
    matches), ``phases`` becomes ``podPhaseSelectors`` (e.g. ``["Running"]``: Chaos Mesh otherwise selects
    Evicted and Completed pods too) and ``pods`` selects by exact pod name."""
    selector: dict[str, Any] = {"namespaces": [namespace]}
    single = {k: v for k, v in (labels or {}).items() if isinstance(v, str)}
    multi = {k: list(v) for k, v in (labels or {}).items() if not isinstance(v, str)}
    if single:
        selector["labelSelectors"] = single
    expressions = [{"key": k, "operator": "In", "values": v} for k, v in multi.items()]
    expressions += [{"key": k, "operator": "NotIn", "values": list(v)} for k, v in (exclude or {}).items()]
    if expressions:
        selector["expressionSelectors"] = expressions
    if phases:
        selector["podPhaseSelectors"] = list(phases)
    if pods:
        selector["pods"] = {namespace: list(pods)}
    return selector


# --- the template --------------------------------------------------------------------------------


def load_template(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The NetworkChaos template (``chaos_manifest``; empty = the one shipped with the gameday)."""
    return _load_manifest(Path(path) if path else DEFAULT_MANIFEST, KIND)


def _load_manifest(p: Path, kind: str) -> dict[str, Any]:
    """One Chaos Mesh object of ``kind`` from a YAML file; ``InvalidParameters`` naming ``chaos_manifest``."""
    try:
        body = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidParameters({"chaos_manifest": f"cannot read {p}: {exc}"}) from exc
    except yaml.YAMLError as exc:
        raise InvalidParameters({"chaos_manifest": f"{p} is not valid YAML: {exc}"}) from exc
    if not isinstance(body, dict) or body.get("kind") != kind:
        raise InvalidParameters({"chaos_manifest": f"{p} must hold one {kind} object"})
    return body


def build_network_chaos(
    template: Mapping[str, Any],
    *,
    namespace: str,
    run_id: str,
    nats_selector: LabelSelector,
    service_selector: LabelSelector | None,
    duration_seconds: float,
    service_pods: Sequence[str] = (),
    name: str | None = None,
    gameday_id: str = "GAMEDAY-001",
    nats_exclude: Mapping[str, Sequence[str]] | None = None,
    phases: Sequence[str] = ("Running",),
) -> dict[str, Any]:
    """The NetworkChaos body for one run, from ``template`` (left unchanged).

    ``duration_seconds`` is the fault's deadline counted from the object's creation, rounded up to
    whole seconds. The service side (``spec.target``) is ``service_selector`` when it has labels,
    else the exact pod names ``service_pods`` (resolved from the cluster by the caller). Label
    selectors only pick pods in ``phases`` (Running by default); ``nats_exclude`` keeps pods out of the
    NATS side (the official chart's ``nats-box`` shares ``app.kubernetes.io/name: nats``).
    """
    if duration_seconds <= 0:
        raise InvalidParameters(
            {"partition_seconds": f"the fault needs a positive duration, got {duration_seconds}"}
        )
    if not nats_selector:
        raise InvalidParameters({"nats_selector": "must select the NATS pods (at least one label)"})
    if not service_selector and not service_pods:
        raise InvalidParameters(
            {"service_selector": "no service pods to cut off: give labels or service_pods"}
        )
    body = copy.deepcopy(dict(template))
    body["apiVersion"] = API_VERSION
    body["kind"] = KIND
    meta = body.setdefault("metadata", {})
    for server_set in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(server_set, None)
    meta["name"] = name or chaos_name(run_id)
    meta["namespace"] = namespace
    labels = dict(meta.get("labels") or {})
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    labels[RUN_ID_LABEL] = label_value(run_id)
    labels[GAMEDAY_ID_LABEL] = label_value(gameday_id)
    meta["labels"] = labels
    spec = body.setdefault("spec", {})
    spec["selector"] = pod_selector(namespace, nats_selector, exclude=nats_exclude, phases=phases)
    target = dict(spec.get("target") or {})
    target.setdefault("mode", "all")
    if service_selector:
        target["selector"] = pod_selector(namespace, service_selector, phases=phases)
    else:
        target["selector"] = pod_selector(namespace, pods=service_pods)
    spec["target"] = target
    spec["duration"] = format_duration(duration_seconds)
    return body


# --- validation ----------------------------------------------------------------------------------


def crd_schema_path() -> Path | None:
    """Where the NetworkChaos CRD is read from, or None when there is none (structural checks only)."""
    named = os.environ.get(CRD_ENV)
    if named and Path(named).is_file():
        return Path(named)
    return None


@lru_cache(maxsize=4)
def _load_crd_schema(path: str) -> dict[str, Any]:
    crd = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for version in crd["spec"]["versions"]:
        if version["name"] == VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise KeyError(f"{path} has no {VERSION} schema")


def load_crd_schema(path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The ``openAPIV3Schema`` of NetworkChaos ``v1alpha1`` from the CRD file, or None without one."""
    p = Path(path) if path else crd_schema_path()
    if p is None:
        return None
    return copy.deepcopy(_load_crd_schema(str(p)))


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an OpenAPI v3 schema where every object with ``properties`` refuses unknown fields."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                out["additionalProperties"] = False
            if "properties" in node:
                out["properties"] = {k: walk(v) for k, v in node["properties"].items()}
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(dict(schema))


def _schema_problems(body: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(strict_schema(schema))
    problems = []
    for err in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "<root>"
        problems.append(f"{where}: {err.message}")
    return problems


def _metadata_problems(body: Mapping[str, Any], kind: str = KIND) -> list[str]:
    problems = []
    if body.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION!r}, got {body.get('apiVersion')!r}")
    if body.get("kind") != kind:
        problems.append(f"kind: must be {kind!r}, got {body.get('kind')!r}")
    meta = body.get("metadata")
    if not isinstance(meta, Mapping):
        return [*problems, "metadata: required"]
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: required")
    elif len(name) > 63 or not _DNS1123_LABEL.match(name):
        # NetworkChaos allows a DNS-1123 subdomain; the name is also used as a label value by Chaos
        # Mesh's PodNetworkChaos records, so we hold it to a DNS-1123 label (<= 63 characters).
        problems.append(f"metadata.name: {name!r} must be a DNS-1123 label (a-z, 0-9, '-', <= 63 characters)")
    namespace = meta.get("namespace")
    if not isinstance(namespace, str) or not _DNS1123_LABEL.match(namespace) or len(namespace) > 63:
        problems.append(f"metadata.namespace: {namespace!r} must be a DNS-1123 label")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = str(key).rpartition("/")
        if (
            (prefix and not _DNS1123_SUBDOMAIN.match(prefix))
            or not _LABEL_NAME.match(label)
            or len(label) > 63
        ):
            problems.append(f"metadata.labels: invalid label key {key!r}")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"metadata.labels.{key}: invalid label value {value!r}")
    return problems


def _pod_mode_problems(mode: Any, value: Any, where: str) -> list[str]:
    if mode in ("one", "all", None):
        return []
    try:
        number = float(value) if mode != "fixed" else int(value)
    except (TypeError, ValueError):
        return [f"{where}.value: mode {mode!r} needs a numeric value, got {value!r}"]
    if mode == "fixed" and number <= 0:
        return [f"{where}.value: mode fixed needs a value > 0, got {value!r}"]
    if mode in ("fixed-percent", "random-max-percent") and not 0 < number <= 100:
        return [f"{where}.value: mode {mode} needs a value in (0, 100], got {value!r}"]
    return []


def _webhook_problems(body: Mapping[str, Any]) -> list[str]:
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return ["spec: required"]
    problems = []
    direction = spec.get("direction", "to")
    if direction in ("from", "both") and not spec.get("target") and not spec.get("externalTargets"):
        problems.append(f"spec.target: direction {direction!r} needs a target or externalTargets")
    duration = spec.get("duration")
    if duration is None:
        problems.append(
            "spec.duration: required for a gameday fault (the cluster heals itself at the deadline)"
        )
    else:
        try:
            if parse_duration(duration) <= 0:
                problems.append(f"spec.duration: must be positive, got {duration!r}")
        except ValueError as exc:
            problems.append(f"spec.duration: {exc}")
    problems += _pod_mode_problems(spec.get("mode"), spec.get("value"), "spec")
    target = spec.get("target")
    if isinstance(target, Mapping):
        problems += _pod_mode_problems(target.get("mode"), target.get("value"), "spec.target")
        if not isinstance(target.get("selector"), Mapping) or not target["selector"]:
            problems.append("spec.target.selector: required")
    return problems


def network_chaos_problems(body: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """Every reason the API server, the CRD schema or the webhook would refuse ``body`` (empty = fine).

    ``schema`` is the CRD's ``openAPIV3Schema``; by default it is read from ``crd_schema_path()``,
    and without a CRD file only the structural and webhook rules run.
    """
    if schema is None:
        schema = load_crd_schema()
    problems = _metadata_problems(body)
    if schema is not None:
        problems += _schema_problems(body, schema)
    problems += _webhook_problems(body)
    return problems


def validate_network_chaos(body: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> None:
    """Raise ``InvalidParameters`` (parameter ``chaos_manifest``) naming every problem of ``body``."""
    problems = network_chaos_problems(body, schema)
    if problems:
        raise InvalidParameters({"chaos_manifest": "NetworkChaos refused: " + "; ".join(problems)})


# --- PodChaos (GAMEDAY-002: kill the PostgreSQL primary) ------------------------------------------

POD_CHAOS_KIND = "PodChaos"
POD_CHAOS_PLURAL = "podchaos"
POD_CHAOS_ACTIONS = ("pod-kill", "pod-failure", "container-kill")
POD_MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")


def load_pod_chaos_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A PodChaos template (the gameday's own, or ``chaos_manifest``): ``InvalidParameters`` naming
    ``chaos_manifest`` when it cannot be read or holds something else."""
    return _load_manifest(Path(path), POD_CHAOS_KIND)


def build_pod_chaos(
    *,
    namespace: str,
    run_id: str,
    selector: LabelSelector,
    action: str = "pod-kill",
    mode: str = "one",
    value: str | None = None,
    name_prefix: str = "pod-chaos",
    gameday_id: str = "GAMEDAY-002",
    duration_seconds: float | None = None,
    grace_period: int | None = None,
    template: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``PodChaos`` for one run: ``pod-kill`` of ``mode`` pods among those ``selector`` picks (Running
    only), e.g. the CloudNativePG primary (``cnpg.io/cluster: events-db``, ``cnpg.io/instanceRole:
    primary``). ``pod-kill`` is one-shot for Chaos Mesh: it needs no ``duration``, and ``pod-failure``
    does (it is recovered at the deadline). With ``template`` (left unchanged) the body starts from it:
    its other fields (``gracePeriod``, annotations, labels) are kept, the run's own are set."""
    if not selector:
        raise InvalidParameters({"selector": "must select the pods (at least one label)"})
    if action == "pod-failure" and not duration_seconds:
        raise InvalidParameters({"duration_seconds": "pod-failure needs a duration (the fault's deadline)"})
    body = copy.deepcopy(dict(template or {}))
    meta = dict(body.get("metadata") or {})
    for server_set in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(server_set, None)
    labels = dict(meta.get("labels") or {})
    labels.update({MANAGED_BY_LABEL: MANAGED_BY, RUN_ID_LABEL: label_value(run_id),
                   GAMEDAY_ID_LABEL: label_value(gameday_id)})
    meta.update(name=chaos_name(run_id, name_prefix), namespace=namespace, labels=labels)
    spec = dict(body.get("spec") or {})
    spec.update(action=action, mode=mode, selector=pod_selector(namespace, selector, phases=("Running",)))
    spec.pop("value", None)
    if value is not None:
        spec["value"] = value
    if duration_seconds:
        spec["duration"] = format_duration(duration_seconds)
    if grace_period is not None:
        spec["gracePeriod"] = int(grace_period)
    body.update(apiVersion=API_VERSION, kind=POD_CHAOS_KIND, metadata=meta, spec=spec)
    body.pop("status", None)
    return body


# PodChaos's own fields, as its CRD (chaos-mesh.org_podchaos.yaml) declares them; the rest of its spec
# (``selector``: a PodSelectorSpec, ``mode``, ``value``, ``duration``, ``remoteCluster``) are the same Go
# types as NetworkChaos's, whose CRD is the one at hand
_POD_CHAOS_OWN_FIELDS: dict[str, Any] = {
    "action": {"type": "string", "enum": list(POD_CHAOS_ACTIONS)},
    "gracePeriod": {"type": "integer", "format": "int64", "minimum": 0},
    "containerNames": {"type": "array", "items": {"type": "string"}},
}
_POD_CHAOS_SHARED_FIELDS = ("selector", "mode", "value", "duration", "remoteCluster")


def pod_chaos_schema(network_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of PodChaos ``v1alpha1`` built from NetworkChaos's: the shared types
    (metadata, the pod selector, mode, value, duration) taken from the real CRD, PodChaos's own fields
    (action, gracePeriod, containerNames) added, the network ones (direction, target, ...) removed."""
    schema = copy.deepcopy(dict(network_schema))
    spec = schema["properties"]["spec"]
    shared = {k: spec["properties"][k] for k in _POD_CHAOS_SHARED_FIELDS if k in spec["properties"]}
    spec["properties"] = {**copy.deepcopy(_POD_CHAOS_OWN_FIELDS), **shared}
    spec["required"] = ["action", "mode", "selector"]
    schema.get("properties", {}).get("status", {}).get("properties", {}).pop("instances", None)
    return schema


def pod_chaos_problems(body: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """What the API server and Chaos Mesh's webhook would refuse in a ``PodChaos``: its metadata, the
    CRD schema (``schema``; by default ``pod_chaos_schema`` of the NetworkChaos CRD when one is found,
    strictly: an unknown field is an error) and the webhook's rules."""
    if schema is None:
        network = load_crd_schema()
        schema = pod_chaos_schema(network) if network is not None else None
    problems = _metadata_problems(body, POD_CHAOS_KIND)
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return [*problems, "spec: required"]
    if schema:
        problems += _schema_problems(body, schema)
    if spec.get("action") not in POD_CHAOS_ACTIONS:
        problems.append(f"spec.action: must be one of {list(POD_CHAOS_ACTIONS)}, got {spec.get('action')!r}")
    if spec.get("mode") not in POD_MODES:
        problems.append(f"spec.mode: must be one of {list(POD_MODES)}, got {spec.get('mode')!r}")
    problems += _pod_mode_problems(spec.get("mode"), spec.get("value"), "spec")
    if not isinstance(spec.get("selector"), Mapping) or not spec["selector"]:
        problems.append("spec.selector: required")
    if spec.get("duration") is not None:
        try:
            parse_duration(spec["duration"])
        except ValueError as exc:
            problems.append(f"spec.duration: {exc}")
    if spec.get("action") == "pod-failure" and not spec.get("duration"):
        problems.append("spec.duration: pod-failure needs a duration")
    return problems


def validate_pod_chaos(body: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> None:
    """Raise ``InvalidParameters`` (parameter ``chaos_manifest``) naming every problem of ``body``."""
    problems = pod_chaos_problems(body, schema)
    if problems:
        raise InvalidParameters({"chaos_manifest": "PodChaos refused: " + "; ".join(problems)})
