"""GAMEDAY-002 on Kubernetes: the events database is a CloudNativePG ``Cluster``, its primary is killed by
a Chaos Mesh ``PodChaos``.

What CloudNativePG gives, and what this module reads of it:

- the ``postgresql.cnpg.io/v1`` ``Cluster``'s status: ``currentPrimary`` (the instance that is primary),
  ``targetPrimary`` (the one the operator wants: it differs during a failover or a switchover),
  ``phase`` ("Cluster in healthy state", "Failing over", "Switchover in progress", "Waiting for the
  instances to become active", ...), ``timelineID``, ``instances``, ``readyInstances``, ``instanceNames``;
- instance pods named ``<cluster>-<n>``, labelled ``cnpg.io/cluster``, ``cnpg.io/instanceName``,
  ``cnpg.io/podRole: instance`` and ``cnpg.io/instanceRole`` (``primary`` | ``replica``; the older
  ``role`` too). After a pod kill the operator promotes a replica and creates the killed instance's pod
  again, same name, new uid;
- each instance's metrics (port 9187, scraped through the Cluster's PodMonitor, which labels every series
  with ``namespace`` and ``pod``): ``cnpg_collector_up``, ``cnpg_pg_replication_in_recovery``,
  ``cnpg_pg_replication_is_wal_receiver_up``, ``cnpg_pg_replication_lag`` (seconds),
  ``cnpg_pg_replication_streaming_replicas`` and, on the primary, ``cnpg_pg_stat_replication_*`` per
  standby (``application_name`` = the standby's instance name; ``replay_diff_bytes`` is its lag);
- ``kubectl cnpg promote CLUSTER INSTANCE`` patches the Cluster's ``status`` subresource
  (``targetPrimary``, ``targetPrimaryTimestamp``, ``phase: Switchover in progress``, ``phaseReason``)
  under an optimistic lock: the patch carries the ``resourceVersion`` it read, a 409 means read again.

``CnpgDatabase`` is the ``Database`` the readings use: the primary and timeline from the Cluster's status,
the nodes accepting writes (``cnpg_pg_replication_in_recovery == 0``; two is a split brain), the
streaming replicas and the lag from Prometheus, and a write through the DSN that ``events_dsn_env``
names (the ``-rw`` Service). A sample counts only when it comes from the pod's current incarnation (newer
than the pod's ``creationTimestamp``, the pod not being deleted): the last samples of a killed primary
linger in Prometheus until its target is marked down and must not make a second primary.

``CnpgPrimaryKill`` is the ``Fault``: a ``PodChaos`` ``pod-kill`` (mode ``one``) of the pod the
``primary_selector`` labels pick, through ``chaosmesh.ChaosExperiment``. A pod kill is instantaneous:
T+0 is the moment the API shows the victim gone (404, a new uid, or a ``deletionTimestamp``). Heal is
the killed instance's pod back and Running (the operator creates it again and the kubelet starts it: the
lab's counterpart restarts the killed node), and the PodChaos deleted. Heal does not wait for Ready:
that is the instance rejoining, which the gameday measures (``replica_rejoin_seconds``); a heal that
blocked on it would delay the phases after the failover and inflate what they time.
``promote`` is the rollback's manual promotion, what ``kubectl cnpg promote`` does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import yaml
from kubernetes import client

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
from gamedaylib.gamedays.postgres_failover.database import ClusterState
from gamedaylib.lab.pgclient import SYNC_WAIT_CANCELLED, cancel_after
from gamedaylib.parameters import as_dict
from gamedaylib.probes import parse_time
from gamedaylib.probes.metrics import PrometheusProbe
from gamedaylib.secrets import MASK, redact_text
from gamedaylib.targets.base import Check, FaultStatus, Target
from gamedaylib.targets.chaosmesh import POD_CHAOS, ChaosExperiment, chaos_events, records
from gamedaylib.targets.kubeapi import TRANSIENT_STATUSES, KubeApi, status_of, translate
from gamedaylib.targets.kubernetes import (
    RBAC_MANIFEST,
    KubernetesTarget,
    Permission,
    guard_identity,
    rbac_checks,
)

__all__ = [
    "CNPG_PERMISSIONS",
    "CONSUMER_DEPLOYMENT",
    "DEFAULT_MANIFEST",
    "GROUP",
    "PHASE_FAILOVER",
    "PHASE_HEALTHY",
    "PHASE_SWITCHOVER",
    "ClusterView",
    "CnpgCluster",
    "CnpgDatabase",
    "CnpgPrimaryKill",
    "CnpgSettings",
    "InstanceMetrics",
    "InstancePod",
    "cluster_state",
    "cnpg_database",
    "cnpg_primary_kill",
    "default_prometheus_selector",
    "read_instance_metrics",
    "selector_problems",
]

GROUP = "postgresql.cnpg.io"
VERSION = "v1"
CLUSTERS = "clusters"
CLUSTER_LABEL = "cnpg.io/cluster"
ROLE_LABEL = "cnpg.io/instanceRole"
OLD_ROLE_LABEL = "role"
PHASE_HEALTHY = "Cluster in healthy state"
PHASE_FAILOVER = "Failing over"
PHASE_SWITCHOVER = "Switchover in progress"
CHANGING_PRIMARY = (PHASE_FAILOVER, PHASE_SWITCHOVER)
DEFAULT_MANIFEST = (
    Path(__file__).resolve().parent.parent / "gamedays" / "postgres_failover" / "postgres-primary-kill.yaml"
)
NAME_PREFIX = "postgres-primary-kill"
INSTANCE_LABEL = "pod"  # the PodMonitor's label naming the instance a series comes from
REPLICATION_METRICS = (
    "cnpg_collector_up",
    "cnpg_pg_replication_in_recovery",
    "cnpg_pg_replication_is_wal_receiver_up",
    "cnpg_pg_replication_lag",
    "cnpg_pg_replication_streaming_replicas",
)
STANDBY_LAG_METRIC = "cnpg_pg_stat_replication_replay_diff_bytes"
WRITE_TIMEOUT_SECONDS = 2.0
PROMOTE_ATTEMPTS = 5

CNPG_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "create", chaos.POD_CHAOS_PLURAL, chaos.GROUP, why="kill the primary (and the server-side dry run)"
    ),
    Permission("get", chaos.POD_CHAOS_PLURAL, chaos.GROUP, why="the kill's record: which pod, applied"),
    Permission("list", chaos.POD_CHAOS_PLURAL, chaos.GROUP, why="no other gameday's PodChaos in progress"),
    Permission("delete", chaos.POD_CHAOS_PLURAL, chaos.GROUP, why="heal and rollback (remove the record)"),
    Permission("get", CLUSTERS, GROUP, why="the Cluster's status: primary, target primary, phase, timeline"),
    Permission(
        "patch",
        CLUSTERS,
        GROUP,
        subresource="status",
        why="the rollback's manual promotion (what kubectl cnpg promote patches)",
    ),
    Permission(
        "patch",
        "deployments",
        "apps",
        required=False,
        why="the rollback's restart of reporting when it did not reconnect (what kubectl rollout restart patches)",
    ),
)
CONSUMER_DEPLOYMENT = "reporting"  # the playbook's rollback: kubectl rollout restart deployment/reporting
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


# ------------------------------------------------------------------ settings


def default_prometheus_selector(namespace: str, cluster: str) -> str:
    """The PromQL matchers of a Cluster's instance series as its PodMonitor labels them."""
    return f'namespace="{namespace}",{INSTANCE_LABEL}=~"{cluster}-[0-9]+"'


