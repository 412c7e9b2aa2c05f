"""An HTTP-level fake Kubernetes API server with a stand-in Chaos Mesh controller, for tests.

No Kubernetes API server can run on the test machine, so this is a real HTTP server (``http.server``
in a thread, 127.0.0.1, a free port) that speaks the REST paths the ``kubernetes`` Python client calls
and answers like the real server does, ``Status`` objects included:

- ``GET  /api/v1/namespaces/{ns}/pods[?labelSelector=]``            PodList (equality and set selectors)
- ``GET  /api/v1/namespaces/{ns}/pods/{name}/log[?tailLines=]``     text/plain (``sinceSeconds`` ignored)
- ``POST /apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/networkchaos[?dryRun=All]``  201 | 409 | 422
- ``GET  .../networkchaos[?labelSelector=]``, ``GET|DELETE .../networkchaos/{name}``  200 | 404
- ``GET  /apis/apiextensions.k8s.io/v1/customresourcedefinitions/networkchaos.chaos-mesh.org``
- ``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``  allowed unless a test ``deny``-ed
  the verb, and then the verb's real call answers 403 Forbidden too.

Requests need the bearer token written into the kubeconfig (401 otherwise). NetworkChaos bodies are
validated against the CRD's ``openAPIV3Schema`` and the webhook rules (422 Invalid, with causes).

The controller, like Chaos Mesh: on a new NetworkChaos, after ``inject_delay`` it selects the pods
(``Selected``), cuts the lab's partition proxy (``POST {proxy_control_url}/partition``) and reports
``AllInjected=True`` with ``desiredPhase=Run``. At creationTimestamp + ``duration`` it heals the proxy
and reports ``desiredPhase=Stop``, ``AllRecovered=True``, and keeps the object (event ``TimeUp``). On
DELETE the object gets a ``deletionTimestamp`` and a finalizer; the controller heals the proxy, then
removes the object after ``recover_delay``.
"""

from __future__ import annotations

import copy
import json
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

from gamedaylib import chaos

TOKEN = "gameday-fake-apiserver-token"
SERVICE_ACCOUNT = "system:serviceaccount:{ns}:gameday"
CHAOS_PREFIX = f"/apis/{chaos.GROUP}/{chaos.VERSION}/namespaces/"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakePod:
    """A pod the fake server reports; its log is read from ``log_file`` (live) or ``log_lines``."""

    name: str
    labels: dict[str, str]
    namespace: str = "teei-prod"
    phase: str = "Running"
    ready: bool = True
    log_file: Path | None = None
    log_lines: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        container = self.name.rsplit("-", 2)[0] if "-" in self.name else self.name
        ready = "True" if self.ready else "False"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": dict(self.labels),
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.namespace + "/" + self.name)),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"containers": [{"name": container, "image": f"example.org/{container}:1"}]},
            "status": {
                "phase": self.phase,
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": ready},
                    {"type": "ContainersReady", "status": ready},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "containerStatuses": [
                    {
                        "name": container,
                        "ready": self.ready,
                        "restartCount": 0,
                        "image": f"example.org/{container}:1",
                        "imageID": f"example.org/{container}@sha256:" + "0" * 64,
                        "started": self.phase == "Running",
                    }
                ],
            },
        }

    def log_text(self, tail_lines: int | None = None) -> str:
        if self.log_file is not None:
            try:
                lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                lines = []
        else:
            lines = list(self.log_lines)
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        return "".join(line + "\n" for line in lines)


