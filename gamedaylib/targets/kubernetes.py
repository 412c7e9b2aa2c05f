"""The Kubernetes target: the team's cluster, with the partition as a Chaos Mesh ``NetworkChaos``.

The API session (identity, retries, expired tokens) is ``kubeapi.KubeApi``; the Chaos Mesh object's
life (create, injected, status, events, delete and finalizer) is ``chaosmesh.ChaosExperiment``, the
same for a ``NetworkChaos`` here as for GAMEDAY-002's ``PodChaos``. This module decides *what* to cut
and checks the cluster is fit:

- **pods by label selectors**, as the official Helm charts label them (``app.kubernetes.io/name``,
  ``/instance``, ``/component``): ``nats_selector`` for the NATS StatefulSet (``nats-box``, which
  shares ``app.kubernetes.io/name: nats`` in the official chart, is always excluded by its
  ``component``), ``service_selectors`` per service (or, as before, ``service_selector`` for all of
  them, or names in ``service_pods``: ``<name>-<hash>-<id>`` Deployment pods and ``<name>-<n>``
  StatefulSet pods only). A pod is judged only when Running and not being deleted; Evicted and
  Completed pods and Job pods are ignored (and named). Chaos Mesh is told the same: label selectors
  carry ``podPhaseSelectors: [Running]``, service pods are given by exact name.
- **pre-flight**: the context and API server it is about to act on; the production guard (namespace,
  and context, cluster and API server names); the token's remaining life; RBAC (one
  SelfSubjectAccessReview per verb); the CRD served; no other gameday fault active; Chaos Mesh's
  namespace filter (``chaos-mesh.org/inject=enabled``); pods Running and Ready; the fault accepted
  by a server-side dry run (``dryRun=All``); Prometheus holding the service readings the stop
  conditions need; the NATS consumer's leader found through ``nats_monitor_urls``.
- **inject**: create ``nats-partition-<run_id>`` with ``duration`` = the requested deadline plus the
  longest injection wait (Chaos Mesh's clock starts at creation: this way the fault covers the planned
  partition from T+0 whatever the injection took), wait for ``AllInjected=True`` with
  ``desiredPhase=Run``: that moment is T+0.
- **fault_status**: still in force, or ended early (duration expired, paused, deleted by someone else)
  and when (the records' ``Recover`` events); pods created after the injection are named (Chaos Mesh
  never adds them to the fault).
- **heal**: DELETE first (404 = already gone), retried through 429/5xx/timeouts until the deadline,
  then wait for the records' recovery and the finalizer.
- **logs** of pods with sidecars: ``container`` (``service_containers``, default the service's name),
  ``limit_bytes``, and the ``previous`` container's log after a restart.

Dry run (``dry_run=True``): reads as usual; ``inject`` sends the create with ``dryRun=All`` and returns
the moment of the answer; ``heal`` and ``partition_active`` touch nothing.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client

from gamedaylib import chaos
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import (
    GamedayError,
    HealFailed,
    InjectionFailed,
    InvalidParameters,
    ProbeError,
    ProductionGuard,
    TargetError,
)
from gamedaylib.guard import guard_production
from gamedaylib.parameters import DEFAULT_PRODUCTION_PATTERNS
from gamedaylib.probes.metrics import PrometheusProbe
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.targets.base import Check, Endpoints, FaultStatus, GroundTruth
from gamedaylib.targets.chaosmesh import (
    NETWORK_CHAOS,
    ChaosExperiment,
    chaos_events,
    desired_phase,
    is_injected,
    is_recovered,
    records,
)
from gamedaylib.targets.kubeapi import KubeApi, KubeIdentity, api_error_text, status_of, translate
from gamedaylib.targets.kubepods import Coverage, PodView, container_for, name_matches, pod_view, pods_check

GAMEDAY_ID = "GAMEDAY-001"
RBAC_MANIFEST = "deploy/rbac.yaml"
NATS_CHART_SELECTOR: dict[str, str] = {
    "app.kubernetes.io/name": "nats",
    "app.kubernetes.io/component": "nats",
}
NATS_BOX_EXCLUSION: dict[str, list[str]] = {"app.kubernetes.io/component": ["nats-box"]}
NAMESPACE_INJECT_ANNOTATION = "chaos-mesh.org/inject"
DEFAULT_PRODUCTION_CLUSTER_PATTERNS = ("*prod*",)
DEFAULT_LOG_LIMIT_BYTES = 8 * 1024 * 1024
# what the stop conditions and the "NATS connections back" wait read, per service, from Prometheus
SERVICE_READINGS: dict[str, tuple[str, ...]] = {
    "api-gateway": ("event_buffer_size", "event_buffer_capacity", "http_requests_total", "nats_connected"),
    "reporting": ("nats_connected",),
}


@dataclass(frozen=True)
class NewParameter:
    """A parameter this target reads that the runbook does not declare yet (``from_params`` reads it
    with ``default`` meanwhile)."""

    name: str
    type: str
    default: Any
    help: str


NEW_PARAMETERS: tuple[NewParameter, ...] = (
    NewParameter(
        "service_selectors",
        "dict[str, dict]",
        {},
        "service -> label selector of its pods (official charts: app.kubernetes.io/name, /instance); "
        "empty: service_selector or service_pods",
    ),
    NewParameter(
        "service_containers",
        "dict[str, str]",
        {},
        "service -> the container whose logs are read (default: the service's name)",
    ),
    NewParameter(
        "log_limit_bytes", "int", DEFAULT_LOG_LIMIT_BYTES, "at most this many bytes per pod log read"
    ),
    NewParameter(
        "production_cluster_patterns",
        "list[str]",
        list(DEFAULT_PRODUCTION_CLUSTER_PATTERNS),
        "kube context, cluster and API server names that mean production (with the namespace patterns)",
    ),
    NewParameter(
        "chaos_filter_namespace",
        "bool",
        False,
        "Chaos Mesh runs with enableFilterNamespace: pre-flight requires the namespace's "
        "chaos-mesh.org/inject=enabled annotation",
    ),
)


@dataclass(frozen=True)
class Permission:
    """One verb the runbook needs, as a SelfSubjectAccessReview asks it; ``required`` ones are fatal."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    required: bool = True
    why: str = ""

    def describe(self, namespace: str) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group:
            what += f".{self.group}"
        return f"{self.verb} {what} in namespace {namespace}"