@dataclass(frozen=True)
class CnpgSettings:
    """What the CloudNativePG side reads from the parameters (see ``from_params``)."""

    namespace: str
    cluster: str = "events-db"
    primary_selector: Mapping[str, Any] = field(
        default_factory=lambda: {CLUSTER_LABEL: "events-db", ROLE_LABEL: "primary"}
    )
    run_id: str = "run"
    gameday_id: str = "GAMEDAY-002"
    events_dsn_env: str = "GAMEDAY_EVENTS_DSN"
    prometheus_url: str | None = None
    prometheus_selector: str = ""  # empty: default_prometheus_selector
    chaos_manifest: str = ""  # empty: the shipped template
    dry_run: bool = False
    inject_timeout_seconds: float = 60.0
    heal_timeout_seconds: float = 300.0  # the killed instance's pod back and Running
    poll_interval_seconds: float = 0.25
    write_timeout_seconds: float = WRITE_TIMEOUT_SECONDS

    @property
    def selector(self) -> str:
        return self.prometheus_selector or default_prometheus_selector(self.namespace, self.cluster)

    @property
    def manifest_path(self) -> Path:
        return Path(self.chaos_manifest) if self.chaos_manifest else DEFAULT_MANIFEST

    @classmethod
    def from_params(cls, params: Any, target: KubernetesTarget) -> CnpgSettings:
        """From validated parameters (a ``RunParams`` or its plain mapping) and the target's settings
        (namespace, run id, dry run, timeouts). The Prometheus matchers of the cluster's series are
        ``prometheus_selectors[cnpg_cluster]`` when given."""
        p = params if isinstance(params, Mapping) else as_dict(params)
        problems = selector_problems(p)
        if problems:
            raise InvalidParameters(problems)
        s = target.settings
        cluster = str(p.get("cnpg_cluster") or "events-db")
        return cls(
            namespace=s.namespace,
            cluster=cluster,
            primary_selector=dict(
                p.get("primary_selector") or {CLUSTER_LABEL: cluster, ROLE_LABEL: "primary"}
            ),
            run_id=s.run_id,
            gameday_id=str(p.get("gameday_id") or "GAMEDAY-002"),
            events_dsn_env=str(p.get("events_dsn_env") or "GAMEDAY_EVENTS_DSN"),
            prometheus_url=target.endpoints.prometheus_url,
            prometheus_selector=str((p.get("prometheus_selectors") or {}).get(cluster) or ""),
            chaos_manifest=str(p.get("chaos_manifest") or ""),
            dry_run=s.dry_run,
            inject_timeout_seconds=s.inject_timeout_seconds,
            heal_timeout_seconds=max(s.heal_timeout_seconds, 300.0),
            poll_interval_seconds=s.poll_interval_seconds,
        )


def selector_problems(params: Mapping[str, Any]) -> dict[str, str]:
    """Cross-parameter problems (for the parameters' ``problems()`` hook): the primary selector must pick
    the Cluster's primary, by the labels CloudNativePG gives it."""
    cluster = str(params.get("cnpg_cluster") or "")
    selector = params.get("primary_selector") or {}
    problems: dict[str, str] = {}
    if not selector:
        return {
            "primary_selector": "must select the primary's pod (CloudNativePG: "
            f"{{{CLUSTER_LABEL}: {cluster or '<cluster>'}, {ROLE_LABEL}: primary}})"
        }
    named = selector.get(CLUSTER_LABEL)
    if cluster and named is not None and named != cluster:
        problems["primary_selector"] = (
            f"selects {CLUSTER_LABEL}={named} but cnpg_cluster is {cluster!r}: "
            "the kill would hit another cluster's primary"
        )
    role = selector.get(ROLE_LABEL, selector.get(OLD_ROLE_LABEL))
    if role is not None and role != "primary":
        problems["primary_selector"] = f"selects {ROLE_LABEL}={role}: the gameday kills the primary"
    return problems


# ------------------------------------------------------------------ the Cluster and its pods


