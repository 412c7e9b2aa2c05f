"""An HTTP-level fake Kubernetes API server with a stand-in Chaos Mesh controller, for tests.

No Kubernetes API server can run on the test machine, so this is a real HTTP server (``http.server``
in a thread, 127.0.0.1, a free port) that speaks the REST paths the ``kubernetes`` Python client calls
and answers like the real server does, ``Status`` objects and unkind parts included:

- ``GET  /api/v1/namespaces/{ns}``                                  the namespace (annotations)
- ``GET  /api/v1/namespaces/{ns}/pods[?labelSelector=]``            PodList (equality and set selectors)
- ``GET  /api/v1/namespaces/{ns}/pods/{name}``                      Pod
- ``GET  /api/v1/namespaces/{ns}/pods/{name}/log``                  ``container`` required when the pod has
  several (400 otherwise, the real message), ``previous`` (400 without a restarted container),
  ``limitBytes``, ``tailLines`` (``sinceSeconds`` ignored)
- ``GET  /api/v1/namespaces/{ns}/events[?fieldSelector=involvedObject.name=..,involvedObject.kind=..]``
- ``POST|GET /apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/{networkchaos|podchaos}[?dryRun=All]``,
  ``GET|DELETE .../{name}``: 201 | 200 | 404 | 409 | 422
- ``GET  /apis/apiextensions.k8s.io/v1/customresourcedefinitions/networkchaos.chaos-mesh.org``
- ``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``  allowed unless a test ``deny``-ed
  the verb, and then the verb's real call answers 403 Forbidden too.
- ``POST /apis/authentication.k8s.io/v1/selfsubjectreviews``       who the token is
- ``GET  /apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters[/{name}[/status]]``, ``PATCH .../status``
- ``GET|PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}`` (``add_deployment``: rollout restarts)
  (JSON merge patch; a ``metadata.resourceVersion`` that is not the current one answers 409 Conflict,
  as the optimistic lock of ``kubectl cnpg promote`` meets it)

Requests need a valid bearer token (401 otherwise); ``expire_token`` invalidates the current one, as
when a ``kubectl create token`` token reaches its end, and ``write_kubeconfig`` writes the current one.
``fail_next`` makes matching requests answer transient errors first (429 with ``Retry-After``, 500,
503), as API Priority and Fairness and a restarting API server do. NetworkChaos bodies are validated
against the CRD's ``openAPIV3Schema`` and the webhook rules (422 Invalid, with causes).

The controller, like Chaos Mesh (chaos-mesh ``controllers/common``: desiredphase, records, condition,
finalizers):

- ``desiredPhase``: Stop when deleted (Event ``Deleted``), when ``creationTimestamp + duration`` has
  passed (``TimeUp``) or when annotated ``experiment.chaos-mesh.org/pause: "true"`` (``Paused``); Run
  otherwise (``Started``); a one-shot PodChaos (pod-kill) stays Run until deleted.
- records, once, ``inject_delay`` after creation: one per selected pod (``namespace/pod``, selector keys
  ``.`` and ``.Target``), Running pods only when ``podPhaseSelectors`` say so; nothing selected = no
  record, status unchanged and only a Kubernetes Event ``Failed``: "Failed to select targets: no target
  has been selected". Pods created later are never added.
- Apply/Recover per record with record events (``Succeeded``/``Failed``, timestamps) and Events
  ``Applied``/``Recovered``/``Failed``. A NetworkChaos cuts the lab's partition proxy when every record
  is injected and heals it when every record is recovered; a pod listed in ``stuck_recover`` cannot be
  recovered (chaos-daemon down on its node: ``Recover Failed``), which keeps the proxy cut and the
  finalizer on. A PodChaos ``pod-kill`` removes the pod (and ``respawn`` puts a new one in its place).
- conditions ``Selected``, ``AllInjected``, ``AllRecovered``, ``Paused`` from the records, as
  ``condition.diffConditions`` computes them (no record: all False).
- on DELETE: ``deletionTimestamp``; the finalizer ``chaos-mesh/records`` goes once every record is
  recovered (and ``recover_delay`` has passed), and the object with it.

The CloudNativePG stand-in (``add_cnpg_cluster``), like the operator and its instance managers, over the
nodes of an ``fake_instances.Instances`` (the lab's Patroni pair, or a scripted pair):

- instance pods ``<cluster>-<i>`` (node i) labelled ``cnpg.io/cluster``, ``cnpg.io/instanceName``,
  ``cnpg.io/podRole``, ``cnpg.io/instanceRole`` and ``role`` (primary | replica), owned by the Cluster;
  each one's metrics (CloudNativePG's names) served on a ``PodNetwork`` while the pod runs;
- the Cluster's status mirrors the nodes: ``currentPrimary``/``targetPrimary`` follow the elected leader,
  ``phase`` "Cluster in healthy state" | "Failing over" (the primary's pod gone or no leader) |
  "Switchover in progress" (a status patch asked for another primary) | "Waiting for the instances to
  become active", ``timelineID`` the leader's, ``readyInstances``, ``resourceVersion`` bumped on change;
- a PodChaos pod-kill of an instance pod SIGKILLs its node, removes the pod, and ``recreate_delay`` later
  puts a new one (same name, new uid, Pending) in its place, which starts ``start_delay`` later once
  another instance is primary (its node started again: it rejoins as a replica);
- a status patch of ``targetPrimary`` promotes that node (``Instances.promote``), as the operator does
  for ``kubectl cnpg promote``; RBAC (``deny``), expiring tokens and transient errors apply as elsewhere;
  ``FakeCnpgCluster.bump_before_patch`` makes the next patches meet a status changed meanwhile (409);
  ``FakeCnpgCluster.hold`` keeps a pod in an odd state (Pending, Terminating, CrashLoopBackOff).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen

import yaml
from fake_instances import Instances, NodeState, PodNetwork

from gamedaylib import chaos

TOKEN = "gameday-fake-apiserver-token"
SERVICE_ACCOUNT = "system:serviceaccount:{ns}:gameday"
CHAOS_PREFIX = f"/apis/{chaos.GROUP}/{chaos.VERSION}/namespaces/"
CHAOS_KINDS = {"networkchaos": "NetworkChaos", "podchaos": "PodChaos"}
PAUSE_ANNOTATION = "experiment.chaos-mesh.org/pause"
CLEAN_FINALIZER = "chaos-mesh.chaos-mesh.org/cleanFinalizer"
FINALIZER = "chaos-mesh/records"
_RAND = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' random-name alphabet


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_micro(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def jwt_token(expires_at: float, subject: str = "system:serviceaccount:teei-prod:gameday") -> str:
    """A token shaped like a service-account JWT (unsigned) with an ``exp`` claim."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'exp': int(expires_at)})}.sig"