PERMISSIONS: tuple[Permission, ...] = (
    Permission("get", "pods", why="pod details (node of a stuck record)"),
    Permission("list", "pods", why="pods Running and Ready; pods created after injection"),
    Permission("get", "pods", subresource="log", why="duplicate_event lines in the reporting logs"),
    Permission("create", chaos.PLURAL, chaos.GROUP, why="inject (and the server-side dry run)"),
    Permission("get", chaos.PLURAL, chaos.GROUP, why="status: AllInjected, desiredPhase, records"),
    Permission("list", chaos.PLURAL, chaos.GROUP, why="Chaos Mesh installed; no other gameday"),
    Permission("delete", chaos.PLURAL, chaos.GROUP, why="heal and rollback"),
    Permission("list", "events", required=False, why="selection failures, TimeUp and Paused are Events only"),
    Permission("get", "namespaces", required=False, why="Chaos Mesh's namespace filter annotation"),
    Permission(
        "create",
        "pods",
        subresource="portforward",
        required=False,
        why="the laptop flow: kubectl port-forward to each NATS pod's monitoring port",
    ),
)


@dataclass(frozen=True)
class KubernetesSettings:
    """What the target needs from the parameters (see ``from_params``)."""

    namespace: str
    run_id: str
    gameday_id: str = GAMEDAY_ID
    kubeconfig: str = ""
    kube_context: str = ""
    in_cluster: bool = False
    nats_selector: Mapping[str, Any] = field(default_factory=lambda: dict(NATS_CHART_SELECTOR))
    service_selector: Mapping[str, Any] = field(default_factory=dict)  # one selector for every service
    service_selectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # service -> selector
    service_pods: tuple[str, ...] = ("api-gateway", "reporting")
    service_containers: Mapping[str, str] = field(default_factory=dict)  # service -> container for logs
    log_limit_bytes: int = DEFAULT_LOG_LIMIT_BYTES
    chaos_manifest: str = str(chaos.DEFAULT_MANIFEST)
    planned_duration_seconds: float = 900.0  # partition + safety margin, for pre-flight's dry run
    planned_run_seconds: float = 7200.0  # how long the credentials must last (the whole playbook)
    dry_run: bool = False
    confirm_production: bool = False
    production_namespace_patterns: tuple[str, ...] = DEFAULT_PRODUCTION_PATTERNS
    production_cluster_patterns: tuple[str, ...] = DEFAULT_PRODUCTION_CLUSTER_PATTERNS
    chaos_filter_namespace: bool = False  # Chaos Mesh runs with controllerManager.enableFilterNamespace
    nats_monitor_urls: tuple[str, ...] = ()
    nats_account: str = "$G"
    inject_timeout_seconds: float = 60.0
    heal_timeout_seconds: float = 120.0
    poll_interval_seconds: float = 0.25
    request_timeout_seconds: float = 15.0
    coverage_check_seconds: float = 10.0  # how often fault_status compares records with current pods

    def service_names(self) -> tuple[str, ...]:
        return tuple(self.service_selectors) or self.service_pods


def production_hits(identity: KubeIdentity, patterns: Sequence[str]) -> list[str]:
    """Which of the context, cluster and API server host look like production (case-insensitive)."""
    host = urlsplit(identity.server).hostname or identity.server
    hits = []
    for what, value in (("context", identity.context), ("cluster", identity.cluster), ("API server", host)):
        if value and any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns):
            hits.append(f"{what} {value!r}")
    return hits


def endpoints_from_params(params: Mapping[str, Any]) -> Endpoints:
    """Where the probes look on the cluster; the events DSN from the variable ``events_dsn_env`` names."""
    dsn_env = params.get("events_dsn_env") or "GAMEDAY_EVENTS_DSN"
    namespace = str(params.get("namespace") or "")
    monitor_urls = tuple(str(u) for u in params.get("nats_monitor_urls") or () if u)
    return Endpoints(
        ingest_url=params.get("ingest_url") or None,
        stream_url=params.get("stream_url") or None,
        nats_monitor_url=params.get("nats_monitor_url") or (monitor_urls[0] if monitor_urls else None),
        prometheus_url=params.get("prometheus_url") or None,
        alertmanager_url=params.get("alertmanager_url") or None,
        events_dsn=os.environ.get(dsn_env) or None,
        service_metrics={k: (v,) if isinstance(v, str) else tuple(v)
                         for k, v in (params.get("service_metrics") or {}).items()},
        dashboards=dict(params.get("dashboards") or {}),
        nats_monitor_urls=monitor_urls,
        nats_account=str(params.get("nats_account") or "$G"),
        prometheus_selectors=dict(params.get("prometheus_selectors") or {}),
        namespace=namespace,
    )