@dataclass(frozen=True)
class ClusterView:
    """A ``Cluster`` object as GAMEDAY-002 reads it."""

    name: str
    current_primary: str | None
    target_primary: str | None
    phase: str
    phase_reason: str
    timeline: int | None
    instances: int
    ready_instances: int
    instance_names: tuple[str, ...]
    resource_version: str
    synchronous_replicas: int | None  # spec: synchronous standbys required (None: not configured)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ClusterView:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        sync = (spec.get("postgresql") or {}).get("synchronous") or {}
        if sync.get("number") is not None:
            synchronous: int | None = int(sync["number"])
        elif spec.get("minSyncReplicas") or spec.get("maxSyncReplicas"):
            synchronous = int(spec.get("minSyncReplicas") or 0) or int(spec.get("maxSyncReplicas") or 0)
        else:
            synchronous = None
        timeline = status.get("timelineID")
        return cls(
            name=str(meta.get("name", "")),
            current_primary=status.get("currentPrimary") or None,
            target_primary=status.get("targetPrimary") or None,
            phase=str(status.get("phase") or ""),
            phase_reason=str(status.get("phaseReason") or ""),
            timeline=int(timeline) if isinstance(timeline, int) else None,
            instances=int(status.get("instances") or spec.get("instances") or 0),
            ready_instances=int(status.get("readyInstances") or 0),
            instance_names=tuple(status.get("instanceNames") or ()),
            resource_version=str(meta.get("resourceVersion") or ""),
            synchronous_replicas=synchronous,
        )

    @property
    def changing_primary(self) -> bool:
        return self.phase in CHANGING_PRIMARY or self.current_primary != self.target_primary

    def describe(self) -> str:
        reason = f" ({self.phase_reason})" if self.phase_reason else ""
        return (
            f"phase {self.phase or 'unknown'}{reason}; currentPrimary {self.current_primary}, targetPrimary "
            f"{self.target_primary}; timeline {self.timeline}; {self.ready_instances}/{self.instances} ready"
        )


@dataclass(frozen=True)
class InstancePod:
    """One pod of the Cluster (or picked by the primary selector)."""

    name: str
    uid: str
    created: datetime | None
    phase: str
    ready: bool
    deleting: bool
    role: str | None  # cnpg.io/instanceRole (or role)
    waiting: tuple[str, ...] = ()  # containers' waiting/terminated reasons: CrashLoopBackOff, ...

    @property
    def serving(self) -> bool:
        """Running, Ready and not being deleted."""
        return self.phase == "Running" and self.ready and not self.deleting

    def state(self) -> str:
        if self.deleting:
            return "Terminating"
        words = self.phase + ("" if self.ready or self.phase != "Running" else ", not ready")
        return words + (f" ({', '.join(self.waiting)})" if self.waiting else "")


def instance_pod(pod: Any) -> InstancePod:
    """A ``V1Pod`` as the fault and the readings judge it."""
    meta, status = pod.metadata, pod.status
    labels = meta.labels or {}
    conditions = (status.conditions if status else None) or []
    waiting = []
    for cs in (status.container_statuses if status else None) or []:
        state = cs.state
        reason = (state.waiting.reason if state and state.waiting else None) or (
            state.terminated.reason if state and state.terminated else None
        )
        if reason:
            waiting.append(f"{cs.name}: {reason}")
    created = meta.creation_timestamp
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return InstancePod(
        name=meta.name,
        uid=str(meta.uid or ""),
        created=created if isinstance(created, datetime) else parse_time(created),
        phase=(status.phase if status else None) or "Unknown",
        ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
        deleting=meta.deletion_timestamp is not None,
        role=labels.get(ROLE_LABEL) or labels.get(OLD_ROLE_LABEL),
        waiting=tuple(waiting),
    )


