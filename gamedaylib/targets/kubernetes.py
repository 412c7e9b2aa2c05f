"""The Kubernetes target: the team's cluster, with the partition as a Chaos Mesh ``NetworkChaos``.

- pre-flight: the production guard; RBAC (one SelfSubjectAccessReview per verb the runbook needs, a
  denied verb fails naming the missing permission); the NetworkChaos CRD installed (a list call on the
  custom resource: the least-privilege Role grants no cluster-wide CRD read); no other gameday
  NetworkChaos active in the namespace; the NATS and service pods Running and Ready; the fault
  accepted by the API server (server-side ``dryRun=All``: schema and admission webhook, nothing
  persisted); ``up{namespace=...}`` in Prometheus when ``prometheus_url`` is set (the runbook's own
  pre-flight takes the TSDB snapshot through the Prometheus probe, with a note when the admin API is
  disabled).
- inject: create the object (name ``nats-partition-<run_id>``, ``duration`` = the deadline), poll until
  ``AllInjected=True`` and ``status.experiment.desiredPhase == "Run"``: that moment is T+0. A timeout
  deletes what was created and raises ``InjectionFailed``.
- heal: delete, then poll until the object is gone (404) or ``desiredPhase=Stop`` with
  ``AllRecovered=True``. Safe to call twice (404 = already healed) and from another process: the name
  comes from the run id.
- dry run (``dry_run=True``): reads as usual; ``inject`` sends the create with ``dryRun=All`` (the API
  server validates it, runs the webhook, persists nothing) and returns the moment of the answer;
  ``heal`` and ``partition_active`` touch nothing. ``manifest()`` is the body that would be created.

Probes (NATS monitoring, Prometheus, Alertmanager, the events table) reach the cluster through the
URLs in ``endpoints``; the events DSN is read from the environment variable named by
``events_dsn_env`` and never stored in parameters or archives.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from gamedaylib import chaos
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import (
    GamedayError,
    HealFailed,
    InjectionFailed,
    InvalidParameters,
    ProbeError,
    TargetError,
)
from gamedaylib.guard import guard_production
from gamedaylib.parameters import DEFAULT_PRODUCTION_PATTERNS
from gamedaylib.targets.base import Check, Endpoints, FaultStatus, GroundTruth

GAMEDAY_ID = "GAMEDAY-001"

T = TypeVar("T")

RBAC_MANIFEST = "deploy/rbac.yaml"


@dataclass(frozen=True)
class Permission:
    """One verb the runbook needs, as a SelfSubjectAccessReview asks it."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""

    def describe(self, namespace: str) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group:
            what += f".{self.group}"
        return f"{self.verb} {what} in namespace {namespace}"


PERMISSIONS: tuple[Permission, ...] = (
    Permission("get", "pods"),
    Permission("list", "pods"),
    Permission("get", "pods", subresource="log"),
    Permission("create", chaos.PLURAL, chaos.GROUP),
    Permission("get", chaos.PLURAL, chaos.GROUP),
    Permission("list", chaos.PLURAL, chaos.GROUP),
    Permission("delete", chaos.PLURAL, chaos.GROUP),
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
    nats_selector: Mapping[str, Any] = field(default_factory=lambda: {"app": "nats"})
    service_selector: Mapping[str, Any] = field(default_factory=dict)
    service_pods: tuple[str, ...] = ("api-gateway", "reporting")
    chaos_manifest: str = str(chaos.DEFAULT_MANIFEST)
    planned_duration_seconds: float = 900.0  # partition + safety margin, for pre-flight's dry run
    dry_run: bool = False
    confirm_production: bool = False
    production_namespace_patterns: tuple[str, ...] = DEFAULT_PRODUCTION_PATTERNS
    inject_timeout_seconds: float = 60.0
    heal_timeout_seconds: float = 120.0
    poll_interval_seconds: float = 0.25
    request_timeout_seconds: float = 15.0


def _condition(obj: Mapping[str, Any], kind: str) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status")) == "True"
    return False


def desired_phase(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("status") or {}).get("experiment") or {}).get("desiredPhase")


def is_injected(obj: Mapping[str, Any]) -> bool:
    """Chaos Mesh: the fault is active when ``AllInjected=True`` and ``desiredPhase=Run``."""
    return _condition(obj, "AllInjected") and desired_phase(obj) == "Run"