def settings_from_params(params: Mapping[str, Any]) -> KubernetesSettings:
    """The target's settings from validated parameters (new ones read with their defaults)."""

    def seconds(name: str) -> float:
        return float(params.get(name) or 0)

    planned = seconds("partition_seconds") + seconds("partition_safety_margin_seconds")
    run_length = planned + seconds("lag_recovery_deadline_seconds") + seconds("rto_target_seconds")
    endpoints = endpoints_from_params(params)
    return KubernetesSettings(
        namespace=str(params.get("namespace") or ""),
        run_id=str(params["run_id"]),
        gameday_id=str(params.get("gameday_id") or GAMEDAY_ID),
        kubeconfig=str(params.get("kubeconfig") or ""),
        kube_context=str(params.get("kube_context") or ""),
        in_cluster=bool(params.get("in_cluster", False)),
        nats_selector=dict(params.get("nats_selector") or NATS_CHART_SELECTOR),
        service_selector=dict(params.get("service_selector") or {}),
        service_selectors={str(k): dict(v) for k, v in (params.get("service_selectors") or {}).items()},
        service_pods=tuple(params.get("service_pods") or ()),
        service_containers={str(k): str(v) for k, v in (params.get("service_containers") or {}).items()},
        log_limit_bytes=int(params.get("log_limit_bytes") or DEFAULT_LOG_LIMIT_BYTES),
        chaos_manifest=str(params.get("chaos_manifest") or chaos.DEFAULT_MANIFEST),
        planned_duration_seconds=planned if planned > 0 else 900.0,
        # the credentials must outlive the playbook: partition, recovery, RTO, and half an hour more
        planned_run_seconds=run_length + 1800.0 if run_length > 0 else 7200.0,
        dry_run=bool(params.get("dry_run", False)),
        confirm_production=bool(params.get("confirm_production", False)),
        production_namespace_patterns=tuple(
            params.get("production_namespace_patterns") or DEFAULT_PRODUCTION_PATTERNS
        ),
        production_cluster_patterns=tuple(
            params.get("production_cluster_patterns") or DEFAULT_PRODUCTION_CLUSTER_PATTERNS
        ),
        chaos_filter_namespace=bool(params.get("chaos_filter_namespace", False)),
        nats_monitor_urls=endpoints.monitor_urls(),
        nats_account=endpoints.nats_account,
    )


def require_explicit_context(settings: KubernetesSettings) -> None:
    """With ``confirm_production`` the context must be named (``kube_context``): the kubeconfig's
    current context is whatever ``kubectl config use-context`` last chose, in any terminal."""
    if settings.confirm_production and not settings.kube_context and not settings.in_cluster:
        raise InvalidParameters(
            {
                "kube_context": "confirm_production=true needs an explicit kube_context: name the "
                "context you mean to act on (the kubeconfig's current context changes with "
                "`kubectl config use-context`, in any terminal)"
            }
        )


def guard_identity(settings: KubernetesSettings, identity: KubeIdentity) -> None:
    """The production guard: the namespace, and the context, cluster and API server names. A namespace
    called ``teei`` on the production cluster is production too; a context ``prod-eu1`` says so even
    when the namespace does not."""
    guard_production(settings.namespace, settings.production_namespace_patterns, settings.confirm_production)
    hits = production_hits(identity, settings.production_cluster_patterns)
    if hits and not settings.confirm_production:
        raise ProductionGuard(
            f"{' and '.join(hits)} matches a production pattern {list(settings.production_cluster_patterns)} "
            f"(production_cluster_patterns): {identity.describe()}; set confirm_production=True "
            "and kube_context to run a gameday there"
        )


def refuse_unconfirmed_production(params: Mapping[str, Any]) -> None:
    """Everything the production guard refuses, before any side effect: reads the kubeconfig (no API
    call). For ``gamedaylib.run.check_can_start``: ``InvalidParameters`` (``kube_context``) or
    ``ProductionGuard``. Dry runs pass the guard (they change nothing), not the context rule."""
    if params.get("target") != "kubernetes":
        return
    settings = settings_from_params(params)
    require_explicit_context(settings)
    if settings.dry_run:
        return
    api = KubeApi(
        kubeconfig=settings.kubeconfig, context=settings.kube_context, in_cluster=settings.in_cluster
    )
    try:
        guard_identity(settings, api.identity)
    finally:
        api.close()


def rbac_checks(api: KubeApi, namespace: str, permissions: Sequence[Permission]) -> list[Check]:
    """One check per permission, asked of the API server (SelfSubjectAccessReview); a denied ``required``
    one is fatal and names the verb, why it is needed and the RBAC manifest to apply."""
    ns, timeout = namespace, api.request_timeout
    checks: list[Check] = []
    for perm in permissions:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=ns,
                    verb=perm.verb,
                    group=perm.group,
                    resource=perm.resource,
                    subresource=perm.subresource or None,
                    name=ns if perm.resource == "namespaces" else None,
                )
            )
        )
        try:
            answer = api.call(
                TargetError,
                "selfsubjectaccessreviews create",
                _access_review(review, timeout),
            )
        except TargetError as exc:
            return [
                *checks,
                Check(
                    "rbac: selfsubjectaccessreviews",
                    False,
                    f"cannot ask the API server what this identity may do: {exc}",
                ),
            ]
        allowed = bool(answer.status and answer.status.allowed)
        reason = (answer.status.reason if answer.status else "") or ""
        detail = (
            "allowed"
            if allowed
            else (
                f"missing permission: {perm.describe(ns)} ({reason or 'denied'}), needed for {perm.why}; "
                f"apply {RBAC_MANIFEST} (kubectl apply -n {ns} -f {RBAC_MANIFEST})"
            )
        )
        checks.append(Check(f"rbac: {perm.describe(ns)}", allowed, detail, fatal=perm.required))
    return checks