class CnpgCluster:
    """The Cluster object and its pods, through the target's API session."""

    def __init__(self, api: KubeApi, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    def describe(self) -> str:
        return f"Cluster {self.namespace}/{self.name} ({CLUSTERS}.{GROUP})"

    def read_object(
        self, error: type[GamedayError] = ProbeError, *, retry_until: float | None = None
    ) -> dict[str, Any]:
        """The Cluster object; ``error`` naming what to do when it is missing (404) or forbidden (403)."""
        timeout = self.api.request_timeout_for(retry_until)
        try:
            answer: Any = self.api.call(
                error,
                f"get {self.describe()}",
                lambda api: client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, CLUSTERS, self.name, _request_timeout=timeout
                ),
                retry_until=retry_until,
            )
        except GamedayError as exc:
            raise translate(error, self._explain(exc)) from exc
        return dict(answer)

    def read(
        self, error: type[GamedayError] = ProbeError, *, retry_until: float | None = None
    ) -> ClusterView:
        return ClusterView.from_object(self.read_object(error, retry_until=retry_until))

    def _explain(self, exc: GamedayError) -> str:
        text = exc.reason if isinstance(exc, ProbeError) else str(exc)
        status = status_of(exc)
        if status == 404:
            return (
                f"no {self.describe()}: check cnpg_cluster and namespace (kubectl get {CLUSTERS}.{GROUP} -n "
                f"{self.namespace}); {text}"
            )
        if status == 403:
            return (
                f"{self.describe()} is not readable by this identity (RBAC): {text}; apply {RBAC_MANIFEST} "
                f"(kubectl apply -n {self.namespace} -f {RBAC_MANIFEST})"
            )
        return text

    def pods(self, error: type[GamedayError] = ProbeError, selector: str | None = None) -> list[InstancePod]:
        """Pods of the Cluster (``cnpg.io/cluster=<name>``), or those ``selector`` picks."""
        label_selector = selector or f"{CLUSTER_LABEL}={self.name}"
        timeout = self.api.request_timeout
        answer = self.api.call(
            error,
            f"list pods in {self.namespace} ({label_selector})",
            lambda api: client.CoreV1Api(api).list_namespaced_pod(
                self.namespace, label_selector=label_selector, _request_timeout=timeout
            ),
        )
        return [instance_pod(p) for p in answer.items or []]

    def pod(self, name: str, error: type[GamedayError] = TargetError) -> InstancePod | None:
        """One pod by name, None when it does not exist."""
        timeout = self.api.request_timeout
        try:
            answer = self.api.call(
                error,
                f"get pod {name}",
                lambda api: client.CoreV1Api(api).read_namespaced_pod(
                    name, self.namespace, _request_timeout=timeout
                ),
            )
        except GamedayError as exc:
            if status_of(exc) == 404:
                return None
            raise
        return instance_pod(answer)

    def promote(
        self, instance: str, *, error: type[GamedayError] = HealFailed, attempts: int = PROMOTE_ATTEMPTS
    ) -> ClusterView:
        """What ``kubectl cnpg promote <cluster> <instance>`` does: a merge patch of the status subresource
        (``targetPrimary``, its timestamp, ``phase: Switchover in progress``, ``phaseReason``) carrying
        the ``resourceVersion`` read, so that the API server refuses it (409) when the operator changed
        the status meanwhile; then read again and retry. Nothing is patched when ``instance`` already is
        the target primary."""
        for attempt in range(1, attempts + 1):
            obj = self.read_object(error)
            if (obj.get("status") or {}).get("targetPrimary") == instance:
                return ClusterView.from_object(obj)
            now = utcnow().isoformat(timespec="microseconds").replace("+00:00", "Z")
            patch = {
                "metadata": {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion")},
                "status": {
                    "targetPrimary": instance,
                    "targetPrimaryTimestamp": now,
                    "phase": PHASE_SWITCHOVER,
                    "phaseReason": f"Switching over to {instance}",
                },
            }
            try:
                answer = self._patch_status(
                    patch, error, f"patch {self.describe()} status (targetPrimary {instance})"
                )
            except GamedayError as exc:
                if status_of(exc) == 409 and attempt < attempts:
                    continue
                raise translate(error, self._explain(exc)) from exc
            return ClusterView.from_object(dict(answer))
        raise translate(error, f"{self.describe()}: promotion of {instance} conflicted {attempts} times")

    def _patch_status(self, patch: dict[str, Any], error: type[GamedayError], what: str) -> Any:
        """A JSON merge patch of the status subresource; not retried after a 5xx (it may have applied)."""
        timeout = self.api.request_timeout
        return self.api.call(
            error,
            what,
            lambda api: client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                CLUSTERS,
                self.name,
                patch,
                _request_timeout=timeout,
                _content_type="application/merge-patch+json",
            ),
            idempotent=False,
        )


# ------------------------------------------------------------------ Prometheus


@dataclass(frozen=True)
class InstanceMetrics:
    """One instance's CloudNativePG metrics, as Prometheus holds them now."""

    pod: str
    scraped_at: datetime | None  # when its cnpg_pg_replication_in_recovery was scraped
    collector_up: float | None = None
    in_recovery: float | None = None
    wal_receiver_up: float | None = None
    lag_seconds: float | None = None
    streaming_replicas: float | None = None
    standbys: Mapping[str, float] = field(default_factory=dict)  # application_name -> replay lag (bytes)


def read_instance_metrics(probe: PrometheusProbe, selector: str) -> dict[str, InstanceMetrics]:
    """Every instance of the cluster ``selector`` matches, by its ``pod`` label; ``ProbeError`` when
    Prometheus cannot be read."""
    names = "|".join(REPLICATION_METRICS)
    values: dict[str, dict[str, float]] = {}
    for series in probe.query(f'{{__name__=~"{names}",{selector}}}'):
        pod = (series.get("metric") or {}).get(INSTANCE_LABEL)
        if pod:
            values.setdefault(pod, {})[series["metric"]["__name__"]] = float(series["value"][1])
    scraped: dict[str, datetime] = {}
    for series in probe.query(
        f"max by ({INSTANCE_LABEL}) (timestamp(cnpg_pg_replication_in_recovery{{{selector}}}))"
    ):
        pod = (series.get("metric") or {}).get(INSTANCE_LABEL)
        if pod:
            scraped[pod] = datetime.fromtimestamp(float(series["value"][1]), timezone.utc)
    standbys: dict[str, dict[str, float]] = {}
    for series in probe.query(f"{STANDBY_LAG_METRIC}{{{selector}}}"):
        metric = series.get("metric") or {}
        if metric.get(INSTANCE_LABEL):
            standbys.setdefault(metric[INSTANCE_LABEL], {})[str(metric.get("application_name", ""))] = float(
                series["value"][1]
            )
    return {
        pod: InstanceMetrics(
            pod=pod,
            scraped_at=scraped.get(pod),
            collector_up=v.get("cnpg_collector_up"),
            in_recovery=v.get("cnpg_pg_replication_in_recovery"),
            wal_receiver_up=v.get("cnpg_pg_replication_is_wal_receiver_up"),
            lag_seconds=v.get("cnpg_pg_replication_lag"),
            streaming_replicas=v.get("cnpg_pg_replication_streaming_replicas"),
            standbys=standbys.get(pod, {}),
        )
        for pod, v in values.items()
    }


def _current(metrics: InstanceMetrics, pods: Mapping[str, InstancePod]) -> bool:
    """The sample comes from the pod as it runs now: the pod exists, is not being deleted, and the sample
    is not older than the pod (a killed pod's last samples stay in Prometheus until its target fails)."""
    pod = pods.get(metrics.pod)
    if pod is None or pod.deleting or metrics.collector_up == 0:
        return False
    if pod.created is None or metrics.scraped_at is None:
        return metrics.scraped_at is not None
    return metrics.scraped_at >= pod.created