def pods_for_lab(lab_dir: str | Path, namespace: str) -> list[FakePod]:
    """The lab's processes as the pods of the playbook (``nats-0``, ``api-gateway-xxx``, ...)."""
    logs = Path(lab_dir) / "logs"
    return [
        FakePod("nats-0", {"app.kubernetes.io/name": "nats"}, namespace, log_file=logs / "nats.log"),
        FakePod(
            "api-gateway-7c9d5b6f4-x2x7k",
            {"app.kubernetes.io/name": "api-gateway", "app.kubernetes.io/part-of": "teei"},
            namespace,
            log_file=logs / "gateway.log",
        ),
        FakePod(
            "reporting-5f8b9c7d6-q4kzp",
            {"app.kubernetes.io/name": "reporting", "app.kubernetes.io/part-of": "teei"},
            namespace,
            log_file=logs / "reporting.log",
        ),
        FakePod(
            "postgresql-0",
            {"app.kubernetes.io/name": "postgresql"},
            namespace,
            log_file=logs / "postgres.log",
        ),
    ]


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


def pod_selector_matches(spec: Mapping[str, Any], pod: FakePod, default_ns: str) -> bool:
    """Chaos Mesh's ``PodSelectorSpec`` (namespaces, labelSelectors, expressionSelectors, pods)."""
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
    pods = spec.get("pods")
    if pods is not None and pod.name not in (pods.get(pod.namespace) or []):
        return False
    return True


# --- the server ----------------------------------------------------------------------------------