class KubernetesTarget:
    """The cluster behind the ``Target`` protocol."""

    name = "kubernetes"

    def __init__(self, settings: KubernetesSettings, endpoints: Endpoints, api_client: Any = None) -> None:
        if not settings.namespace:
            raise InvalidParameters({"namespace": "the kubernetes target needs a namespace"})
        require_explicit_context(settings)
        self.settings = settings
        self._endpoints = endpoints
        self.template = chaos.load_template(settings.chaos_manifest)
        self.chaos_name = chaos.chaos_name(settings.run_id)
        self.last_manifest: dict[str, Any] | None = None
        self.api = KubeApi(
            kubeconfig=settings.kubeconfig,
            context=settings.kube_context,
            in_cluster=settings.in_cluster,
            request_timeout=settings.request_timeout_seconds,
            auth_hint=(
                f"create a new token lasting the whole gameday (kubectl create token gameday -n "
                f"{settings.namespace} --duration=3h) and put it in the kubeconfig"
            ),
            api_client=api_client,
        )
        self.experiment = ChaosExperiment(
            self.api, NETWORK_CHAOS, settings.namespace, self.chaos_name, settings.poll_interval_seconds
        )
        self._foreign = False  # our name is taken by another run's object (409): never delete it
        self._coverage: tuple[float, Coverage] | None = None
        self.injected_at: datetime | None = None
        if not settings.dry_run:
            self._guard()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> KubernetesTarget:
        """From validated parameters (``gamedaylib.parameters.validate``). Reads the events DSN from
        the environment variable named by ``events_dsn_env``; nothing secret is kept in settings.
        Parameters the runbook may not declare yet are read with their defaults."""
        return cls(settings_from_params(params), endpoints_from_params(params))

    def _guard(self) -> None:
        guard_identity(self.settings, self.api.identity)

    # ------------------------------------------------------------------ API helpers
    def _core(self, api_client: Any) -> Any:
        return client.CoreV1Api(api_client)

    def _list_pods(
        self, label_selector: str | None = None, error: type[GamedayError] = TargetError
    ) -> list[PodView]:
        ns, timeout = self.settings.namespace, self.api.request_timeout
        kwargs: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        answer = self.api.call(
            error,
            f"list pods in {ns}" + (f" ({label_selector})" if label_selector else ""),
            lambda api: self._core(api).list_namespaced_pod(ns, _request_timeout=timeout, **kwargs),
        )
        return [pod_view(p) for p in answer.items or []]

    def _nats_exclusion(self) -> dict[str, list[str]]:
        key = next(iter(NATS_BOX_EXCLUSION))
        return {} if key in self.settings.nats_selector else dict(NATS_BOX_EXCLUSION)

    def nats_selector_string(self) -> str:
        return chaos.label_selector_string(self.settings.nats_selector, self._nats_exclusion())

    def nats_pods(self, error: type[GamedayError] = TargetError) -> list[PodView]:
        """Pods the NATS selector matches (nats-box excluded), judged or not."""
        return [p for p in self._list_pods(self.nats_selector_string(), error) if not p.job]

    def service_pods(
        self, service: str | None = None, error: type[GamedayError] = TargetError
    ) -> dict[str, list[PodView]]:
        """Pods of each service (or of one), judged or not, Job pods left out."""
        s = self.settings
        names = (service,) if service else s.service_names()
        out: dict[str, list[PodView]] = {}
        if s.service_selectors:
            for name in names:
                selector = s.service_selectors.get(name)
                if selector is None:
                    raise translate(error, f"no selector for service {name!r} in service_selectors")
                out[name] = [
                    p for p in self._list_pods(chaos.label_selector_string(selector), error) if not p.job
                ]
            return out
        pods = [
            p
            for p in self._list_pods(
                chaos.label_selector_string(s.service_selector) if s.service_selector else None, error
            )
            if not p.job
        ]
        if not names:
            return {"services": pods}
        for name in names:
            out[name] = [p for p in pods if name_matches(p.name, name)]
        return out

    def _node_of(self, namespace: str, pod: str) -> str | None:
        timeout = self.api.request_timeout
        try:
            answer = self.api.call(
                TargetError,
                f"get pod {pod}",
                lambda api: self._core(api).read_namespaced_pod(pod, namespace, _request_timeout=timeout),
            )
        except TargetError:
            return None
        return answer.spec.node_name if answer.spec else None

    # ------------------------------------------------------------------ the protocol
    @property
    def endpoints(self) -> Endpoints:
        return self._endpoints

    @property
    def identity(self) -> KubeIdentity:
        return self.api.identity

    def fault_seconds(self, duration_seconds: float) -> float:
        """The ``duration`` given to Chaos Mesh for a requested deadline of ``duration_seconds`` after
        T+0: Chaos Mesh counts from creation, and injection may take up to the injection wait."""
        return duration_seconds + self._inject_wait(duration_seconds)

    def _inject_wait(self, duration_seconds: float) -> float:
        return min(self.settings.inject_timeout_seconds, max(1.0, duration_seconds))

    def manifest(
        self, duration_seconds: float | None = None, service_pods: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The NetworkChaos body ``inject`` would create for a fault lasting ``duration_seconds`` from
        T+0 (validated locally, not sent). Service pods are given by exact name unless
        ``service_selector`` labels select them (``service_pods`` then: the names to use). Without
        arguments: the body last resolved against the cluster (pre-flight's server dry run, or the
        injection), else one resolved now (a pod list, nothing sent)."""
        if duration_seconds is None and not service_pods:
            if self.last_manifest is not None:
                return copy.deepcopy(self.last_manifest)
            return self._resolved_manifest(self.settings.planned_duration_seconds, TargetError)
        s = self.settings
        by_labels = bool(s.service_selector) and not s.service_selectors
        body = chaos.build_network_chaos(
            self.template,
            namespace=s.namespace,
            run_id=s.run_id,
            name=self.chaos_name,
            gameday_id=s.gameday_id,
            nats_selector=s.nats_selector,
            nats_exclude=self._nats_exclusion(),
            service_selector=s.service_selector if by_labels else None,
            service_pods=service_pods or (() if by_labels else s.service_pods),
            duration_seconds=self.fault_seconds(duration_seconds or s.planned_duration_seconds),
        )
        chaos.validate_network_chaos(body)
        return body

    def _resolved_manifest(self, duration_seconds: float, error: type[GamedayError]) -> dict[str, Any]:
        """``manifest`` with the service pods resolved to the names of the judged pods (Running, not
        being deleted, not a Job's) when they are not chosen by ``service_selector`` labels."""
        s = self.settings
        names: list[str] = []
        if s.service_selectors or not s.service_selector:
            pods = self.service_pods(error=error)
            names = sorted(p.name for group in pods.values() for p in group if p.judged)
            if not names:
                raise error(f"no Running service pod in {s.namespace} for {sorted(pods)}")
        try:
            return self.manifest(duration_seconds, names)
        except InvalidParameters as exc:
            raise translate(error, str(exc)) from exc

    # ------------------------------------------------------------------ pre-flight
    def preflight(self) -> list[Check]:
        """Every check, in order; a failed ``fatal`` check must stop the gameday before any fault.
        Raises ``ProductionGuard`` for production without ``confirm_production``."""
        if not self.settings.dry_run:
            self._guard()
        checks = [self._check_identity()]
        checks += self._check_rbac() + self._check_chaos_objects() + self._check_namespace_filter()
        checks += self._check_pods()
        if not any(c.fatal and not c.ok for c in checks):  # a denied permission is a fatal failure
            checks.append(self._check_server_dry_run())
        checks += self._check_service_readings()
        if self._endpoints.prometheus_url:
            checks.append(self._check_prometheus_up())
        if self._endpoints.monitor_urls():
            checks.append(self._check_nats_leader())
        return checks

    def _check_identity(self) -> Check:
        """Where the run acts, shown before anything; the token must outlive the playbook."""
        identity = self.api.identity
        detail = f"{identity.describe()}, namespace {self.settings.namespace}"
        whoami = self._whoami()
        if whoami:
            detail += f", authenticated as {whoami}"
        expiry = identity.token_expires_at
        if expiry is None:
            return Check("kubernetes: acting on", True, detail + "; token lifetime unknown", fatal=False)
        left = (expiry - utcnow()).total_seconds()
        needed = self.settings.planned_run_seconds
        detail += f"; token valid until {expiry.isoformat(timespec='seconds')} ({left / 60:.0f} min left)"
        if left < needed:
            return Check(
                "kubernetes: acting on",
                False,
                f"{detail}: the gameday may last {needed / 60:.0f} min and heal needs the token at the end: "
                f"kubectl create token gameday -n {self.settings.namespace} "
                f"--duration={math.ceil(needed / 3600)}h",
            )
        return Check("kubernetes: acting on", True, detail, fatal=False)

    def _whoami(self) -> str:
        timeout = self.api.request_timeout
        try:
            answer = self.api.call(
                TargetError,
                "selfsubjectreviews create",
                lambda api: client.AuthenticationV1Api(api).create_self_subject_review(
                    client.V1SelfSubjectReview(), _request_timeout=timeout
                ),
            )
        except TargetError:
            return ""  # older API servers (< 1.28) have no SelfSubjectReview
        info = answer.status.user_info if answer.status else None
        return str(info.username) if info and info.username else ""

    def _check_rbac(self) -> list[Check]:
        return rbac_checks(self.api, self.settings.namespace, PERMISSIONS)

    def _check_chaos_objects(self) -> list[Check]:
        ns = self.settings.namespace
        selector = f"{chaos.MANAGED_BY_LABEL}={chaos.MANAGED_BY}"
        try:
            items = self.experiment.list_objects(TargetError, selector)
        except TargetError as exc:
            if status_of(exc) == 404:
                return [
                    Check(
                        "chaos mesh installed",
                        False,
                        f"the NetworkChaos CRD ({chaos.CRD_NAME}) is not installed: install Chaos Mesh "
                        f"({exc})",
                    )
                ]
            return [Check("chaos mesh installed", False, f"cannot list NetworkChaos: {exc}")]
        checks = [Check("chaos mesh installed", True, f"{chaos.CRD_NAME} served")]
        ours = [o for o in items if o["metadata"]["name"] == self.chaos_name]
        others = [o for o in items if o["metadata"]["name"] != self.chaos_name]
        active = [o for o in others if not is_recovered(o)]
        leftovers = [o for o in others if is_recovered(o)]
        if active:
            names = ", ".join(
                f"{o['metadata']['name']} "
                f"(run {(o['metadata'].get('labels') or {}).get(chaos.RUN_ID_LABEL, '?')})"
                for o in active
            )
            checks.append(
                Check(
                    "no other gameday in progress",
                    False,
                    f"another gameday NetworkChaos is in {ns}: {names}; wait for it or "
                    f"kubectl delete networkchaos -n {ns} <name>",
                )
            )
        else:
            checks.append(Check("no other gameday in progress", True, "no other gameday NetworkChaos active"))
        if leftovers:
            names = ", ".join(o["metadata"]["name"] for o in leftovers)
            checks.append(
                Check(
                    "finished gameday faults left behind",
                    False,
                    f"recovered but not deleted (duration expired or paused): {names}; "
                    f"kubectl delete networkchaos -n {ns} {names.split(', ')[0]}",
                    fatal=False,
                )
            )
        if ours and not self.experiment.created:
            obj = ours[0]
            state = "active" if is_injected(obj) else ("recovered" if is_recovered(obj) else "pending")
            checks.append(
                Check(
                    "chaos name free",
                    False,
                    f"a NetworkChaos named {self.chaos_name} already exists ({state}): "
                    "run id reused? use a new run_id",
                )
            )
        return checks

    def _check_namespace_filter(self) -> list[Check]:
        """Chaos Mesh installed with ``controllerManager.enableFilterNamespace=true`` injects only into
        namespaces annotated ``chaos-mesh.org/inject=enabled``; elsewhere it selects nothing and says so
        only in a Kubernetes Event."""
        ns, timeout = self.settings.namespace, self.api.request_timeout
        name = "chaos mesh namespace filter"
        fix = f"kubectl annotate namespace {ns} {NAMESPACE_INJECT_ANNOTATION}=enabled"
        try:
            answer = self.api.call(
                TargetError,
                f"get namespace {ns}",
                lambda api: self._core(api).read_namespace(ns, _request_timeout=timeout),
            )
        except TargetError as exc:
            return [Check(name, False, f"not checked: {exc}", fatal=False)]
        value = ((answer.metadata.annotations if answer.metadata else None) or {}).get(
            NAMESPACE_INJECT_ANNOTATION
        )
        if value == "enabled":
            return [Check(name, True, f"{ns} is annotated {NAMESPACE_INJECT_ANNOTATION}=enabled")]
        if self.settings.chaos_filter_namespace:
            return [
                Check(
                    name,
                    False,
                    f"Chaos Mesh filters namespaces (chaos_filter_namespace=true) and {ns} is not annotated "
                    f"{NAMESPACE_INJECT_ANNOTATION}=enabled: it would select no pod; {fix}",
                )
            ]
        return [
            Check(
                name,
                True,
                f"{ns} has no {NAMESPACE_INJECT_ANNOTATION}=enabled annotation: fine unless Chaos Mesh runs "
                "with controllerManager.enableFilterNamespace=true (then set chaos_filter_namespace=true "
                f"and {fix})",
                fatal=False,
            )
        ]

    def _check_pods(self) -> list[Check]:
        ns = self.settings.namespace
        checks = []
        try:
            nats = self.nats_pods()
            services = self.service_pods()
            everything = self._list_pods()
        except TargetError as exc:
            return [Check("pods running and ready", False, str(exc))]
        checks.append(pods_check(f"NATS pods ({self.nats_selector_string()})", nats))
        boxes = [p.name for p in everything if p.labels.get("app.kubernetes.io/component") == "nats-box"]
        if boxes:
            chosen = set(boxes) & {p.name for p in nats}
            checks.append(
                Check(
                    "nats-box not selected",
                    not chosen,
                    f"selected as NATS servers: {', '.join(sorted(chosen))}"
                    if chosen
                    else f"left out of the fault: {', '.join(sorted(boxes))}",
                )
            )
        for service, pods in services.items():
            checks.append(pods_check(f"{service} pods", pods))
        bad = [
            f"{p.name} ({p.state()})"
            for p in everything
            if not p.job and p.phase != "Succeeded" and not (p.judged and p.ready)
        ]
        checks.append(
            Check(
                f"every pod in {ns} Running",
                not bad,
                "all Running (Completed and Job pods not counted)"
                if not bad
                else f"not Running: {', '.join(sorted(bad))}",
                fatal=False,
            )
        )
        return checks

    def _check_server_dry_run(self) -> Check:
        """Send the fault with ``dryRun=All``: the API server applies the CRD schema and the Chaos Mesh
        webhook and persists nothing."""
        try:
            body = self._resolved_manifest(self.settings.planned_duration_seconds, TargetError)
            self.experiment.create(body, TargetError, dry_run=True)
        except TargetError as exc:
            return Check("chaos manifest accepted (server dry run)", False, str(exc))
        self.last_manifest = body
        spec = body["spec"]
        return Check(
            "chaos manifest accepted (server dry run)",
            True,
            f"NetworkChaos {body['metadata']['name']}: action {spec['action']}, "
            f"direction {spec['direction']}, "
            f"duration {spec['duration']} (deadline {self.settings.planned_duration_seconds:g}s from T+0 "
            f"+ {self._inject_wait(self.settings.planned_duration_seconds):g}s injection wait), "
            f"nats {json.dumps(spec['selector'], sort_keys=True)}, "
            f"target {json.dumps(spec['target']['selector'], sort_keys=True)}",
        )

    def _selector(self, service: str) -> str:
        """The PromQL matchers of a service's instances, as the runbook's readings use them."""
        return self._endpoints.prometheus_selectors.get(service) or f'job="{service}"'

    def _check_service_readings(self) -> list[Check]:
        """The stop conditions (error rate, buffer fraction) and the "NATS connections back" wait need
        the services' readings: from Prometheus on a cluster (each service's ``prometheus_selectors``,
        default ``job="<service>"``, as the runbook reads them), else scraped from ``service_metrics``.
        A shared Prometheus holds other environments' services under the same job names: selectors
        without ``namespace`` are flagged."""
        ns = self.settings.namespace
        name = "service readings for the stop conditions"
        direct = sorted(self._endpoints.service_metrics)
        url = self._endpoints.prometheus_url
        if not url:
            if direct:
                return [Check(name, True, f"scraped directly: {', '.join(direct)}", fatal=False)]
            return [
                Check(
                    name,
                    False,
                    "no prometheus_url and no service_metrics: stop_error_rate and stop_buffer_fraction "
                    "cannot fire and 'NATS connections back' cannot be judged; set prometheus_url",
                    fatal=False,
                )
            ]
        probe = PrometheusProbe(url)
        missing: list[str] = []
        seen: list[str] = []
        try:
            for service, metrics in SERVICE_READINGS.items():
                for metric in metrics:
                    selector = f"{metric}{{{self._selector(service)}}}"
                    (seen if probe.query(f"count({selector})") else missing).append(selector)
        except ProbeError as exc:
            return [Check(name, False, f"not checked: {exc.reason}", fatal=not direct)]
        finally:
            probe.close()
        checks = []
        if missing:
            checks.append(
                Check(
                    name,
                    False,
                    f"Prometheus has no {', '.join(missing)}: the stop conditions would be blind"
                    + (f" (service_metrics scraped directly instead: {', '.join(direct)})" if direct else "")
                    + "; check the services' ServiceMonitors and prometheus_selectors",
                    fatal=not direct,
                )
            )
        else:
            checks.append(Check(name, True, f"in Prometheus: {len(seen)} series ({', '.join(seen)})"))
        unscoped = [s for s in SERVICE_READINGS if "namespace" not in self._selector(s)]
        if unscoped:
            checks.append(
                Check(
                    "service readings scoped to the namespace",
                    False,
                    f"prometheus_selectors of {', '.join(unscoped)} have no namespace matcher: a shared "
                    "Prometheus adds other environments' instances of the same job to the readings; set e.g. "
                    f'prometheus_selectors: {{{unscoped[0]}: \'namespace="{ns}",job="{unscoped[0]}"\'}}',
                    fatal=False,
                )
            )
        return checks

    def _check_prometheus_up(self) -> Check:
        ns = self.settings.namespace
        query = f'up{{namespace="{ns}"}}'
        probe = PrometheusProbe(self._endpoints.prometheus_url or "")
        try:
            result = probe.query(query)
        except ProbeError as exc:
            return Check(f"prometheus {query}", False, f"not checked: {exc.reason}", fatal=False)
        finally:
            probe.close()
        if not result:
            return Check(
                f"prometheus {query}",
                False,
                f"no scrape target carries namespace={ns}: the alerting metrics may be missing",
                fatal=False,
            )
        down = [
            s["metric"].get("job", "?") + "/" + s["metric"].get("instance", "?")
            for s in result
            if isinstance(s, dict) and float(s["value"][1]) == 0
        ]
        if down:
            return Check(f"prometheus {query}", False, f"targets down: {', '.join(sorted(down))}")
        return Check(f"prometheus {query}", True, f"{len(result)} targets up")

    def _check_nats_leader(self) -> Check:
        """The consumer's leader found through the monitoring URLs (one per NATS server)."""
        urls = self._endpoints.monitor_urls()
        name = "nats consumer leader found"
        monitor = NatsMonitor(urls, account=self._endpoints.nats_account)
        try:
            lag = monitor.consumer_lag(self._endpoints.stream_name, self._endpoints.consumer_name)
        except ProbeError as exc:
            return Check(name, False, exc.reason, fatal=False)
        try:
            running = len([p for p in self.nats_pods() if p.judged])
        except TargetError:
            running = 0
        detail = (
            f"{lag.server} leads {lag.stream}/{lag.consumer} ({lag.url}): {lag.num_pending} pending, "
            f"{lag.num_ack_pending} awaiting ack"
        )
        if running > len(urls):
            return Check(
                name,
                True,
                f"{detail}; only {len(urls)} monitoring URL(s) for {running} NATS pods: when the lead "
                "moves to "
                "a server not listed the lag is unreadable; list every pod in nats_monitor_urls",
                fatal=False,
            )
        return Check(name, True, detail, fatal=False)

    # ------------------------------------------------------------------ the fault
    def inject(self, *, duration_seconds: float) -> datetime:
        """Create the NetworkChaos so that it lasts at least ``duration_seconds`` after T+0; return the
        moment it is confirmed injected (T+0)."""
        if not self.settings.dry_run:
            self._guard()
        body = self._resolved_manifest(duration_seconds, InjectionFailed)
        self.last_manifest = body
        if self.settings.dry_run:
            self.experiment.create(body, InjectionFailed, dry_run=True)
            return utcnow()
        try:
            self.experiment.create(body, InjectionFailed)
        except InjectionFailed as exc:
            if status_of(exc) == 409:
                self._foreign = True
                raise InjectionFailed(
                    f"a NetworkChaos named {self.chaos_name} already exists in {self.settings.namespace} "
                    f"(another run with this run_id?); it was left untouched: {exc}"
                ) from exc
            raise
        wait = self._inject_wait(duration_seconds)
        try:
            t0 = self.experiment.wait_injected(wait)
        except InjectionFailed as exc:
            try:
                self.heal()
            except HealFailed as heal_exc:
                raise InjectionFailed(f"{exc}; and it could not be removed: {heal_exc}") from heal_exc
            raise InjectionFailed(f"{exc}; it was deleted") from exc
        self.injected_at = t0
        self._coverage = None
        return t0

    def heal(self) -> datetime | None:
        """Delete our NetworkChaos and wait until it is recovered and gone; the moment it was recovered,
        or None if nothing was in force. DELETE goes first; transient errors are retried until
        ``heal_timeout_seconds``."""
        if self.settings.dry_run or self._foreign:
            return None
        was_in_force, moment = self.experiment.delete_and_wait(
            self.settings.heal_timeout_seconds, node_of=self._node_of
        )
        return moment if was_in_force else None

    def delete_command(self) -> str:
        return self.experiment.delete_command()

    def partition_active(self) -> bool:
        if self.settings.dry_run:
            return False
        obj = self.experiment.get(
            TargetError, retry_until=time.monotonic() + self.settings.request_timeout_seconds
        )
        return obj is not None and is_injected(obj)

    def fault_status(self) -> FaultStatus:
        """Whether the partition is still in force; when it ended early, why and when (the records'
        ``Recover`` events). Pods created after the injection, which the fault does not cover, are named
        in ``detail``. Raises ``TargetError`` when the API server cannot be read."""
        if self.settings.dry_run:
            return FaultStatus(active=False, detail="dry run: nothing injected")
        if not self.experiment.created and not self.experiment.deleted_by_us:
            return FaultStatus(active=False, detail="no fault injected by this run")
        status = self.experiment.fault_status()
        if status.active:
            coverage = self.coverage()
            if coverage.uncovered or coverage.gone:
                status = replace(status, detail=f"{status.detail}; {coverage.describe()}")
        return status

    def coverage(self, *, fresh: bool = False) -> Coverage:
        """The pods under the fault (its records) against the pods that run now, checked at most every
        ``coverage_check_seconds`` unless ``fresh``."""
        now = time.monotonic()
        if not fresh and self._coverage and now - self._coverage[0] < self.settings.coverage_check_seconds:
            return self._coverage[1]
        obj = self.experiment.last or self.experiment.get(TargetError)
        if obj is None:
            return Coverage()
        ns = self.settings.namespace
        recorded = {r.pod for r in records(obj) if r.namespace == ns}
        current = {p.name for p in self.nats_pods() if p.judged}
        s = self.settings
        if s.service_selectors or not s.service_selector:
            current |= {p.name for group in self.service_pods().values() for p in group if p.judged}
        else:
            current |= {
                p.name for p in self._list_pods(chaos.label_selector_string(s.service_selector)) if p.judged
            }
        result = Coverage(tuple(sorted(current - recorded)), tuple(sorted(recorded - current)))
        self._coverage = (now, result)
        return result

    def chaos_events(self) -> list[str]:
        """The records' events of our NetworkChaos (id and phase kept), oldest first."""
        obj = self.experiment.last or self.experiment.get(TargetError)
        return chaos_events(obj) if obj else []

    # ------------------------------------------------------------------ logs
    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        """Log lines of every Running pod of ``service``, pod by pod: the previous container's log first
        when it restarted, then the current one; the container is ``service_containers[service]``
        (default the service's name) and each read stops at ``log_limit_bytes``."""
        try:
            pods = [p for group in self.service_pods(service, ProbeError).values() for p in group if p.judged]
        except ProbeError as exc:
            raise ProbeError("logs", exc.reason) from exc
        if not pods:
            raise ProbeError("logs", f"no Running pod of {service!r} in {self.settings.namespace}")
        wanted = self.settings.service_containers.get(service) or service
        since_seconds = max(1, math.ceil((utcnow() - since).total_seconds())) if since is not None else None
        lines: list[str] = []
        for pod in sorted(pods, key=lambda p: p.name):
            container = container_for(pod, wanted, service)
            if pod.restarts.get(container, 0) > 0:
                lines += self._read_log(pod.name, container, since_seconds, previous=True).splitlines()
            lines += self._read_log(pod.name, container, since_seconds, previous=False).splitlines()
        return lines

    def _read_log(self, pod: str, container: str, since_seconds: int | None, *, previous: bool) -> str:
        ns, timeout = self.settings.namespace, self.api.request_timeout
        kwargs: dict[str, Any] = {"container": container, "limit_bytes": self.settings.log_limit_bytes}
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        if previous:
            kwargs["previous"] = True
        what = f"logs of {pod}/{container}" + (" (previous container)" if previous else "")
        try:
            text = self.api.call(
                ProbeError,
                what,
                lambda api: self._core(api).read_namespaced_pod_log(
                    pod, ns, _request_timeout=timeout, **kwargs
                ),
            )
        except ProbeError as exc:
            if previous and status_of(exc) == 400:
                return ""  # the previous container's log is gone (rotated, or the pod was rescheduled)
            raise ProbeError("logs", exc.reason) from exc
        return str(text or "")

    def ground_truth(self) -> GroundTruth | None:
        return None

    def close(self) -> None:
        self.api.close()


def _access_review(review: Any, timeout: float) -> Any:
    def call(api_client: Any) -> Any:
        return client.AuthorizationV1Api(api_client).create_self_subject_access_review(
            review, _request_timeout=timeout
        )

    return call


__all__ = [
    "NATS_CHART_SELECTOR",
    "NEW_PARAMETERS",
    "PERMISSIONS",
    "Coverage",
    "KubernetesSettings",
    "KubernetesTarget",
    "Permission",
    "PodView",
    "api_error_text",
    "chaos_events",
    "desired_phase",
    "endpoints_from_params",
    "guard_identity",
    "is_injected",
    "is_recovered",
    "pod_view",
    "production_hits",
    "rbac_checks",
    "refuse_unconfirmed_production",
    "require_explicit_context",
    "settings_from_params",
]