def cluster_state(
    view: ClusterView, pods: Sequence[InstancePod], metrics: Mapping[str, InstanceMetrics]
) -> ClusterState:
    """The cluster as ``Database.state`` reports it (pure: the Cluster, its pods, the metrics)."""
    by_name = {p.name: p for p in pods}
    live = {name: m for name, m in metrics.items() if _current(m, by_name)}
    writable = tuple(sorted(name for name, m in live.items() if m.in_recovery == 0))
    primary_pod = by_name.get(view.current_primary or "")
    primary = (
        view.current_primary
        if view.current_primary
        and not view.changing_primary
        and primary_pod is not None
        and not primary_pod.deleting
        else None
    )
    leader = live.get(primary or "") or (live.get(writable[0]) if len(writable) == 1 else None)
    listed = set(leader.standbys) if leader is not None and leader.standbys else None
    streaming = tuple(
        sorted(
            name
            for name, m in live.items()
            if m.in_recovery == 1 and m.wal_receiver_up == 1 and (listed is None or name in listed)
        )
    )
    lag_bytes = max(leader.standbys.values()) if leader is not None and leader.standbys else None
    lags = [m.lag_seconds for n, m in live.items() if n in streaming and m.lag_seconds is not None]
    detail = view.describe() + (
        f"; replication lag {max(lags):g} s (cnpg_pg_replication_lag)" if lags else ""
    )
    return ClusterState(primary, writable, streaming, view.timeline, lag_bytes, (), detail)


# ------------------------------------------------------------------ the database