@dataclass
class _Chaos:
    body: dict[str, Any]
    created: float  # time.time()
    duration: float  # seconds
    injected: bool = False
    expired: bool = False
    deleting_since: float | None = None
    proxy_cut: bool = False


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

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
        self.schema = chaos.load_crd_schema(self.crd_path) if self.crd_path else None
        self.denied: set[tuple[str, str, str, str]] = set()  # (verb, group, resource, subresource)
        self.requests: list[tuple[str, str]] = []  # (method, path?query) in order
        self.proxy_calls: list[dict[str, Any]] = []
        self.controller_errors: list[str] = []
        self._chaos: dict[tuple[str, str], _Chaos] = {}
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
        for t in self._threads:
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
        self, path: str | Path, *, context: str = "fake-cluster", namespace: str = "default"
    ) -> Path:
        p = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "gameday", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": context, "context": {"cluster": "fake", "user": "gameday", "namespace": namespace}}
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

    def put_chaos(self, body: Mapping[str, Any], *, injected: bool = True) -> None:
        """Seed an existing NetworkChaos (another run's), as the controller would have left it."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        obj = self._store(copy.deepcopy(dict(body)), ns)
        with self._lock:
            item = self._chaos[(ns, name)]
            item.injected = injected
            self._set_status(item, selected=True, injected=injected, recovered=not injected, phase="Run")
        _ = obj

    def chaos_objects(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(c.body) for (ns, _), c in self._chaos.items() if namespace in (None, ns)]

    def mutating_requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r[0] in ("POST", "PUT", "PATCH", "DELETE") and "accessreview" not in r[1]
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

    def _set_status(
        self,
        item: _Chaos,
        *,
        selected: bool,
        injected: bool,
        recovered: bool,
        phase: str,
        event: str | None = None,
        message: str = "",
    ) -> None:
        status = item.body.setdefault("status", {})
        status["conditions"] = [
            {"type": "Selected", "status": str(selected)},
            {"type": "AllInjected", "status": str(injected)},
            {"type": "AllRecovered", "status": str(recovered)},
            {"type": "Paused", "status": "False"},
        ]
        experiment = status.setdefault("experiment", {})
        experiment["desiredPhase"] = phase
        if event:
            records = experiment.setdefault("containerRecords", [])
            if not records:
                records.append(
                    {
                        "id": item.body["metadata"]["namespace"] + "/nats-0",
                        "selectorKey": ".",
                        "phase": "Not Injected",
                        "injectedCount": 0,
                        "recoveredCount": 0,
                        "events": [],
                    }
                )
            rec = records[0]
            rec["events"].append(
                {
                    "type": event,
                    "operation": "Apply" if injected else "Recover",
                    "timestamp": _rfc3339(_now()),
                    **({"message": message} if message else {}),
                }
            )
            if event == "Succeeded" and injected:
                rec["phase"], rec["injectedCount"] = "Injected", rec["injectedCount"] + 1
            elif event == "Succeeded":
                rec["phase"], rec["recoveredCount"] = "Not Injected", rec["recoveredCount"] + 1

    def _controller_loop(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                items = list(self._chaos.items())
            for key, item in items:
                self._reconcile(key, item)

    def _selected(self, item: _Chaos) -> bool:
        spec, ns = item.body["spec"], item.body["metadata"]["namespace"]
        nats = [p for p in self.pods if pod_selector_matches(spec["selector"], p, ns)]
        target = spec.get("target") or {}
        services = [p for p in self.pods if pod_selector_matches(target.get("selector") or {}, p, ns)]
        return bool(nats) and bool(services)

    def _reconcile(self, key: tuple[str, str], item: _Chaos) -> None:
        now = time.time()
        if item.deleting_since is not None:
            if item.proxy_cut:
                item.proxy_cut = not self._proxy({"active": False})
            with self._lock:
                self._set_status(
                    item, selected=True, injected=False, recovered=not item.proxy_cut, phase="Stop"
                )
                if not item.proxy_cut and now - item.deleting_since >= self.recover_delay:
                    self._chaos.pop(key, None)
            return
        if item.expired:
            return
        if now >= item.created + item.duration:
            if item.proxy_cut:
                item.proxy_cut = not self._proxy({"active": False})
            if not item.proxy_cut:
                with self._lock:
                    item.expired = True
                    self._set_status(
                        item,
                        selected=True,
                        injected=False,
                        recovered=True,
                        phase="Stop",
                        event="Succeeded" if item.injected else None,
                    )
            return
        if item.injected or now - item.created < self.inject_delay:
            return
        if not self._selected(item):
            with self._lock:
                self._set_status(item, selected=False, injected=False, recovered=True, phase="Run")
            return
        remaining = item.created + item.duration - now
        ok = self._proxy(
            {"active": True, "duration_seconds": round(remaining + self.proxy_backstop_seconds, 3)}
        )
        with self._lock:
            item.proxy_cut = ok
            item.injected = ok
            if ok:
                self._set_status(
                    item, selected=True, injected=True, recovered=False, phase="Run", event="Succeeded"
                )
            else:
                self._set_status(
                    item,
                    selected=True,
                    injected=False,
                    recovered=True,
                    phase="Run",
                    event="Failed",
                    message="could not apply the partition",
                )

    # -- request handling (called by the handler thread)

    def _store(self, body: dict[str, Any], ns: str) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        created = time.time()
        meta.update(
            {
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(int(created * 1000)),
                "generation": 1,
                "creationTimestamp": _rfc3339(datetime.fromtimestamp(created, timezone.utc)),
                "finalizers": ["chaos-mesh/records"],
            }
        )
        duration = (
            chaos.parse_duration(body["spec"]["duration"]) if body.get("spec", {}).get("duration") else 1e9
        )
        item = _Chaos(body=body, created=created, duration=duration)
        self._set_status(item, selected=False, injected=False, recovered=True, phase="Run")
        with self._lock:
            self._chaos[(ns, meta["name"])] = item
        return body

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

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, str]:
        """One request; returns (status, payload, content type) or raises ApiError."""
        parts = [p for p in path.split("/") if p]
        # /api/v1/namespaces/{ns}/pods[/{name}/log]
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "pods":
            ns = parts[3]
            if len(parts) == 5 and method == "GET":
                self.authorize("list", "", "pods", "", ns)
                try:
                    items = [
                        p.to_api()
                        for p in self.pods
                        if p.namespace == ns and selector_matches(query.get("labelSelector", ""), p.labels)
                    ]
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from exc
                return (
                    200,
                    {
                        "kind": "PodList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"},
                        "items": items,
                    },
                    "application/json",
                )
            if len(parts) == 7 and parts[6] == "log" and method == "GET":
                self.authorize("get", "", "pods", "log", ns, parts[5])
                pod = next((p for p in self.pods if p.namespace == ns and p.name == parts[5]), None)
                if pod is None:
                    raise ApiError(
                        404, "NotFound", f'pods "{parts[5]}" not found', {"name": parts[5], "kind": "pods"}
                    )
                tail = int(query["tailLines"]) if "tailLines" in query else None
                return 200, pod.log_text(tail), "text/plain"
            if len(parts) == 6 and method == "GET":
                self.authorize("get", "", "pods", "", ns, parts[5])
                pod = next((p for p in self.pods if p.namespace == ns and p.name == parts[5]), None)
                if pod is None:
                    raise ApiError(
                        404, "NotFound", f'pods "{parts[5]}" not found', {"name": parts[5], "kind": "pods"}
                    )
                return 200, pod.to_api(), "application/json"
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
        if path.startswith(CHAOS_PREFIX):
            rest = path[len(CHAOS_PREFIX) :].split("/")
            if len(rest) in (2, 3) and rest[1] == chaos.PLURAL:
                return self._chaos_request(method, rest[0], rest[2] if len(rest) == 3 else None, query, body)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _chaos_request(
        self, method: str, ns: str, name: str | None, query: dict[str, str], body: Any
    ) -> tuple[int, Any, str]:
        if not self.crd_installed:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        g, r = chaos.GROUP, chaos.PLURAL
        if name is None and method == "GET":
            self.authorize("list", g, r, "", ns)
            selector = query.get("labelSelector", "")
            with self._lock:
                items = [
                    copy.deepcopy(c.body)
                    for (n, _), c in self._chaos.items()
                    if n == ns and selector_matches(selector, c.body["metadata"].get("labels") or {})
                ]
            return (
                200,
                {
                    "apiVersion": chaos.API_VERSION,
                    "kind": "NetworkChaosList",
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
            problems = chaos.network_chaos_problems(body, self.schema)
            if problems:
                raise ApiError(
                    422,
                    "Invalid",
                    f'NetworkChaos.chaos-mesh.org "{meta.get("name")}" is invalid: ' + "; ".join(problems),
                    {
                        "name": meta.get("name"),
                        "group": g,
                        "kind": "NetworkChaos",
                        "causes": [
                            {"reason": "FieldValueInvalid", "message": p, "field": p.split(":", 1)[0]}
                            for p in problems
                        ],
                    },
                )
            with self._lock:
                if (ns, meta["name"]) in self._chaos:
                    raise ApiError(
                        409,
                        "AlreadyExists",
                        f'networkchaos.chaos-mesh.org "{meta["name"]}" already exists',
                        {"name": meta["name"], "group": g, "kind": r},
                    )
                if query.get("dryRun") == "All":
                    out = copy.deepcopy(body)
                    out["metadata"]["creationTimestamp"] = _rfc3339(_now())
                    out["metadata"]["uid"] = str(uuid.uuid4())
                    return 201, out, "application/json"
                stored = self._store(body, ns)
                return 201, copy.deepcopy(stored), "application/json"
        if name is not None and method in ("GET", "DELETE"):
            self.authorize("get" if method == "GET" else "delete", g, r, "", ns, name)
            with self._lock:
                item = self._chaos.get((ns, name))
                if item is None:
                    raise ApiError(
                        404,
                        "NotFound",
                        f'networkchaos.chaos-mesh.org "{name}" not found',
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        return

    def _send(self, code: int, payload: Any, content_type: str) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with self.fake._lock:
            self.fake.requests.append((self.command, self.path))
        try:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            body = json.loads(raw) if raw else None
            code, payload, ctype = self.fake.handle(self.command, split.path, query, body)
        except ApiError as exc:
            code, payload, ctype = exc.code, exc.status(), "application/json"
        except json.JSONDecodeError as exc:
            code, payload, ctype = (
                400,
                ApiError(400, "BadRequest", f"invalid JSON: {exc}").status(),
                "application/json",
            )
        self._send(code, payload, ctype)

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