@dataclass
class FakePod:
    """A pod the fake server reports; its main container's log is read from ``log_file`` (live) or
    ``log_lines``; sidecars log ``sidecar_lines``; ``previous_lines`` is the log of the container
    before its last restart (``restarts`` > 0)."""

    name: str
    labels: dict[str, str]
    namespace: str = "teei-prod"
    phase: str = "Running"
    ready: bool = True
    log_file: Path | None = None
    log_lines: list[str] = field(default_factory=list)
    container: str = ""  # the main container ("" = derived from the name)
    sidecars: tuple[str, ...] = ()
    sidecar_lines: list[str] = field(default_factory=lambda: ['{"msg": "envoy: upstream reset"}'])
    restarts: int = 0
    previous_lines: list[str] = field(default_factory=list)
    reason: str = ""  # status.reason: Evicted, ...
    owner: str = "ReplicaSet"  # ownerReferences kind: ReplicaSet, StatefulSet, Job, Cluster (CloudNativePG)
    node: str = "node-a"
    deleting: bool = False
    incarnation: int = 0  # a pod created again under the same name (StatefulSet, CloudNativePG) has a new uid
    created: datetime | None = None  # creationTimestamp (None: 2026-01-01T00:00:00Z)
    waiting_reason: str = ""  # the main container waits: CrashLoopBackOff, ImagePullBackOff, ...

    @property
    def uid(self) -> str:
        suffix = f"/{self.incarnation}" if self.incarnation else ""
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, self.namespace + "/" + self.name + suffix))

    @property
    def main_container(self) -> str:
        if self.container:
            return self.container
        parts = self.name.split("-")
        if len(parts) >= 3 and self.owner in ("ReplicaSet", "Job"):
            return "-".join(parts[:-2])
        if self.owner == "StatefulSet" and parts[-1].isdigit():
            return "-".join(parts[:-1])
        return self.name

    @property
    def containers(self) -> list[str]:
        return [self.main_container, *self.sidecars]

    def to_api(self) -> dict[str, Any]:
        ready = "True" if self.ready and self.phase == "Running" and not self.waiting_reason else "False"
        owner_api = {"Job": "batch/v1", "Cluster": "postgresql.cnpg.io/v1"}.get(self.owner, "apps/v1")
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": dict(self.labels),
            "uid": self.uid,
            "creationTimestamp": _rfc3339(self.created) if self.created else "2026-01-01T00:00:00Z",
            "ownerReferences": [
                {
                    "apiVersion": owner_api,
                    "kind": self.owner,
                    "name": self.name.rsplit("-", 1)[0],
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
                    "controller": True,
                }
            ],
        }
        if self.deleting:
            meta["deletionTimestamp"] = _rfc3339(_now())
            meta["deletionGracePeriodSeconds"] = 30
        terminated = (
            {"terminated": {"exitCode": 0, "reason": "Completed"}} if self.phase == "Succeeded" else {}
        )
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": ready},
                {"type": "ContainersReady", "status": ready},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": c,
                    "ready": ready == "True",
                    "restartCount": self.restarts if c == self.main_container else 0,
                    "image": f"example.org/{c}:1",
                    "imageID": f"example.org/{c}@sha256:" + "0" * 64,
                    "started": self.phase == "Running",
                    "state": self._container_state(c, terminated),
                }
                for c in self.containers
            ],
        }
        if self.reason:
            status["reason"] = self.reason
            status["message"] = "The node was low on resource: memory."
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": self.node,
                "containers": [{"name": c, "image": f"example.org/{c}:1"} for c in self.containers],
            },
            "status": status,
        }

    def _container_state(self, container: str, terminated: dict[str, Any]) -> dict[str, Any]:
        if self.waiting_reason and container == self.main_container:
            message = "back-off restarting failed container"
            return {"waiting": {"reason": self.waiting_reason, "message": message}}
        if terminated:
            return terminated
        if self.phase == "Pending":
            return {"waiting": {"reason": "ContainerCreating"}}
        return {"running": {"startedAt": "2026-01-01T00:00:05Z"}}

    def log_text(self, container: str, *, previous: bool = False, tail_lines: int | None = None) -> str:
        if previous:
            lines = list(self.previous_lines)
        elif container != self.main_container:
            lines = list(self.sidecar_lines)
        elif self.log_file is not None:
            try:
                lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                lines = []
        else:
            lines = list(self.log_lines)
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        return "".join(line + "\n" for line in lines)


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_RAND) for _ in range(n))


NATS_LABELS = {
    "app.kubernetes.io/name": "nats",
    "app.kubernetes.io/instance": "nats",
    "app.kubernetes.io/component": "nats",
}


def service_labels(service: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": service,
        "app.kubernetes.io/instance": "teei",
        "app.kubernetes.io/part-of": "teei",
    }