class CnpgDatabase:
    """The events database on CloudNativePG, read through the API server and Prometheus, written through
    the ``-rw`` Service (the DSN ``events_dsn_env`` names, never logged)."""

    def __init__(
        self, cluster: CnpgCluster, settings: CnpgSettings, prometheus: PrometheusProbe | None = None
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.prometheus = prometheus
        sync = "the operator's failover"
        self.description = (
            f"CloudNativePG Cluster {settings.namespace}/{settings.cluster} ({sync}) behind its -rw Service"
        )
        self._lock = threading.Lock()  # the sampler's thread and a phase may both ask

    # -- readings
    def instance_metrics(self) -> dict[str, InstanceMetrics]:
        """The cluster's instances in Prometheus; ``ProbeError`` when it cannot be read or holds none
        (the replica and split-brain readings would be blind)."""
        if self.prometheus is None:
            raise ProbeError(
                "database", "no prometheus_url: the replicas' state (cnpg_* metrics) cannot be read"
            )
        found = read_instance_metrics(self.prometheus, self.settings.selector)
        if not found:
            raise ProbeError(
                "database", f"Prometheus has no cnpg_pg_replication_* series for {{{self.settings.selector}}}"
            )
        return found

    def state(self) -> ClusterState:
        with self._lock:
            view = self.cluster.read(ProbeError)
            pods = self.cluster.pods(ProbeError)
            metrics = self.instance_metrics()
            return cluster_state(view, pods, metrics)

    def write(self) -> tuple[bool, str]:
        """One transaction that must be committed by a primary (it takes a transaction id: a replica
        refuses, and with synchronous replication the commit waits for a standby as ``reporting``'s
        INSERT does), through the ``-rw`` Service; cancelled after ``write_timeout_seconds``."""
        env = self.settings.events_dsn_env
        dsn = os.environ.get(env)
        if not dsn:
            return False, f"${env} is not set (the DSN of the Cluster's -rw Service)"
        timeout = self.settings.write_timeout_seconds
        notices: list[str] = []
        try:
            with psycopg.connect(
                dsn,
                connect_timeout=max(2, int(timeout)),
                options=f"-c statement_timeout={int(timeout * 1000)}",
            ) as conn:
                conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
                with cancel_after(conn, timeout):
                    conn.execute("SELECT pg_current_xact_id()")
                    conn.commit()
        except psycopg.Error as exc:
            return False, self._safe(exc, dsn)
        if any(SYNC_WAIT_CANCELLED in n for n in notices):
            return (
                False,
                "the commit waited for a synchronous standby until cancelled (committed locally only)",
            )
        return True, ""

    @staticmethod
    def _safe(exc: BaseException, dsn: str) -> str:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return redact_text(text.replace(dsn, MASK))

    # -- pre-flight
    def preflight(self) -> list[Check]:
        s = self.settings
        checks: list[Check] = []
        try:
            view = self.cluster.read(ProbeError)
        except ProbeError as exc:
            return [Check(f"{self.cluster.describe()} readable", False, exc.reason)]
        checks.append(Check(f"{self.cluster.describe()} readable", True, view.describe(), fatal=False))
        healthy = (
            view.phase == PHASE_HEALTHY
            and not view.changing_primary
            and view.instances >= 2
            and view.ready_instances == view.instances
        )
        checks.append(
            Check(
                "one primary, every instance ready (cluster healthy)",
                healthy,
                view.describe() + ("" if view.instances >= 2 else "; a failover needs a replica"),
            )
        )
        sync = view.synchronous_replicas
        checks.append(
            Check(
                "synchronous replication configured"
                if sync
                else "replication is asynchronous (noted: confirmed writes may be lost)",
                True,
                f"{sync} synchronous standby(s) required" if sync else "spec.postgresql.synchronous not set",
                fatal=False,
            )
        )
        checks += self._metrics_checks(view)
        dsn_set = bool(os.environ.get(s.events_dsn_env))
        checks.append(
            Check(
                f"${s.events_dsn_env} set (the -rw Service's DSN)",
                dsn_set,
                "set"
                if dsn_set
                else f"export {s.events_dsn_env}='postgresql://USER:...@{s.cluster}-rw."
                f"{s.namespace}:5432/DB' (never archived): without it the failover cannot be measured "
                "by writing",
            )
        )
        if dsn_set:
            ok, why = self.write()
            checks.append(Check("a write through the -rw Service is acknowledged", ok, why or "committed"))
        return checks

    def _metrics_checks(self, view: ClusterView) -> list[Check]:
        s = self.settings
        name = "Prometheus holds the cluster's cnpg_* series"
        try:
            metrics = self.instance_metrics()
            pods = self.cluster.pods(ProbeError)
        except ProbeError as exc:
            return [
                Check(
                    name,
                    False,
                    f"{exc.reason}: the replica, lag and split-brain readings would be blind; "
                    "enable the Cluster's PodMonitor (spec.monitoring.enablePodMonitor: true) or set "
                    f"prometheus_selectors: {{{s.cluster}: '<matchers>'}}",
                )
            ]
        state = cluster_state(view, pods, metrics)
        missing = sorted(set(view.instance_names) - set(metrics))
        checks = [
            Check(
                name,
                not missing,
                f"instances {', '.join(sorted(metrics))} in {{{s.selector}}}"
                + (f"; missing: {', '.join(missing)}" if missing else ""),
            )
        ]
        checks.append(
            Check(
                "exactly one instance accepts writes (cnpg_pg_replication_in_recovery == 0)",
                list(state.writable) == [view.current_primary],
                f"not in recovery: {list(state.writable)}; currentPrimary {view.current_primary}",
            )
        )
        replicas = [n for n in view.instance_names if n != view.current_primary]
        checks.append(
            Check(
                "every replica streaming",
                bool(replicas) and all(r in state.streaming for r in replicas),
                f"streaming: {list(state.streaming)} of {replicas}",
            )
        )
        lags = [m.lag_seconds for n, m in metrics.items() if n in replicas and m.lag_seconds is not None]
        checks.append(
            Check(
                "replication lag under 1 s",
                bool(lags) and max(lags) < 1.0,
                f"cnpg_pg_replication_lag {max(lags):g} s" if lags else "no lag reading",
                fatal=False,
            )
        )
        return checks

    def close(self) -> None:
        if self.prometheus is not None:
            self.prometheus.close()


# ------------------------------------------------------------------ the fault


class CnpgPrimaryKill:
    """The primary's pod killed by a Chaos Mesh ``PodChaos`` (``pod-kill``, mode ``one``)."""

    def __init__(self, target: KubernetesTarget, settings: CnpgSettings, database: CnpgDatabase) -> None:
        self.target = target
        self.api: KubeApi = target.api
        self.settings = settings
        self.database = database
        self.cluster = database.cluster
        self.template = chaos.load_pod_chaos_template(settings.manifest_path)
        self.chaos_name = chaos.chaos_name(settings.run_id, NAME_PREFIX)
        self.experiment = ChaosExperiment(
            self.api, POD_CHAOS, settings.namespace, self.chaos_name, settings.poll_interval_seconds
        )
        self.description = (
            f"the CloudNativePG primary of {settings.cluster} killed (Chaos Mesh PodChaos pod-kill "
            f"of the pod labelled {chaos.label_selector_string(settings.primary_selector)})"
        )
        self.killed: str | None = None
        self.killed_uid: str | None = None
        self.killed_at: datetime | None = None
        self.back_at: datetime | None = None
        self._foreign = False
        self.body: dict[str, Any] = self.build()  # validated locally: a bad template refuses here

    # -- the manifest
    def build(self) -> dict[str, Any]:
        """The PodChaos body for this run, validated as the API server and the webhook would."""
        s = self.settings
        spec = self.template.get("spec") or {}
        if spec.get("action", "pod-kill") != "pod-kill" or spec.get("mode", "one") != "one":
            raise InvalidParameters(
                {
                    "chaos_manifest": f"{s.manifest_path}: GAMEDAY-002 kills one primary: action "
                    f"must be pod-kill and mode one, got {spec.get('action')} / "
                    f"{spec.get('mode')}"
                }
            )
        body = chaos.build_pod_chaos(
            namespace=s.namespace,
            run_id=s.run_id,
            selector=s.primary_selector,
            name_prefix=NAME_PREFIX,
            gameday_id=s.gameday_id,
            template=self.template,
        )
        chaos.validate_pod_chaos(body)
        return body

    def manifest(self) -> str:
        return yaml.safe_dump(self.body, sort_keys=False)

    # -- pre-flight
    def preflight(self) -> list[Check]:
        checks = rbac_checks(self.api, self.settings.namespace, CNPG_PERMISSIONS)
        checks += self._check_victim()
        checks += self._check_other_kills()
        if not any(c.fatal and not c.ok for c in checks):
            checks.append(self._check_server_dry_run())
        return checks + self.database.preflight()

    def _check_victim(self) -> list[Check]:
        name = f"primary pod found ({chaos.label_selector_string(self.settings.primary_selector)})"
        try:
            victim = self._victim(TargetError)
        except TargetError as exc:
            return [Check(name, False, str(exc))]
        try:
            view = self.cluster.read(TargetError)
        except TargetError as exc:
            return [
                Check(name, True, victim.name, fatal=False),
                Check("the pod is the Cluster's current primary", False, str(exc)),
            ]
        return [
            Check(name, True, f"{victim.name} ({victim.state()})", fatal=False),
            Check(
                "the pod is the Cluster's current primary",
                victim.name == view.current_primary,
                f"pod {victim.name}; status.currentPrimary {view.current_primary}",
            ),
        ]

    def _victim(self, error: type[GamedayError]) -> InstancePod:
        """The one pod the selector picks, Running and Ready; ``error`` saying what was found otherwise."""
        selector = chaos.label_selector_string(self.settings.primary_selector)
        pods = self.cluster.pods(error, selector)
        serving = [p for p in pods if p.serving]
        if len(serving) == 1 and len(pods) == 1:
            return serving[0]
        seen = ", ".join(f"{p.name} ({p.state()})" for p in pods) or "none"
        if not pods:
            raise translate(
                error,
                f"no pod in {self.settings.namespace} matches {selector}: is the Cluster named "
                f"{self.settings.cluster} (cnpg_cluster, primary_selector)?",
            )
        if not serving:
            raise translate(
                error, f"the primary's pod is not serving: {seen}; wait until the Cluster is healthy"
            )
        raise translate(
            error,
            f"{len(pods)} pods match {selector}: {seen}; a pod kill in mode one would pick one "
            "at random: the primary must be the only one",
        )

    def _check_other_kills(self) -> list[Check]:
        ns = self.settings.namespace
        try:
            items = self.experiment.list_objects(TargetError, f"{chaos.MANAGED_BY_LABEL}={chaos.MANAGED_BY}")
        except TargetError as exc:
            if status_of(exc) == 404:
                return [
                    Check(
                        "chaos mesh PodChaos served",
                        False,
                        f"the PodChaos CRD (podchaos.chaos-mesh.org) is not "
                        f"installed: install Chaos Mesh ({exc})",
                    )
                ]
            return [Check("no other gameday in progress", False, f"cannot list PodChaos: {exc}")]
        others = [o["metadata"]["name"] for o in items if o["metadata"]["name"] != self.chaos_name]
        checks = [
            Check(
                "no other gameday in progress",
                not others,
                "no other gameday PodChaos"
                if not others
                else f"gameday PodChaos in {ns}: {', '.join(others)}; if its gameday is over, kubectl delete "
                f"podchaos -n {ns} {others[0]}",
            )
        ]
        if any(o["metadata"]["name"] == self.chaos_name for o in items) and not self.experiment.created:
            checks.append(
                Check(
                    "chaos name free",
                    False,
                    f"a PodChaos named {self.chaos_name} already exists: run id reused? use a new run_id",
                )
            )
        return checks

    def _check_server_dry_run(self) -> Check:
        name = "PodChaos accepted (server dry run)"
        try:
            self.experiment.create(self.body, TargetError, dry_run=True)
        except TargetError as exc:
            return Check(name, False, str(exc))
        spec = self.body["spec"]
        return Check(
            name,
            True,
            f"PodChaos {self.chaos_name}: action {spec['action']}, mode {spec['mode']}, "
            f"selector {chaos.label_selector_string(self.settings.primary_selector)}",
        )

    # -- inject
    def inject(self, *, deadline_seconds: float) -> datetime:
        """Create the PodChaos and wait until the API shows the victim gone: that moment is T+0."""
        s = self.settings
        if not s.dry_run:
            guard_identity(self.target.settings, self.api.identity)
        victim = self._victim(InjectionFailed)
        if s.dry_run:
            self.experiment.create(self.body, InjectionFailed, dry_run=True)
            return utcnow()
        try:
            self.experiment.create(self.body, InjectionFailed)
        except InjectionFailed as exc:
            if status_of(exc) == 409:
                self._foreign = True
                raise InjectionFailed(
                    f"a PodChaos named {self.chaos_name} already exists in {s.namespace} (another "
                    f"run with this run_id?); it was left untouched: {exc}"
                ) from exc
            raise
        wait = min(s.inject_timeout_seconds, max(5.0, deadline_seconds))
        try:
            t0, killed = self._wait_killed(victim, wait)
        except InjectionFailed as exc:
            try:
                self.experiment.delete_and_wait(s.heal_timeout_seconds)
            except HealFailed as heal_exc:
                raise InjectionFailed(f"{exc}; and it could not be removed: {heal_exc}") from heal_exc
            raise InjectionFailed(f"{exc}; the PodChaos was deleted") from exc
        self.killed, self.killed_at = killed, t0
        self.killed_uid = victim.uid if killed == victim.name else None
        return t0

    def _wait_killed(self, victim: InstancePod, timeout: float) -> tuple[datetime, str]:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.experiment.get(InjectionFailed, retry_until=deadline)
            if obj is None:
                raise InjectionFailed(f"PodChaos {self.chaos_name} disappeared before it killed anything")
            recorded = [r.pod for r in records(obj)]
            name = recorded[0] if recorded else victim.name
            if recorded:
                pod = self.cluster.pod(name, InjectionFailed)
                uid = victim.uid if name == victim.name else None
                if pod is None or pod.deleting or (uid is not None and pod.uid != uid):
                    return utcnow(), name
            if time.monotonic() >= deadline:
                raise InjectionFailed(
                    f"{victim.name} not killed within {timeout:g}s: {self.experiment.diagnose(obj)}"
                )
            time.sleep(self.settings.poll_interval_seconds)

    # -- heal
    def heal(self) -> datetime | None:
        """The killed instance's pod back and Running (CloudNativePG recreates it), and the PodChaos
        deleted; the moment the pod was seen Running, None when nothing was killed (safe twice)."""
        if self.settings.dry_run or self._foreign or not self.experiment.created:
            return None
        errors: list[str] = []
        back: datetime | None = None
        if self.killed is not None and self.back_at is None:
            try:
                back = self.back_at = self._wait_back(self.killed, self.settings.heal_timeout_seconds)
            except HealFailed as exc:
                errors.append(str(exc))
        try:
            self.experiment.delete_and_wait(self.settings.heal_timeout_seconds)
        except HealFailed as exc:
            errors.append(str(exc))
        if errors:
            raise HealFailed("; ".join(errors))
        return back

    def _wait_back(self, name: str, timeout: float) -> datetime:
        deadline = time.monotonic() + timeout
        last = "not seen"
        while True:
            try:
                pod = self.cluster.pod(name, HealFailed)
            except HealFailed as exc:
                if status_of(exc) not in TRANSIENT_STATUSES and status_of(exc) is not None:
                    raise  # refused (401, 403): asking again changes nothing
                pod, last = None, str(exc)
            else:
                last = "gone (not recreated yet)" if pod is None else pod.state()
            if pod is not None and pod.phase == "Running" and not pod.deleting and pod.uid != self.killed_uid:
                return utcnow()
            if time.monotonic() >= deadline:
                ns, cluster = self.settings.namespace, self.settings.cluster
                raise HealFailed(
                    f"{name} not back and Running within {timeout:g}s of the kill: {last}; the "
                    f"operator recreates it: kubectl get pods -n {ns} -l {CLUSTER_LABEL}={cluster} -L "
                    f"{ROLE_LABEL}; kubectl cnpg status {cluster} -n {ns}"
                )
            time.sleep(max(self.settings.poll_interval_seconds, 0.5))

    def status(self) -> FaultStatus:
        """A kill is one-shot: in force from T+0 until the killed instance is back (``heal``)."""
        if self.killed is None:
            return FaultStatus(active=False, detail="nothing killed by this run")
        if self.back_at is None:
            return FaultStatus(
                active=True, detail=f"{self.killed} killed at {self.killed_at} (PodChaos {self.chaos_name})"
            )
        return FaultStatus(active=False, detail=f"{self.killed} back and Running at {self.back_at}")

    def chaos_events(self) -> list[str]:
        obj = self.experiment.last or self.experiment.get(TargetError)
        return chaos_events(obj) if obj else []

    # -- the rollback's manual promotion
    def promote(self, timeout: float) -> tuple[str, datetime]:
        """``kubectl cnpg promote``: the most advanced Ready replica becomes the target primary; returns
        its name and when a write through the -rw Service was acknowledged with it as current primary."""
        deadline = time.monotonic() + timeout
        try:
            pods = self.cluster.pods(HealFailed)
            view = self.cluster.read(HealFailed)
        except HealFailed as exc:
            raise HealFailed(f"manual promotion impossible: {exc}") from exc
        candidates = [p.name for p in pods if p.serving and p.name != self.killed and p.role != "primary"]
        if not candidates:
            raise HealFailed(
                f"no Ready replica to promote in {self.cluster.describe()}: "
                + ", ".join(f"{p.name} ({p.state()})" for p in pods)
            )
        try:
            lags = {n: m.lag_seconds for n, m in self.database.instance_metrics().items()}
        except ProbeError:
            lags = {}
        chosen = min(candidates, key=lambda n: (lags.get(n) is None, lags.get(n) or 0.0, n))
        if view.current_primary != chosen:
            self.cluster.promote(chosen)
        last = "no attempt"
        while True:
            ok, why = self.database.write()
            try:
                current = self.cluster.read(HealFailed).current_primary
            except HealFailed as exc:
                current, why = None, str(exc)
            if ok and current == chosen:
                return chosen, utcnow()
            last = why or f"currentPrimary is {current}"
            if time.monotonic() >= deadline:
                raise HealFailed(
                    f"{chosen} promoted (targetPrimary) but not writable within {timeout:g}s: {last}; "
                    f"kubectl cnpg status {self.settings.cluster} -n {self.settings.namespace}"
                )
            time.sleep(0.5)

    # -- the rollback's restart of the consumer
    def restart_consumer(self) -> str:
        """The playbook's rollback step 3 as ``kubectl rollout restart deployment/reporting`` does it: a
        strategic merge patch of the pod template's ``kubectl.kubernetes.io/restartedAt`` annotation, so
        that the Deployment replaces its pods one by one. ``HealFailed`` naming the fix when refused."""
        ns, name = self.settings.namespace, CONSUMER_DEPLOYMENT
        now = utcnow().isoformat(timespec="seconds").replace("+00:00", "Z")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        timeout = self.api.request_timeout
        try:
            self.api.call(
                HealFailed,
                f"restart deployment/{name} in {ns}",
                lambda api: client.AppsV1Api(api).patch_namespaced_deployment(
                    name, ns, body, _request_timeout=timeout,
                    _content_type="application/strategic-merge-patch+json",
                ),
                idempotent=True,  # the same annotation value twice restarts once
            )
        except HealFailed as exc:
            raise HealFailed(
                f"{exc}; restart it by hand: kubectl -n {ns} rollout restart deployment/{name} "
                "(deploy/rbac.yaml grants deployments patch)"
            ) from exc
        return f"deployment/{name} in {ns} restarted ({RESTARTED_AT} {now}): its pods are replaced one by one"

    def since_kill(self) -> float | None:
        return None if self.killed_at is None else (utcnow() - self.killed_at).total_seconds()


# ------------------------------------------------------------------ what the scenario calls


def _kubernetes(target: Target) -> KubernetesTarget:
    if not isinstance(target, KubernetesTarget):
        raise InvalidParameters({"target": f"CloudNativePG needs the kubernetes target, got {target.name!r}"})
    return target


def cnpg_database(target: Target, params: Any) -> CnpgDatabase:
    """GAMEDAY-002's ``Database`` on a cluster (``make_reader``)."""
    k8s = _kubernetes(target)
    settings = CnpgSettings.from_params(params, k8s)
    prometheus = PrometheusProbe(settings.prometheus_url, timeout=2.0) if settings.prometheus_url else None
    return CnpgDatabase(CnpgCluster(k8s.api, settings.namespace, settings.cluster), settings, prometheus)


def cnpg_primary_kill(target: Target, params: Any) -> CnpgPrimaryKill:
    """GAMEDAY-002's ``Fault`` on a cluster (``make_fault``)."""
    k8s = _kubernetes(target)
    return CnpgPrimaryKill(k8s, CnpgSettings.from_params(params, k8s), cnpg_database(k8s, params))