def is_recovered(obj: Mapping[str, Any]) -> bool:
    """Over when ``desiredPhase=Stop`` and ``AllRecovered=True`` (AllRecovered alone is also True
    before the first injection)."""
    return _condition(obj, "AllRecovered") and desired_phase(obj) == "Stop"


def chaos_events(obj: Mapping[str, Any]) -> list[str]:
    """The controller's event messages (why an injection failed, ...), oldest first."""
    out = []
    for record in ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []:
        for event in record.get("events") or []:
            text = f"{event.get('operation')} {event.get('type')}"
            if event.get("message"):
                text += f": {event['message']}"
            out.append(text)
    return out


def api_error_text(exc: Exception) -> str:
    """The API server's own message for an ``ApiException`` (its Status body), else ``str(exc)``."""
    body = getattr(exc, "body", None)
    status = getattr(exc, "status", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return f"HTTP {status}: {message}"
    if status:
        return f"HTTP {status}: {getattr(exc, 'reason', '')}"
    return str(exc)


class KubernetesTarget:
    """The cluster behind the ``Target`` protocol."""

    name = "kubernetes"

    def __init__(self, settings: KubernetesSettings, endpoints: Endpoints, api_client: Any = None) -> None:
        if not settings.namespace:
            raise InvalidParameters({"namespace": "the kubernetes target needs a namespace"})
        self.settings = settings
        self._endpoints = endpoints
        self.template = chaos.load_template(settings.chaos_manifest)
        self.chaos_name = chaos.chaos_name(settings.run_id)
        self.last_manifest: dict[str, Any] | None = None
        self._created = False
        if not settings.dry_run:
            self._guard()
        self.api = api_client if api_client is not None else self._load_client(settings)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> KubernetesTarget:
        """From validated parameters (``gamedaylib.parameters.validate``). Reads the events DSN from
        the environment variable named by ``events_dsn_env``; nothing secret is kept in settings."""
        dsn_env = params.get("events_dsn_env") or "GAMEDAY_EVENTS_DSN"
        endpoints = Endpoints(
            ingest_url=params.get("ingest_url") or None,
            stream_url=params.get("stream_url") or None,
            nats_monitor_url=params.get("nats_monitor_url") or None,
            nats_monitor_urls=tuple(params.get("nats_monitor_urls") or ()),
            nats_account=str(params.get("nats_account") or "$G"),
            prometheus_url=params.get("prometheus_url") or None,
            prometheus_selectors=dict(params.get("prometheus_selectors") or {}),
            alertmanager_url=params.get("alertmanager_url") or None,
            events_dsn=os.environ.get(dsn_env) or None,
            service_metrics={k: (v,) for k, v in (params.get("service_metrics") or {}).items()},
            dashboards=dict(params.get("dashboards") or {}),
            namespace=str(params.get("namespace") or ""),
        )
        planned = float(params.get("partition_seconds") or 0) + float(
            params.get("partition_safety_margin_seconds") or 0
        )
        settings = KubernetesSettings(
            namespace=str(params.get("namespace") or ""),
            run_id=str(params["run_id"]),
            gameday_id=str(params.get("gameday_id") or GAMEDAY_ID),
            kubeconfig=str(params.get("kubeconfig") or ""),
            kube_context=str(params.get("kube_context") or ""),
            in_cluster=bool(params.get("in_cluster", False)),
            nats_selector=dict(params.get("nats_selector") or {}),
            service_selector=dict(params.get("service_selector") or {}),
            service_pods=tuple(params.get("service_pods") or ()),
            chaos_manifest=str(params.get("chaos_manifest") or chaos.DEFAULT_MANIFEST),
            planned_duration_seconds=planned if planned > 0 else 900.0,
            dry_run=bool(params.get("dry_run", False)),
            confirm_production=bool(params.get("confirm_production", False)),
            production_namespace_patterns=tuple(
                params.get("production_namespace_patterns") or DEFAULT_PRODUCTION_PATTERNS
            ),
        )
        return cls(settings, endpoints)

    @staticmethod
    def _load_client(settings: KubernetesSettings) -> Any:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            if settings.in_cluster:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration)
            return config.new_client_from_config(
                config_file=settings.kubeconfig or None,
                context=settings.kube_context or None,
                persist_config=False,
            )
        except (ConfigException, OSError) as exc:
            where = (
                "in-cluster service account"
                if settings.in_cluster
                else (settings.kubeconfig or "~/.kube/config")
            )
            name = "in_cluster" if settings.in_cluster else "kubeconfig"
            raise InvalidParameters(
                {name: f"cannot load Kubernetes credentials from {where}: {exc}"}
            ) from exc

    def _guard(self) -> None:
        guard_production(
            self.settings.namespace,
            self.settings.production_namespace_patterns,
            self.settings.confirm_production,
        )

    # ------------------------------------------------------------------ API helpers
    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def _call(
        self, error: type[GamedayError], what: str, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Call the API; translate the client's errors into ``error`` (ApiException kept as cause)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", self.settings.request_timeout_seconds)
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise _wrap(error, f"{what}: {api_error_text(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise _wrap(error, f"{what}: API server unreachable: {exc}") from exc

    def _chaos_call(
        self, error: type[GamedayError], what: str, method: str, *args: Any, **kwargs: Any
    ) -> Any:
        """``CustomObjectsApi.<method>`` on the NetworkChaos resource of our namespace, via ``_call``."""
        return self._call(
            error,
            what,
            getattr(self._custom(), method),
            chaos.GROUP,
            chaos.VERSION,
            self.settings.namespace,
            chaos.PLURAL,
            *args,
            **kwargs,
        )

    def _create_chaos(self, error: type[GamedayError], body: dict[str, Any], *, dry_run: bool = False) -> None:
        """Create ``body``; with ``dry_run`` the API server validates it (``dryRun=All``) and persists
        nothing."""
        what = "create networkchaos (dryRun=All)" if dry_run else f"create networkchaos {self.chaos_name}"
        options = {"dry_run": "All"} if dry_run else {}
        self._chaos_call(error, what, "create_namespaced_custom_object", body, **options)

    def _get_chaos(self, error: type[GamedayError]) -> dict[str, Any] | None:
        """Our NetworkChaos, or None when it does not exist (404)."""
        try:
            return self._chaos_call(
                error, f"get networkchaos {self.chaos_name}", "get_namespaced_custom_object", self.chaos_name
            )
        except GamedayError as exc:
            if _status(exc) == 404:
                return None
            raise

    def _list_pods(self, label_selector: str | None = None) -> list[Any]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        answer = self._call(
            TargetError,
            f"list pods in {self.settings.namespace}",
            self._core().list_namespaced_pod,
            self.settings.namespace,
            **kwargs,
        )
        return list(answer.items or [])

    def _service_pods(self, service: str | None = None) -> list[Any]:
        """Pods of the services (all of them, or one): ``service_selector`` when set, else the whole
        namespace; then by name prefix (``api-gateway`` matches ``api-gateway-7c9d5b6f4-x2x7k``)."""
        selector = (
            chaos.label_selector_string(self.settings.service_selector)
            if self.settings.service_selector
            else None
        )
        pods = self._list_pods(selector)
        prefixes = (service,) if service else self.settings.service_pods
        if not prefixes:
            return pods
        return [p for p in pods if any(_name_matches(p.metadata.name, pre) for pre in prefixes)]

    # ------------------------------------------------------------------ the protocol
    @property
    def endpoints(self) -> Endpoints:
        return self._endpoints

    def manifest(
        self, duration_seconds: float | None = None, service_pods: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The NetworkChaos body ``inject`` would create (validated locally, not sent)."""
        body = chaos.build_network_chaos(
            self.template,
            namespace=self.settings.namespace,
            run_id=self.settings.run_id,
            name=self.chaos_name,
            gameday_id=self.settings.gameday_id,
            nats_selector=self.settings.nats_selector,
            service_selector=self.settings.service_selector,
            service_pods=service_pods
            or (() if self.settings.service_selector else self.settings.service_pods),
            duration_seconds=duration_seconds or self.settings.planned_duration_seconds,
        )
        chaos.validate_network_chaos(body)
        return body

    def _resolved_manifest(self, duration_seconds: float, error: type[GamedayError]) -> dict[str, Any]:
        """``manifest`` with the service pods resolved to names when no service labels are given
        (Chaos Mesh's ``pods`` selector takes exact names)."""
        names: list[str] = []
        if not self.settings.service_selector:
            try:
                names = [p.metadata.name for p in self._service_pods()]
            except TargetError as exc:
                raise _wrap(error, str(exc)) from exc
            if not names:
                raise error(
                    f"no pod in {self.settings.namespace} matches service_pods "
                    f"{list(self.settings.service_pods)}"
                )
        try:
            return self.manifest(duration_seconds, names)
        except InvalidParameters as exc:
            raise _wrap(error, str(exc)) from exc

    def preflight(self) -> list[Check]:
        """Every check, in order; a failed ``fatal`` check must stop the gameday before any fault.
        Raises ``ProductionGuard`` for a production namespace without ``confirm_production``."""
        if not self.settings.dry_run:
            self._guard()
        checks = self._check_rbac() + self._check_chaos_objects() + self._check_pods()
        if not any(c.fatal and not c.ok for c in checks):  # a denied permission is a fatal failure
            checks.append(self._check_server_dry_run())
        if self._endpoints.prometheus_url:
            checks.append(self._check_prometheus_up())
        return checks

    def _check_rbac(self) -> list[Check]:
        from kubernetes import client

        api = client.AuthorizationV1Api(self.api)
        ns = self.settings.namespace
        checks = []
        for perm in PERMISSIONS:
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        namespace=ns,
                        verb=perm.verb,
                        group=perm.group,
                        resource=perm.resource,
                        subresource=perm.subresource or None,
                    )
                )
            )
            name = f"rbac: {perm.describe(ns)}"
            try:
                answer = self._call(
                    TargetError,
                    "selfsubjectaccessreviews create",
                    api.create_self_subject_access_review,
                    review,
                )
            except TargetError as exc:
                return [
                    Check(
                        "rbac: selfsubjectaccessreviews",
                        False,
                        f"cannot ask the API server what this identity may do: {exc}",
                    )
                ]
            allowed = bool(answer.status and answer.status.allowed)
            reason = (answer.status.reason if answer.status else "") or ""
            detail = (
                "allowed"
                if allowed
                else (
                    f"missing permission: {perm.describe(ns)} ({reason or 'denied'}); "
                    f"apply {RBAC_MANIFEST} (kubectl apply -n {ns} -f {RBAC_MANIFEST})"
                )
            )
            checks.append(Check(name, allowed, detail))
        return checks

    def _check_chaos_objects(self) -> list[Check]:
        ns = self.settings.namespace
        selector = f"{chaos.MANAGED_BY_LABEL}={chaos.MANAGED_BY}"
        try:
            answer = self._chaos_call(
                TargetError, f"list networkchaos in {ns}", "list_namespaced_custom_object", label_selector=selector
            )
        except TargetError as exc:
            if _status(exc) == 404:
                return [
                    Check(
                        "chaos mesh installed",
                        False,
                        f"the NetworkChaos CRD ({chaos.CRD_NAME}) is not installed: "
                        f"install Chaos Mesh ({exc})",
                    )
                ]
            return [Check("chaos mesh installed", False, f"cannot list NetworkChaos: {exc}")]
        checks = [Check("chaos mesh installed", True, f"{chaos.CRD_NAME} served")]
        items = list(answer.get("items") or [])
        ours = [o for o in items if o["metadata"]["name"] == self.chaos_name]
        others = [o for o in items if o["metadata"]["name"] != self.chaos_name]
        active = [o for o in others if not is_recovered(o)]
        leftovers = [o for o in others if is_recovered(o)]
        if active:
            names = ", ".join(
                f"{o['metadata']['name']} "
                f"(run {o['metadata'].get('labels', {}).get(chaos.RUN_ID_LABEL, '?')})"
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
                    f"recovered but not deleted (duration expired): {names}; "
                    f"kubectl delete networkchaos -n {ns} {names.split(', ')[0]}",
                    fatal=False,
                )
            )
        if ours and not self._created:
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

    def _check_pods(self) -> list[Check]:
        ns = self.settings.namespace
        checks = []
        try:
            nats_selector = chaos.label_selector_string(self.settings.nats_selector)
            nats = self._list_pods(nats_selector)
            services = self._service_pods()
            everything = self._list_pods()
        except TargetError as exc:
            return [Check("pods running and ready", False, str(exc))]
        checks.append(_pods_check(f"NATS pods ({nats_selector})", nats))
        for prefix in self.settings.service_pods:
            checks.append(
                _pods_check(f"{prefix} pods", [p for p in services if _name_matches(p.metadata.name, prefix)])
            )
        if self.settings.service_selector and not self.settings.service_pods:
            checks.append(
                _pods_check(
                    f"service pods ({chaos.label_selector_string(self.settings.service_selector)})", services
                )
            )
        unhealthy = [
            p.metadata.name
            for p in everything
            if (p.status.phase if p.status else None) not in ("Running", "Succeeded")
        ]
        checks.append(
            Check(
                f"every pod in {ns} Running",
                not unhealthy,
                "all Running" if not unhealthy else f"not Running: {', '.join(sorted(unhealthy))}",
                fatal=False,
            )
        )
        return checks

    def _check_server_dry_run(self) -> Check:
        """Send the fault with ``dryRun=All``: the API server applies the CRD schema and the Chaos Mesh
        webhook and persists nothing."""
        try:
            body = self._resolved_manifest(self.settings.planned_duration_seconds, TargetError)
            self._create_chaos(TargetError, body, dry_run=True)
        except TargetError as exc:
            return Check("chaos manifest accepted (server dry run)", False, str(exc))
        self.last_manifest = body
        spec = body["spec"]
        return Check(
            "chaos manifest accepted (server dry run)",
            True,
            f"NetworkChaos {body['metadata']['name']}: action {spec['action']}, "
            f"direction {spec['direction']}, "
            f"duration {spec['duration']}, nats {json.dumps(spec['selector'], sort_keys=True)}, "
            f"target {json.dumps(spec['target']['selector'], sort_keys=True)}",
        )

    def _check_prometheus_up(self) -> Check:
        from gamedaylib.probes.metrics import PrometheusProbe

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

    def inject(self, *, duration_seconds: float) -> datetime:
        """Create the NetworkChaos with ``duration`` = ``duration_seconds`` (rounded up to whole
        seconds); return the moment it is confirmed injected (T+0)."""
        if not self.settings.dry_run:
            self._guard()
        body = self._resolved_manifest(duration_seconds, InjectionFailed)
        self.last_manifest = body
        if self.settings.dry_run:
            self._create_chaos(InjectionFailed, body, dry_run=True)
            return utcnow()
        try:
            self._create_chaos(InjectionFailed, body)
        except InjectionFailed as exc:
            if _status(exc) == 409:
                raise InjectionFailed(
                    f"a NetworkChaos named {self.chaos_name} already exists in {self.settings.namespace} "
                    f"(another run with this run_id?); it was left untouched: {exc}"
                ) from exc
            raise
        self._created = True
        deadline = time.monotonic() + min(self.settings.inject_timeout_seconds, max(1.0, duration_seconds))
        last: dict[str, Any] | None = None
        while True:
            last = self._get_chaos(InjectionFailed)
            if last is None:
                raise InjectionFailed(f"NetworkChaos {self.chaos_name} disappeared before it was injected")
            if is_injected(last):
                return utcnow()
            if desired_phase(last) == "Stop":
                break
            if time.monotonic() > deadline:
                break
            time.sleep(self.settings.poll_interval_seconds)
        why = "; ".join(chaos_events(last)[-3:]) or json.dumps((last.get("status") or {}).get("conditions"))
        try:
            self.heal()
        except HealFailed as heal_exc:
            raise InjectionFailed(
                f"NetworkChaos {self.chaos_name} not injected within "
                f"{self.settings.inject_timeout_seconds:g}s "
                f"({why}) and could not be removed: {heal_exc}"
            ) from heal_exc
        raise InjectionFailed(
            f"NetworkChaos {self.chaos_name} not injected within {self.settings.inject_timeout_seconds:g}s "
            f"(desiredPhase {desired_phase(last)}; {why}); it was deleted"
        )

    def heal(self) -> datetime | None:
        """Delete our NetworkChaos and wait until it is gone or recovered; None if nothing was active."""
        if self.settings.dry_run:
            return None
        obj = self._get_chaos(HealFailed)
        if obj is None:
            return None
        was_active = not is_recovered(obj)
        try:
            self._chaos_call(
                HealFailed, f"delete networkchaos {self.chaos_name}", "delete_namespaced_custom_object",
                self.chaos_name,
            )
        except HealFailed as exc:
            if _status(exc) != 404:
                raise HealFailed(f"{exc}; remove it by hand: {self.delete_command()}") from exc
        deadline = time.monotonic() + self.settings.heal_timeout_seconds
        while True:
            obj = self._get_chaos(HealFailed)
            if obj is None or is_recovered(obj):
                return utcnow() if was_active else None
            if time.monotonic() > deadline:
                raise HealFailed(
                    f"NetworkChaos {self.chaos_name} still not recovered "
                    f"{self.settings.heal_timeout_seconds:g}s "
                    f"after delete ({'; '.join(chaos_events(obj)[-3:])}); check chaos-controller-manager, "
                    f"then: {self.delete_command()}"
                )
            time.sleep(self.settings.poll_interval_seconds)

    def delete_command(self) -> str:
        return f"kubectl delete networkchaos {self.chaos_name} -n {self.settings.namespace}"

    def partition_active(self) -> bool:
        if self.settings.dry_run:
            return False
        obj = self._get_chaos(TargetError)
        return obj is not None and is_injected(obj)

    def fault_status(self) -> FaultStatus:
        """Whether the NetworkChaos is in force (AllInjected with desiredPhase Run)."""
        if self.settings.dry_run:
            return FaultStatus(False, None, None, "dry run")
        obj = self._get_chaos(TargetError)
        if obj is None:
            return FaultStatus(False, "deleted outside the runbook" if self._created else None)
        if is_injected(obj):
            return FaultStatus(True)
        return FaultStatus(False, f"desiredPhase {desired_phase(obj)}" if self._created else None)

    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        """Log lines of every pod of ``service`` (``read_namespaced_pod_log``), pod by pod."""
        try:
            pods = self._service_pods(service)
        except TargetError as exc:
            raise ProbeError("logs", str(exc)) from exc
        if not pods:
            raise ProbeError("logs", f"no pod of {service!r} in {self.settings.namespace}")
        kwargs: dict[str, Any] = {}
        if since is not None:
            kwargs["since_seconds"] = max(1, math.ceil((utcnow() - since).total_seconds()))
        lines: list[str] = []
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            try:
                text = self._call(
                    ProbeError,
                    f"logs of {pod.metadata.name}",
                    self._core().read_namespaced_pod_log,
                    pod.metadata.name,
                    self.settings.namespace,
                    **kwargs,
                )
            except ProbeError as exc:
                raise ProbeError("logs", exc.reason) from exc.__cause__
            lines += str(text or "").splitlines()
        return lines

    def ground_truth(self) -> GroundTruth | None:
        return None

    def close(self) -> None:
        close = getattr(self.api, "close", None)
        if close is not None:
            close()