def pods_for_lab(lab_dir: str | Path, namespace: str, *, nats_nodes: int = 3) -> list[FakePod]:
    """The lab's processes as the pods of a cluster running the official charts:

    - ``nats-0..2``: the official NATS chart's StatefulSet (labels ``app.kubernetes.io/name: nats``,
      ``instance``, ``component: nats``; containers nats, reloader, prom-exporter); pod ``i`` logs the
      lab's NATS node ``i`` (``logs/nats-<i>.log``) or the single node (``logs/nats.log``);
    - ``nats-box-...``: the chart's nats-box Deployment: same name and instance, ``component: nats-box``;
    - ``api-gateway-...`` and ``reporting-...``: the services, with an ``istio-proxy`` sidecar;
    - an Evicted ``api-gateway`` pod, a Completed Job pod of ``reporting``, and ``reporting-db-0``
      (another StatefulSet whose name starts like a service's);
    - ``postgresql-0``.
    """
    logs = Path(lab_dir) / "logs"

    def nats_log(i: int) -> Path:
        own = logs / f"nats-{i}.log"
        return own if own.exists() else logs / "nats.log"

    pods = [
        FakePod(
            f"nats-{i}",
            {**NATS_LABELS, "statefulset.kubernetes.io/pod-name": f"nats-{i}"},
            namespace,
            log_file=nats_log(i),
            container="nats",
            sidecars=("reloader", "prom-exporter"),
            owner="StatefulSet",
            node=f"node-{'abc'[i % 3]}",
        )
        for i in range(nats_nodes)
    ]
    pods += [
        FakePod(
            "nats-box-6d9c8b7f5-vw2xz",
            {
                "app.kubernetes.io/name": "nats",
                "app.kubernetes.io/instance": "nats",
                "app.kubernetes.io/component": "nats-box",
            },
            namespace,
            container="nats-box",
        ),
    ]
    for service, log_name, component, node, template, suffixes in (
        ("api-gateway", "gateway", "api", "node-a", "7c9d5b6f4", ("x2x7k", "m8q2z", "p4t9d", "w7c3n")),
        ("reporting", "reporting", "consumer", "node-b", "5f8b9c7d6", ("q4kzp", "h6r2m", "t3v8j", "z9k4c")),
    ):
        replicas = sorted(logs.glob(f"{log_name}-*.log")) or [logs / f"{log_name}.log"]
        pods += [
            FakePod(
                f"{service}-{template}-{suffixes[i % len(suffixes)]}",
                {**service_labels(service), "app.kubernetes.io/component": component},
                namespace,
                log_file=log_file,
                sidecars=("istio-proxy",),
                node=node,
            )
            for i, log_file in enumerate(replicas)
        ]
    pods += [
        FakePod(
            "api-gateway-7c9d5b6f4-bvn4r",
            {**service_labels("api-gateway"), "app.kubernetes.io/component": "api"},
            namespace,
            phase="Failed",
            ready=False,
            reason="Evicted",
            node="node-c",
        ),
        FakePod(
            "reporting-backfill-29104520-k7z2d",
            {
                **service_labels("reporting"),
                "app.kubernetes.io/component": "consumer",
                "job-name": "reporting-backfill-29104520",
                "batch.kubernetes.io/job-name": "reporting-backfill-29104520",
            },
            namespace,
            phase="Succeeded",
            ready=False,
            owner="Job",
            container="reporting",
        ),
        FakePod(
            "reporting-db-0",
            {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": "reporting-db"},
            namespace,
            owner="StatefulSet",
            container="postgresql",
        ),
        FakePod(
            "postgresql-0",
            {"app.kubernetes.io/name": "postgresql"},
            namespace,
            log_file=logs / "postgres.log",
            owner="StatefulSet",
        ),
    ]
    return pods


# --- label selectors (the query-string syntax and Chaos Mesh's PodSelectorSpec) ----------------


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


_SET_EXPR = re.compile(r"^(?P<key>[^\s!=]+)\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)$")


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector query syntax: ``a=b``, ``a==b``, ``a!=b``, ``a in (b,c)``,
    ``a notin (b)``, ``a``, ``!a``. Raises ValueError on a malformed selector (the server's 400)."""
    for req in _split_selector(selector or ""):
        m = _SET_EXPR.match(req)
        if m:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            inside = labels.get(m["key"]) in values
            if (m["op"] == "in") != inside:
                return False
        elif "!=" in req:
            k, v = (s.strip() for s in req.split("!=", 1))
            if labels.get(k) == v:
                return False
        elif "=" in req:
            k, v = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(k) != v:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif re.match(r"^[A-Za-z0-9./_-]+$", req):
            if req not in labels:
                return False
        else:
            raise ValueError(f"unable to parse requirement: {req!r}")
    return True


def field_selector_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """``a.b=c,d.e=f`` against nested fields (what the events list supports)."""
    for req in _split_selector(selector or ""):
        key, _, want = req.partition("=")
        value: Any = obj
        for part in key.strip().split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if str(value) != want.strip():
            return False
    return True


def pod_selector_matches(spec: Mapping[str, Any], pod: FakePod, default_ns: str) -> bool:
    """Chaos Mesh's ``PodSelectorSpec`` (namespaces, labelSelectors, expressionSelectors,
    podPhaseSelectors, pods). Exact ``pods`` bypass the other selectors, as ``selectSpecifiedPods``."""
    pods = spec.get("pods")
    if pods:
        return pod.name in (pods.get(pod.namespace) or [])
    namespaces = spec.get("namespaces") or [default_ns]
    if pod.namespace not in namespaces:
        return False
    for k, v in (spec.get("labelSelectors") or {}).items():
        if pod.labels.get(k) != v:
            return False
    for expr in spec.get("expressionSelectors") or []:
        value, op, values = pod.labels.get(expr["key"]), expr["operator"], expr.get("values") or []
        if (
            (op == "In" and value not in values)
            or (op == "NotIn" and value in values)
            or (op == "Exists" and expr["key"] not in pod.labels)
            or (op == "DoesNotExist" and expr["key"] in pod.labels)
        ):
            return False
    phases = spec.get("podPhaseSelectors")
    return not phases or pod.phase in phases


# --- the server ----------------------------------------------------------------------------------


@dataclass
class _Chaos:
    body: dict[str, Any]
    kind: str  # NetworkChaos | PodChaos
    created: float  # time.time()
    duration: float  # seconds (1e9 = none)
    records: list[dict[str, Any]] | None = None
    deleting_since: float | None = None
    proxy_cut: bool = False
    drives_proxy: bool = True  # False for objects seeded by a test (another run's fault)
    said: set[str] = field(default_factory=set)  # Events emitted once (Started, TimeUp, ...)

    @property
    def one_shot(self) -> bool:
        return self.kind == "PodChaos" and (self.body.get("spec") or {}).get("action") in (
            "pod-kill",
            "container-kill",
        )


CNPG_GROUP = "postgresql.cnpg.io"
CNPG_VERSION = "v1"
CNPG_PREFIX = f"/apis/{CNPG_GROUP}/{CNPG_VERSION}/namespaces/"
APPS_PREFIX = "/apis/apps/v1/namespaces/"
CNPG_PHASE_HEALTHY = "Cluster in healthy state"
CNPG_PHASE_FAILOVER = "Failing over"
CNPG_PHASE_SWITCHOVER = "Switchover in progress"
CNPG_PHASE_WAITING = "Waiting for the instances to become active"


def cnpg_labels(cluster: str, pod: str, role: str) -> dict[str, str]:
    """The labels CloudNativePG puts on an instance pod (``role`` is the deprecated twin of instanceRole)."""
    return {
        "cnpg.io/cluster": cluster,
        "cnpg.io/instanceName": pod,
        "cnpg.io/podRole": "instance",
        "cnpg.io/instanceRole": role,
        "role": role,
    }


@dataclass
class FakeCnpgCluster:
    """A CloudNativePG ``Cluster`` whose instances are ``instances``' nodes: pod ``<name>-<i>`` is node i."""

    name: str
    namespace: str
    instances: Instances
    pod_of: dict[str, str]  # node -> pod
    body: dict[str, Any]
    recreate_delay: float = 1.0  # the operator creates a killed instance's pod again (Pending)
    start_delay: float = 0.5  # ... which starts (Running) this much later, once another instance is primary
    resource_version: int = 1
    killed: dict[str, float] = field(default_factory=dict)  # pod -> killed at (monotonic)
    starting: dict[str, float] = field(default_factory=dict)  # recreated pod -> starts at (monotonic)
    switchover: str | None = None  # the target primary a status patch asked for, until it is primary
    pinned: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod -> FakePod fields a test holds
    bump_before_patch: int = 0  # the next status patches find the object changed meanwhile (409)
    status_patches: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, NodeState] = field(default_factory=dict)  # the last look at the nodes
    incarnations: dict[str, int] = field(default_factory=dict)  # pod -> times it was created again

    @property
    def node_of(self) -> dict[str, str]:
        return {pod: node for node, pod in self.pod_of.items()}

    def hold(self, pod: str, **fields: Any) -> None:
        """Keep these FakePod fields on ``pod`` whatever the operator would do (a pod in an odd state);
        ``hold(pod)`` lets go."""
        if fields:
            self.pinned[pod] = fields
        else:
            self.pinned.pop(pod, None)


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


_TRANSIENT = {
    429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
    500: ("InternalError", "Internal error occurred: etcdserver: request timed out"),
    502: ("", "Bad Gateway"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted"),
}


def _merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch of ``target`` in place (null removes a key)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeApiServer:
    """The fake API server and its Chaos Mesh stand-in; use as a context manager."""

    def __init__(
        self,
        *,
        pods: Iterable[FakePod] = (),
        proxy_control_url: str | None = None,
        crd_path: str | Path | None = None,
        crd_installed: bool = True,
        inject_delay: float = 0.3,
        recover_delay: float = 0.2,
        proxy_backstop_seconds: float = 30.0,
        token: str = TOKEN,
        respawn: bool = True,
    ) -> None:
        self.pods: list[FakePod] = list(pods)
        self.proxy_control_url = proxy_control_url.rstrip("/") if proxy_control_url else None
        self.crd_path = Path(crd_path) if crd_path else chaos.crd_schema_path()
        self.crd_installed = crd_installed
        self.inject_delay = inject_delay
        self.recover_delay = recover_delay
        # The proxy is cut with a deadline this much past the chaos duration: the controller, not
        # the proxy's own deadline, is what heals it at `duration` (the proxy only backs it up).
        self.proxy_backstop_seconds = proxy_backstop_seconds
        self.respawn = respawn  # a pod-killed Deployment/StatefulSet pod gets a replacement
        self.schema = chaos.load_crd_schema(self.crd_path) if self.crd_path else None
        self.denied: set[tuple[str, str, str, str]] = set()  # (verb, group, resource, subresource)
        self.requests: list[tuple[str, str]] = []  # (method, path?query) in order
        self.answers: list[tuple[str, str, int]] = []  # (method, path?query, status) in order
        self.proxy_calls: list[dict[str, Any]] = []
        self.controller_errors: list[str] = []
        self.namespace_annotations: dict[str, dict[str, str]] = {}
        self.stuck_recover: set[str] = set()  # pod names chaos-daemon cannot recover
        self.fail_apply: set[str] = set()  # pod names chaos-daemon cannot inject
        self.token = token
        self.valid_tokens = {token}
        self.whoami_supported = True
        self.events: list[dict[str, Any]] = []
        self._faults: list[tuple[str, str, list[int]]] = []  # (method, path substring, statuses to answer)
        self._chaos: dict[tuple[str, str, str], _Chaos] = {}  # (plural, ns, name)
        self._cnpg: dict[tuple[str, str], FakeCnpgCluster] = {}  # (ns, name)
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}  # (ns, name) -> Deployment (add_deployment)
        self._cnpg_threads: list[threading.Thread] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeApiServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
            threading.Thread(target=self._controller_loop, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for t in self._threads + self._cnpg_threads:
            t.join(timeout=5)
        with self._lock:
            cut = any(c.proxy_cut for c in self._chaos.values())
        if cut:
            self._proxy({"active": False})

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        context: str = "fake-cluster",
        namespace: str = "default",
        cluster: str = "fake",
        token: str | None = None,
    ) -> Path:
        p = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": self.url}}],
            "users": [{"name": "gameday", "user": {"token": token or self.token}}],
            "contexts": [
                {"name": context, "context": {"cluster": cluster, "user": "gameday", "namespace": namespace}}
            ],
            "current-context": context,
        }
        p.write_text(yaml.safe_dump(config), encoding="utf-8")
        return p

    # -- test controls

    def deny(self, verb: str, resource: str, *, group: str = "", subresource: str = "") -> None:
        """Make RBAC refuse this verb: its access review says no and its real call answers 403."""
        with self._lock:
            self.denied.add((verb, group, resource, subresource))

    def fail_next(self, method: str, path_contains: str, *statuses: int) -> None:
        """The next requests ``method`` on a path containing ``path_contains`` answer ``statuses``, one
        each, in order (429 carries ``Retry-After: 1``), before the server answers normally again."""
        with self._lock:
            self._faults.append((method, path_contains, list(statuses)))

    def clear_faults(self) -> None:
        """Transient errors still queued by ``fail_next`` are dropped: the API server is healthy again."""
        with self._lock:
            self._faults.clear()

    def expire_token(self) -> str:
        """The current token stops working (401); a new one is issued and returned (as ``kubectl create
        token`` would give), and ``write_kubeconfig`` writes it from now on."""
        with self._lock:
            self.valid_tokens.discard(self.token)
            self.token = (
                jwt_token(time.time() + 3600) if "." in self.token else f"{TOKEN}-{uuid.uuid4().hex[:8]}"
            )
            self.valid_tokens.add(self.token)
            return self.token

    def pause(self, namespace: str, name: str, plural: str = "networkchaos") -> None:
        """``kubectl annotate networkchaos NAME experiment.chaos-mesh.org/pause=true``."""
        with self._lock:
            item = self._chaos[(plural, namespace, name)]
            item.body["metadata"].setdefault("annotations", {})[PAUSE_ANNOTATION] = "true"

    def put_chaos(
        self, body: Mapping[str, Any], *, injected: bool = True, plural: str = "networkchaos"
    ) -> None:
        """Seed an existing chaos object (another run's), as the controller would have left it."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        with self._lock:
            item = self._store(copy.deepcopy(dict(body)), ns, plural)
            item.drives_proxy = False
            item.records = [
                {
                    "id": f"{ns}/seeded-pod",
                    "selectorKey": ".",
                    "phase": "Injected" if injected else "Not Injected",
                    "injectedCount": 1,
                    "recoveredCount": 0 if injected else 1,
                    "events": [],
                }
            ]
            item.said.add("Started")
            if not injected:
                item.body["status"]["experiment"]["desiredPhase"] = "Stop"
                item.said.add("TimeUp")
            item.duration = 1e9 if injected else 0.0
            self._set_conditions(item)
        _ = name

    def chaos_objects(
        self, namespace: str | None = None, plural: str = "networkchaos"
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(c.body)
                for (p, ns, _), c in self._chaos.items()
                if p == plural and namespace in (None, ns)
            ]

    def events_for(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(e) for e in self.events if e["involvedObject"]["name"] == name]

    def mutating_requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r[0] in ("POST", "PUT", "PATCH", "DELETE")
                and "accessreview" not in r[1]
                and "selfsubjectreview" not in r[1]
            ]

    # -- the controller (Chaos Mesh stand-in)

    def _proxy(self, body: dict[str, Any]) -> bool:
        with self._lock:
            self.proxy_calls.append(dict(body))
        if not self.proxy_control_url:
            return True
        req = Request(
            self.proxy_control_url + "/partition",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urlopen(req, timeout=5) as resp:
                return 200 <= resp.status < 300
        except OSError as exc:
            with self._lock:
                self.controller_errors.append(f"proxy {body}: {exc}")
            return False

    def _event(self, item: _Chaos, reason: str, message: str, type_: str = "Normal") -> None:
        """A Kubernetes Event about the chaos object (the recorder's Event); repeated ones count up."""
        meta = item.body["metadata"]
        now = _now()
        for event in self.events:
            involved = event["involvedObject"]
            if (involved["uid"], event["reason"], event["message"]) == (meta["uid"], reason, message):
                event["count"] += 1
                event["lastTimestamp"] = _rfc3339(now)
                return
        self.events.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(len(self.events) + 1),
                    "creationTimestamp": _rfc3339(now),
                },
                "involvedObject": {
                    "apiVersion": chaos.API_VERSION,
                    "kind": item.kind,
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
                "reason": reason,
                "message": message,
                "source": {"component": "chaos-controller-manager"},
                "firstTimestamp": _rfc3339(now),
                "lastTimestamp": _rfc3339(now),
                "count": 1,
                "type": type_,
                "reportingComponent": "",
                "reportingInstance": "",
            }
        )

    def _once(self, item: _Chaos, reason: str, message: str) -> None:
        if reason not in item.said:
            item.said.add(reason)
            self._event(item, reason, message)

    def _set_conditions(self, item: _Chaos) -> None:
        status = item.body.setdefault("status", {})
        recs = item.records
        annotations = item.body["metadata"].get("annotations") or {}
        status["conditions"] = [
            {"type": "Selected", "status": str(recs is not None)},
            {
                "type": "AllInjected",
                "status": str(bool(recs) and all(r["phase"] == "Injected" for r in recs)),
            },
            {
                "type": "AllRecovered",
                "status": str(bool(recs) and all(r["phase"] == "Not Injected" for r in recs)),
            },
            {"type": "Paused", "status": str(annotations.get(PAUSE_ANNOTATION) == "true")},
        ]
        experiment = status.setdefault("experiment", {})
        if recs is not None:
            experiment["containerRecords"] = recs

    def _controller_loop(self) -> None:
        last_cnpg = 0.0
        while not self._stop.wait(0.05):
            with self._lock:
                items = list(self._chaos.items())
                clusters = list(self._cnpg.values())
            for key, item in items:
                try:
                    self._reconcile(key, item)
                except Exception as exc:  # noqa: BLE001 - a test fake: keep the controller alive, report
                    with self._lock:
                        self.controller_errors.append(f"reconcile {key}: {exc!r}")
            if time.monotonic() - last_cnpg < 0.2:
                continue
            last_cnpg = time.monotonic()
            for cluster in clusters:
                try:
                    self._reconcile_cnpg(cluster)
                except Exception as exc:  # noqa: BLE001 - a test fake: keep the controller alive, report
                    with self._lock:
                        self.controller_errors.append(f"reconcile cluster {cluster.name}: {exc!r}")

    def _select(self, item: _Chaos) -> list[dict[str, Any]] | None:
        spec, ns = item.body["spec"], item.body["metadata"]["namespace"]
        selectors = {".": spec}
        if item.kind == "NetworkChaos" and spec.get("target"):
            selectors[".Target"] = spec["target"]
        records: list[dict[str, Any]] = []
        for key, sel in selectors.items():
            chosen = [p for p in self.pods if pod_selector_matches(sel.get("selector") or {}, p, ns)]
            if sel.get("mode") == "one" and chosen:
                chosen = [random.choice(chosen)]
            if not chosen:
                return None
            records += [
                {
                    "id": f"{p.namespace}/{p.name}",
                    "selectorKey": key,
                    "phase": "Not Injected",
                    "injectedCount": 0,
                    "recoveredCount": 0,
                    "events": [],
                }
                for p in chosen
            ]
        return records

    def _record_event(self, record: dict[str, Any], type_: str, operation: str, message: str = "") -> None:
        # metav1.Time marshals whole seconds (RFC 3339, no fraction), as Chaos Mesh writes them
        event = {"type": type_, "operation": operation, "timestamp": _rfc3339(_now())}
        if message:
            event["message"] = message
        record.setdefault("events", []).append(event)

    def _reconcile(self, key: tuple[str, str, str], item: _Chaos) -> None:
        now = time.time()
        meta = item.body["metadata"]
        annotations = meta.get("annotations") or {}
        experiment = item.body.setdefault("status", {}).setdefault("experiment", {})
        # desiredphase controller
        if item.deleting_since is not None:
            phase = "Stop"
            if experiment.get("desiredPhase") != "Stop":
                self._once(item, "Deleted", "Experiment has been deleted")
        elif item.one_shot:
            phase = "Run"
        elif now >= item.created + item.duration:
            phase = "Stop"
            if experiment.get("desiredPhase") != "Stop":
                self._once(item, "TimeUp", "Time up according to the duration")
        elif annotations.get(PAUSE_ANNOTATION) == "true":
            phase = "Stop"
            if experiment.get("desiredPhase") != "Stop":
                self._once(item, "Paused", "Experiment has been paused")
        else:
            phase = "Run"
            if experiment.get("desiredPhase") != "Run":
                self._once(item, "Started", "Experiment has started")
        with self._lock:
            experiment["desiredPhase"] = phase
            self._set_conditions(item)  # the condition controller runs whatever the records say
        # records controller
        if item.records is None:
            if item.deleting_since is None and now - item.created < self.inject_delay:
                return
            if item.deleting_since is None:
                with self._lock:
                    selected = self._select(item)
                    if selected is None:
                        self._event(
                            item, "Failed", "Failed to select targets: no target has been selected", "Warning"
                        )
                        return
                    item.records = selected
                    self._set_conditions(item)
        for record in item.records or []:
            pod = record["id"].split("/", 1)[1]
            if phase == "Run" and record["phase"] != "Injected":
                if pod in self.fail_apply:
                    with self._lock:
                        self._record_event(
                            record,
                            "Failed",
                            "Apply",
                            f"rpc error: code = Unavailable desc = "
                            f"chaos-daemon on {self._node(pod)} unreachable",
                        )
                        self._event(
                            item,
                            "Failed",
                            f"Failed to apply chaos: chaos-daemon on {self._node(pod)} unreachable",
                            "Warning",
                        )
                    continue
                with self._lock:
                    if item.kind == "PodChaos":
                        self._kill(pod, meta["namespace"])
                    record["phase"] = "Injected"
                    record["injectedCount"] += 1
                    self._record_event(record, "Succeeded", "Apply")
                    self._event(item, "Applied", f"Successfully apply chaos for {record['id']}")
            elif phase == "Stop" and record["phase"] == "Injected":
                if pod in self.stuck_recover:
                    with self._lock:
                        if not any(e["type"] == "Failed" for e in record["events"][-1:]):
                            self._record_event(
                                record,
                                "Failed",
                                "Recover",
                                f"rpc error: code = Unavailable desc = connection error: dial tcp "
                                f"{self._node(pod)}:31767: connect: connection refused",
                            )
                        self._event(
                            item, "Failed", "Failed to recover chaos: chaos-daemon unreachable", "Warning"
                        )
                    continue
                with self._lock:
                    record["phase"] = "Not Injected"
                    record["recoveredCount"] += 1
                    self._record_event(record, "Succeeded", "Recover")
                    self._event(item, "Recovered", f"Successfully recover chaos for {record['id']}")
        recs = item.records or []
        if item.kind == "NetworkChaos" and item.drives_proxy:
            all_in = bool(recs) and all(r["phase"] == "Injected" for r in recs)
            all_out = all(r["phase"] == "Not Injected" for r in recs)
            if all_in and not item.proxy_cut and phase == "Run":
                remaining = item.created + item.duration - now
                item.proxy_cut = self._proxy(
                    {
                        "active": True,
                        "duration_seconds": round(max(1.0, remaining) + self.proxy_backstop_seconds, 3),
                    }
                )
            elif all_out and item.proxy_cut:
                item.proxy_cut = not self._proxy({"active": False})
        with self._lock:
            self._set_conditions(item)
        # finalizers controller
        if item.deleting_since is not None:
            resumed = all(r["phase"] == "Not Injected" for r in recs) and not item.proxy_cut
            forced = annotations.get(CLEAN_FINALIZER) == "forced"
            if (resumed and now - item.deleting_since >= self.recover_delay) or forced:
                with self._lock:
                    self._chaos.pop(key, None)

    def _node(self, pod: str) -> str:
        found = next((p for p in self.pods if p.name == pod), None)
        return found.node if found else "unknown-node"

    def _kill(self, pod_name: str, namespace: str) -> None:
        victim = next((p for p in self.pods if p.name == pod_name and p.namespace == namespace), None)
        if victim is None:
            return
        cluster = self._cnpg.get((namespace, victim.labels.get("cnpg.io/cluster", "")))
        if cluster is not None and pod_name in cluster.node_of:
            # the pod's processes die with it (SIGKILL), then the API object goes
            cluster.instances.kill(cluster.node_of[pod_name])
            cluster.killed[pod_name] = time.monotonic()
            cluster.starting.pop(pod_name, None)
            self.pods.remove(victim)
            return
        self.pods.remove(victim)
        if self.respawn and victim.owner in ("StatefulSet", "ReplicaSet"):
            name = (
                victim.name
                if victim.owner == "StatefulSet"
                else (victim.name.rsplit("-", 1)[0] + "-" + random_suffix())
            )
            self.pods.append(dataclasses.replace(victim, name=name, ready=False))

    # -- the CloudNativePG stand-in

    def add_cnpg_cluster(
        self,
        name: str,
        instances: Instances,
        *,
        namespace: str | None = None,
        network: PodNetwork | None = None,
        synchronous: int | None = 1,
        recreate_delay: float = 1.0,
        start_delay: float = 0.5,
    ) -> FakeCnpgCluster:
        """A ``Cluster`` named ``name`` whose instance pods ``<name>-1``, ``<name>-2``, ... are the nodes of
        ``instances`` in order; each pod's metrics are served on ``network`` while it runs."""
        namespace = namespace or NAMESPACE
        pod_of = {node: f"{name}-{i}" for i, node in enumerate(instances.nodes, 1)}
        spec: dict[str, Any] = {
            "instances": len(pod_of),
            "imageName": "ghcr.io/cloudnative-pg/postgresql:16.2",
            "monitoring": {"enablePodMonitor": True},
            "storage": {"size": "1Gi"},
        }
        if synchronous:
            spec["postgresql"] = {"synchronous": {"method": "any", "number": synchronous}}
        body = {
            "apiVersion": f"{CNPG_GROUP}/{CNPG_VERSION}",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                         "creationTimestamp": _rfc3339(_now())},
            "spec": spec,
            "status": {
                "instances": len(pod_of),
                "instanceNames": sorted(pod_of.values()),
                "latestGeneratedNode": len(pod_of),
            },
        }
        cluster = FakeCnpgCluster(name, namespace, instances, pod_of, body, recreate_delay, start_delay)
        states = instances.states()
        primary = next((n for n, st in states.items() if st.role == "primary"), None)
        with self._lock:
            for node, pod in pod_of.items():
                self.pods.append(self._cnpg_pod(cluster, pod, "primary" if node == primary else "replica"))
                if network is not None:
                    network.register(namespace, pod, self._cnpg_metrics(cluster, pod))
            first = pod_of.get(primary or "")
            body["status"].update(currentPrimary=first, targetPrimary=first)
            self._cnpg[(namespace, name)] = cluster
        self._reconcile_cnpg(cluster)
        return cluster

    def cnpg_cluster(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The Cluster object as the API serves it."""
        with self._lock:
            cluster = self._cnpg[(namespace or NAMESPACE, name)]
            return self._cnpg_object(cluster)

    def _cnpg_pod(self, cluster: FakeCnpgCluster, pod: str, role: str, incarnation: int = 0) -> FakePod:
        return FakePod(pod, cnpg_labels(cluster.name, pod, role), cluster.namespace, container="postgres",
                       owner="Cluster", node=f"node-{'abc'[int(pod.rsplit('-', 1)[1]) % 3]}",
                       incarnation=incarnation, created=_now())

    def _cnpg_metrics(self, cluster: FakeCnpgCluster, pod: str) -> Callable[[], str | None]:
        def provider() -> str | None:
            with self._lock:
                found = next(
                    (p for p in self.pods if p.namespace == cluster.namespace and p.name == pod), None
                )
                running = found is not None and found.phase == "Running" and not found.deleting
            if not running:
                return None  # no pod, no instance manager: the scrape fails
            return cluster.instances.metrics(cluster.node_of[pod], cluster.pod_of, cluster.name)

        return provider

    def _cnpg_object(self, cluster: FakeCnpgCluster) -> dict[str, Any]:
        body = copy.deepcopy(cluster.body)
        body["metadata"]["resourceVersion"] = str(cluster.resource_version)
        return body

    def _in_background(self, what: str, fn: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a test fake: report, keep going
                with self._lock:
                    self.controller_errors.append(f"{what}: {exc!r}")

        thread = threading.Thread(target=run, name=what, daemon=True)
        self._cnpg_threads.append(thread)
        thread.start()

    def _reconcile_cnpg(self, cluster: FakeCnpgCluster) -> None:
        """The operator's loop: killed pods created again, then started; pod labels and readiness; the
        Cluster's status from the nodes' state (as the instance managers report it)."""
        states = cluster.instances.states()  # outside the lock: the lab pair answers over HTTP
        now = time.monotonic()
        to_start: list[str] = []
        with self._lock:
            cluster.states = states
            pods = {
                p.name: p for p in self.pods if p.namespace == cluster.namespace and p.name in cluster.node_of
            }
            for pod, killed_at in list(cluster.killed.items()):
                if now >= killed_at + cluster.recreate_delay:
                    del cluster.killed[pod]
                    cluster.incarnations[pod] = cluster.incarnations.get(pod, 0) + 1
                    fresh = self._cnpg_pod(cluster, pod, "replica", incarnation=cluster.incarnations[pod])
                    fresh.phase, fresh.ready = "Pending", False
                    self.pods.append(fresh)
                    pods[pod] = fresh
                    cluster.starting[pod] = now + cluster.start_delay
            for pod, start_at in list(cluster.starting.items()):
                # a killed primary's instance starts again only once another instance is primary (the
                # operator fails over before its pod comes back: it then joins as a replica)
                moved = cluster.body["status"].get("currentPrimary") != pod
                if now >= start_at and pod in pods and moved:
                    del cluster.starting[pod]
                    pods[pod].phase = "Running"
                    to_start.append(pod)
            self._cnpg_update(cluster, states, pods)
        for pod in to_start:
            node = cluster.node_of[pod]
            self._in_background(f"start {pod}", lambda node=node: cluster.instances.restart(node))

    def _cnpg_update(self, cluster: FakeCnpgCluster, states: Mapping[str, NodeState],
                     pods: Mapping[str, FakePod]) -> None:
        status = cluster.body["status"]
        before = copy.deepcopy(status)
        leaders = [cluster.pod_of[n] for n, st in states.items() if st.role == "primary"]
        leader = leaders[0] if len(leaders) == 1 else None
        current, target = status.get("currentPrimary"), status.get("targetPrimary")
        current_pod = pods.get(current or "")
        if cluster.switchover is not None and leader == cluster.switchover:
            cluster.switchover = None
        if leader is not None and leader != current and cluster.switchover is None:
            # the new primary's instance manager promoted it and reports it: it is the current primary
            current = target = leader
            status["currentPrimaryTimestamp"] = _rfc3339_micro(_now())
        current_pod = pods.get(current or "")
        reason = ""
        if cluster.switchover is not None:
            phase, target = CNPG_PHASE_SWITCHOVER, cluster.switchover
            reason = f"Switching over to {target}"
        elif leader is None or current_pod is None or current_pod.deleting or leader != current:
            # the target primary mirrors the pair: it moves when the nodes elect a new leader (Patroni's
            # ttl), so that a failover that never comes leaves the manual promotion something to do
            phase = CNPG_PHASE_FAILOVER
            reason = f"Failing over from {current}: its instance is not available"
        else:
            serving = all(p in pods and pods[p].phase == "Running" and states[n].role != "down"
                          for n, p in cluster.pod_of.items())
            streaming = all(st.streaming for n, st in states.items() if cluster.pod_of[n] != current)
            phase = CNPG_PHASE_HEALTHY if serving and streaming else CNPG_PHASE_WAITING
            target = current
        for name, pod in pods.items():
            role = "primary" if name == current else "replica"  # moved when the new primary is promoted
            pod.labels.update({"cnpg.io/instanceRole": role, "role": role})
            state = states.get(cluster.node_of[name], NodeState("down"))
            pod.ready = pod.phase == "Running" and state.role != "down"
            for key, value in cluster.pinned.get(name, {}).items():
                setattr(pod, key, copy.deepcopy(value))
        ready = sorted(
            p
            for p, pod in pods.items()
            if pod.ready and pod.phase == "Running" and not pod.deleting and not pod.waiting_reason
        )
        leader_state = states.get(cluster.node_of.get(leader or "", ""))
        status.update(
            currentPrimary=current,
            targetPrimary=target,
            phase=phase,
            phaseReason=reason,
            readyInstances=len(ready),
            instancesStatus={"healthy": ready, "failed": sorted(set(cluster.pod_of.values()) - set(ready))},
            conditions=[{"type": "Ready", "status": "True" if phase == CNPG_PHASE_HEALTHY else "False",
                         "reason": "ClusterIsReady" if phase == CNPG_PHASE_HEALTHY else "ClusterIsNotReady",
                         "message": phase}],
        )
        if leader_state is not None and leader_state.timeline is not None:
            status["timelineID"] = leader_state.timeline
        if status != before:
            cluster.resource_version += 1

    def add_deployment(self, ns: str, name: str) -> None:
        """A Deployment whose pod template a ``kubectl rollout restart`` patches (its pods are not modelled)."""
        with self._lock:
            self.deployments[(ns, name)] = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "generation": 1, "resourceVersion": "1"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/name": name}, "annotations": {}},
                        "spec": {"containers": [{"name": name, "image": f"teei/{name}:1.4.2"}]},
                    },
                },
            }

    def _deployment_request(self, method: str, ns: str, name: str, body: Any) -> tuple[int, Any, str]:
        """``deployments/{name}``: get, and patch of the pod template's annotations (strategic merge)."""
        if method == "GET":
            self.authorize("get", "apps", "deployments", "", ns, name)
        elif method == "PATCH":
            self.authorize("patch", "apps", "deployments", "", ns, name)
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        with self._lock:
            obj = self.deployments.get((ns, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'deployments.apps "{name}" not found',
                               {"name": name, "group": "apps", "kind": "deployments"})
            if method == "PATCH":
                annotations = (((body or {}).get("spec") or {}).get("template") or {}).get("metadata", {}).get(
                    "annotations") or {}
                obj["spec"]["template"]["metadata"]["annotations"].update(annotations)
                obj["metadata"]["generation"] += 1
                obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            return 200, copy.deepcopy(obj), "application/json"

    def _cnpg_request(self, method: str, ns: str, rest: list[str], body: Any) -> tuple[int, Any, str]:
        """``clusters`` (list), ``clusters/{name}`` (get), ``clusters/{name}/status`` (get, merge patch)."""
        g, r = CNPG_GROUP, "clusters"
        if rest == [r] and method == "GET":
            self.authorize("list", g, r, "", ns)
            with self._lock:
                items = [self._cnpg_object(c) for (n, _), c in self._cnpg.items() if n == ns]
            return 200, {"apiVersion": f"{g}/{CNPG_VERSION}", "kind": "ClusterList",
                         "metadata": {"resourceVersion": "1"}, "items": items}, "application/json"
        if len(rest) not in (2, 3) or rest[0] != r or (len(rest) == 3 and rest[2] != "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name, sub = rest[1], (rest[2] if len(rest) == 3 else "")
        if method == "GET":
            self.authorize("get", g, r, sub, ns, name)
        elif method == "PATCH" and sub == "status":
            self.authorize("patch", g, r, sub, ns, name)
        else:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        with self._lock:
            cluster = self._cnpg.get((ns, name))
            if cluster is None:
                details = {"name": name, "group": g, "kind": r}
                raise ApiError(404, "NotFound", f'{r}.{g} "{name}" not found', details)
            if method == "GET":
                return 200, self._cnpg_object(cluster), "application/json"
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
            if cluster.bump_before_patch > 0:
                cluster.bump_before_patch -= 1
                cluster.resource_version += 1  # the operator wrote the status meanwhile
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and str(wanted) != str(cluster.resource_version):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {r}.{g} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    {"name": name, "group": g, "kind": r},
                )
            cluster.status_patches.append(copy.deepcopy(body))
            _merge_patch(cluster.body["status"], body.get("status") or {})
            cluster.resource_version += 1
            target = cluster.body["status"].get("targetPrimary")
            promote = target if target in cluster.node_of and target != cluster.body["status"].get(
                "currentPrimary") else None
            if promote is not None:
                cluster.switchover = promote
            answer = self._cnpg_object(cluster)
        if promote is not None:
            node = cluster.node_of[promote]
            self._in_background(f"promote {promote}", lambda: cluster.instances.promote(node))
        return 200, answer, "application/json"

    # -- request handling (called by the handler thread)

    def _store(self, body: dict[str, Any], ns: str, plural: str) -> _Chaos:
        meta = body.setdefault("metadata", {})
        created = time.time()
        meta.update(
            {
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(int(created * 1000)),
                "generation": 1,
                "creationTimestamp": _rfc3339(datetime.fromtimestamp(created, timezone.utc)),
                "finalizers": [FINALIZER],
            }
        )
        spec = body.get("spec") or {}
        duration = chaos.parse_duration(spec["duration"]) if spec.get("duration") else 1e9
        item = _Chaos(body=body, kind=CHAOS_KINDS[plural], created=created, duration=duration)
        body["status"] = {"experiment": {}}
        with self._lock:
            self._chaos[(plural, ns, meta["name"])] = item
        return item

    def authorize(
        self, verb: str, group: str, resource: str, subresource: str, ns: str, name: str = ""
    ) -> None:
        if (verb, group, resource, subresource) in self.denied:
            what = f"{resource}/{subresource}" if subresource else resource
            kind = f"{resource}.{group}" if group else resource
            raise ApiError(
                403,
                "Forbidden",
                f"{kind} {json.dumps(name) + ' ' if name else ''}is forbidden: User "
                f'"{SERVICE_ACCOUNT.format(ns=ns)}" cannot {verb} resource "{what}" in API group '
                f'"{group}" in the namespace "{ns}"',
                {"name": name, "group": group, "kind": resource},
            )

    def transient(self, method: str, path: str) -> ApiError | None:
        with self._lock:
            for fault in self._faults:
                wanted_method, part, statuses = fault
                if wanted_method == method and part in path and statuses:
                    code = statuses.pop(0)
                    reason, message = _TRANSIENT.get(code, ("InternalError", "error"))
                    headers = {"Retry-After": "1"} if code == 429 else {}
                    return ApiError(
                        code, reason, message, {"retryAfterSeconds": 1} if code == 429 else None, headers
                    )
        return None

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, str]:
        """One request; returns (status, payload, content type) or raises ApiError."""
        parts = [p for p in path.split("/") if p]
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 4 and method == "GET":
            ns = parts[3]
            self.authorize("get", "", "namespaces", "", ns, ns)
            return (
                200,
                {
                    "kind": "Namespace",
                    "apiVersion": "v1",
                    "metadata": {"name": ns, "annotations": dict(self.namespace_annotations.get(ns, {}))},
                    "status": {"phase": "Active"},
                },
                "application/json",
            )
        if (
            parts[:3] == ["api", "v1", "namespaces"]
            and len(parts) == 5
            and parts[4] == "events"
            and method == "GET"
        ):
            ns = parts[3]
            self.authorize("list", "", "events", "", ns)
            with self._lock:
                items = [
                    copy.deepcopy(e)
                    for e in self.events
                    if e["metadata"]["namespace"] == ns
                    and field_selector_matches(query.get("fieldSelector", ""), e)
                ]
            return (
                200,
                {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items},
                "application/json",
            )
        # /api/v1/namespaces/{ns}/pods[/{name}[/log]]
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "pods":
            return self._pods_request(method, parts, query)
        if (
            path == f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{chaos.CRD_NAME}"
            and method == "GET"
        ):
            if not self.crd_installed or self.crd_path is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'customresourcedefinitions.apiextensions.k8s.io "{chaos.CRD_NAME}" not found',
                    {
                        "name": chaos.CRD_NAME,
                        "group": "apiextensions.k8s.io",
                        "kind": "customresourcedefinitions",
                    },
                )
            return 200, yaml.safe_load(self.crd_path.read_text(encoding="utf-8")), "application/json"
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
            self.authorize("create", "authorization.k8s.io", "selfsubjectaccessreviews", "", "")
            attrs = (body or {}).get("spec", {}).get("resourceAttributes") or {}
            key = (
                attrs.get("verb", ""),
                attrs.get("group", ""),
                attrs.get("resource", ""),
                attrs.get("subresource", ""),
            )
            allowed = key not in self.denied
            out = copy.deepcopy(body)
            out.setdefault("metadata", {})
            out["status"] = {"allowed": allowed}
            if not allowed:
                out["status"]["reason"] = "no RBAC policy matched"
            else:
                out["status"]["reason"] = 'RBAC: allowed by RoleBinding "gameday"'
            return 201, out, "application/json"
        if (
            path == "/apis/authentication.k8s.io/v1/selfsubjectreviews"
            and method == "POST"
            and self.whoami_supported
        ):
            out = copy.deepcopy(body) or {}
            out["status"] = {
                "userInfo": {
                    "username": SERVICE_ACCOUNT.format(ns="teei-prod"),
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                }
            }
            return 201, out, "application/json"
        if path.startswith(CNPG_PREFIX):
            rest = path[len(CNPG_PREFIX):].split("/")
            return self._cnpg_request(method, rest[0], rest[1:], body)
        if path.startswith(APPS_PREFIX):
            rest = path[len(APPS_PREFIX):].split("/")
            if len(rest) == 3 and rest[1] == "deployments":
                return self._deployment_request(method, rest[0], rest[2], body)
        if path.startswith(CHAOS_PREFIX):
            rest = path[len(CHAOS_PREFIX) :].split("/")
            if len(rest) in (2, 3) and rest[1] in CHAOS_KINDS:
                return self._chaos_request(
                    method, rest[1], rest[0], rest[2] if len(rest) == 3 else None, query, body
                )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _pods_request(self, method: str, parts: list[str], query: dict[str, str]) -> tuple[int, Any, str]:
        ns = parts[3]
        if len(parts) == 5 and method == "GET":
            self.authorize("list", "", "pods", "", ns)
            try:
                with self._lock:
                    items = [
                        p.to_api()
                        for p in self.pods
                        if p.namespace == ns and selector_matches(query.get("labelSelector", ""), p.labels)
                    ]
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from exc
            return (
                200,
                {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items},
                "application/json",
            )
        if len(parts) in (6, 7) and method == "GET":
            name = parts[5]
            sub = parts[6] if len(parts) == 7 else ""
            if sub not in ("", "log"):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self.authorize("get", "", "pods", sub, ns, name)
            with self._lock:
                pod = next((p for p in self.pods if p.namespace == ns and p.name == name), None)
            if pod is None:
                raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
            if not sub:
                return 200, pod.to_api(), "application/json"
            container = query.get("container")
            if not container:
                if len(pod.containers) > 1:
                    raise ApiError(
                        400,
                        "BadRequest",
                        f"a container name must be specified for pod {name}, choose one of: "
                        f"[{' '.join(pod.containers)}]",
                    )
                container = pod.containers[0]
            if container not in pod.containers:
                raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
            previous = query.get("previous") in ("true", "True", "1")
            if previous and (container != pod.main_container or pod.restarts == 0):
                raise ApiError(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
            tail = int(query["tailLines"]) if "tailLines" in query else None
            text = pod.log_text(container, previous=previous, tail_lines=tail)
            if "limitBytes" in query:
                text = text.encode()[: int(query["limitBytes"])].decode(errors="ignore")
            return 200, text, "text/plain"
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _chaos_request(
        self, method: str, plural: str, ns: str, name: str | None, query: dict[str, str], body: Any
    ) -> tuple[int, Any, str]:
        if not self.crd_installed:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        g, r, kind = chaos.GROUP, plural, CHAOS_KINDS[plural]
        if name is None and method == "GET":
            self.authorize("list", g, r, "", ns)
            selector = query.get("labelSelector", "")
            with self._lock:
                items = [
                    copy.deepcopy(c.body)
                    for (p, n, _), c in self._chaos.items()
                    if p == plural
                    and n == ns
                    and selector_matches(selector, c.body["metadata"].get("labels") or {})
                ]
            return (
                200,
                {
                    "apiVersion": chaos.API_VERSION,
                    "kind": f"{kind}List",
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                },
                "application/json",
            )
        if name is None and method == "POST":
            self.authorize("create", g, r, "", ns)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
            meta = body.get("metadata") or {}
            if meta.get("namespace") not in (None, ns):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            body = copy.deepcopy(body)
            body.setdefault("metadata", {})["namespace"] = ns
            if kind == "NetworkChaos":
                problems = chaos.network_chaos_problems(body, self.schema)
            else:
                problems = chaos.pod_chaos_problems(body)
            if problems:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{kind}.chaos-mesh.org "{meta.get("name")}" is invalid: ' + "; ".join(problems),
                    {
                        "name": meta.get("name"),
                        "group": g,
                        "kind": kind,
                        "causes": [
                            {"reason": "FieldValueInvalid", "message": p, "field": p.split(":", 1)[0]}
                            for p in problems
                        ],
                    },
                )
            with self._lock:
                if (plural, ns, meta["name"]) in self._chaos:
                    raise ApiError(
                        409,
                        "AlreadyExists",
                        f'{r}.chaos-mesh.org "{meta["name"]}" already exists',
                        {"name": meta["name"], "group": g, "kind": r},
                    )
                if query.get("dryRun") == "All":
                    out = copy.deepcopy(body)
                    out["metadata"]["creationTimestamp"] = _rfc3339(_now())
                    out["metadata"]["uid"] = str(uuid.uuid4())
                    return 201, out, "application/json"
                stored = self._store(body, ns, plural)
                return 201, copy.deepcopy(stored.body), "application/json"
        if name is not None and method in ("GET", "DELETE"):
            self.authorize("get" if method == "GET" else "delete", g, r, "", ns, name)
            with self._lock:
                item = self._chaos.get((plural, ns, name))
                if item is None:
                    raise ApiError(
                        404,
                        "NotFound",
                        f'{r}.chaos-mesh.org "{name}" not found',
                        {"name": name, "group": g, "kind": r},
                    )
                if method == "DELETE" and item.deleting_since is None:
                    item.deleting_since = time.time()
                    item.body["metadata"]["deletionTimestamp"] = _rfc3339(_now())
                    item.body["metadata"]["deletionGracePeriodSeconds"] = 0
                return 200, copy.deepcopy(item.body), "application/json"
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )


class _Handler(BaseHTTPRequestHandler):
    fake: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(
        self, code: int, payload: Any, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with self.fake._lock:
            self.fake.requests.append((self.command, self.path))
        headers: dict[str, str] = {}
        try:
            auth = self.headers.get("Authorization") or ""
            if not auth.lower().startswith("bearer ") or auth.split(" ", 1)[1] not in self.fake.valid_tokens:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            transient = self.fake.transient(self.command, split.path)
            if transient is not None:
                raise transient
            body = json.loads(raw) if raw else None
            code, payload, ctype = self.fake.handle(self.command, split.path, query, body)
        except ApiError as exc:
            code, payload, ctype, headers = exc.code, exc.status(), "application/json", exc.headers
        except json.JSONDecodeError as exc:
            code, payload, ctype = (
                400,
                ApiError(400, "BadRequest", f"invalid JSON: {exc}").status(),
                "application/json",
            )
        with self.fake._lock:
            self.fake.answers.append((self.command, self.path, code))
        self._send(code, payload, ctype, headers)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# --- helpers the Kubernetes tests share (kept here, not in conftest.py: test modules must not import
#     `conftest`, a name every test folder's conftest.py shares) ----------------------------------

NAMESPACE = "teei-staging"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proxy_status(control_url: str) -> dict[str, Any]:
    """The lab partition proxy's ``GET /partition``."""
    with urlopen(control_url + "/partition", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def nats_reachable_through(port: int, timeout: float = 1.0) -> bool:
    """What a service sees: does NATS greet us (INFO) through the proxy within ``timeout``?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(5).startswith(b"INFO")
    except OSError:
        return False


__all__ = [
    "NAMESPACE",
    "TOKEN",
    "FakeApiServer",
    "FakePod",
    "free_port",
    "jwt_token",
    "nats_reachable_through",
    "pods_for_lab",
    "proxy_status",
    "selector_matches",
    "service_labels",
    "wait_for",
]