def _name_matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + "-")


def _pod_ready(pod: Any) -> bool:
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _pods_check(what: str, pods: list[Any]) -> Check:
    if not pods:
        return Check(f"{what} running and ready", False, "no such pod")
    bad = [
        f"{p.metadata.name} ({p.status.phase if p.status else '?'}"
        f"{', not ready' if p.status and p.status.phase == 'Running' else ''})"
        for p in pods
        if not _pod_ready(p)
    ]
    names = ", ".join(sorted(p.metadata.name for p in pods))
    return Check(f"{what} running and ready", not bad, f"not ready: {', '.join(bad)}" if bad else names)


def _status(exc: BaseException) -> int | None:
    """The HTTP status of the ApiException behind a translated error."""
    cause = exc.__cause__
    while cause is not None:
        status = getattr(cause, "status", None)
        if isinstance(status, int):
            return status
        cause = cause.__cause__
    return None


def _wrap(error: type[GamedayError], message: str) -> GamedayError:
    if error is ProbeError:
        return ProbeError("kubernetes", message)
    if error is InvalidParameters:
        return InvalidParameters({"kubernetes": message})
    return error(message)


__all__ = [
    "KubernetesSettings",
    "KubernetesTarget",
    "PERMISSIONS",
    "Permission",
    "chaos_events",
    "desired_phase",
    "is_injected",
    "is_recovered",
]
