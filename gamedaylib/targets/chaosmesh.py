"""A Chaos Mesh experiment's life through the API server, for any kind: create, injected, status, end, delete.

GAMEDAY-001 partitions the network with a ``NetworkChaos``; GAMEDAY-002 kills the PostgreSQL primary
with a ``PodChaos`` (``action: pod-kill``). Both live the same life, which ``ChaosExperiment`` drives:

- **create** (``dryRun=All`` for the server-side check: CRD schema and admission webhook, nothing stored);
- **injected**: Chaos Mesh selects the pods once, writes one *record* per pod
  (``status.experiment.containerRecords``: ``id`` = ``namespace/pod``, ``phase`` ``Not Injected`` |
  ``Injected``, and *record events* ``Apply``/``Recover`` ``Succeeded``/``Failed`` with a timestamp), and
  sets the conditions ``Selected``, ``AllInjected``, ``AllRecovered``, ``Paused``. The fault is in force
  when ``AllInjected=True`` and ``status.experiment.desiredPhase == "Run"``;
- **ends by itself** when ``creationTimestamp + spec.duration`` passes (Kubernetes Event ``TimeUp``) or the
  annotation ``experiment.chaos-mesh.org/pause: "true"`` is set (Event ``Paused``): ``desiredPhase``
  becomes ``Stop``, every record is recovered (``Recover`` events), and the object stays. A one-shot
  action (``pod-kill``, ``container-kill``) always stays ``Run``: nothing to recover;
- **selection failures** never reach the status: no record is written and the controller only emits a
  Kubernetes Event (``Failed``: "Failed to select targets: no target has been selected"), so the
  Events of the object are read too (``list events``, field selector ``involvedObject.name``);
- **delete**: the object gets a ``deletionTimestamp``, ``desiredPhase`` becomes ``Stop``, each record is
  recovered by chaos-daemon on the pod's node, then the finalizer ``chaos-mesh/records`` is removed and
  the object disappears. A chaos-daemon that cannot recover a pod keeps the finalizer (and the fault)
  in place: the message then names the node and its chaos-daemon.

Records are written once, at the first selection (chaos-mesh ``controllers/common/records``: "TODO:
dynamic upgrade the records when some of these pods/containers stopped"): a pod created after the
injection is not in them, is not under the fault, and ``AllInjected`` still says True.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes import client

from gamedaylib import chaos
from gamedaylib.clock import utcnow
from gamedaylib.exceptions import GamedayError, HealFailed, InjectionFailed, TargetError
from gamedaylib.probes import parse_time
from gamedaylib.targets.base import FaultStatus
from gamedaylib.targets.kubeapi import KubeApi, status_of

__all__ = [
    "CHAOS_DAEMON_SELECTOR",
    "FINALIZER",
    "NETWORK_CHAOS",
    "PAUSE_ANNOTATION",
    "POD_CHAOS",
    "ChaosExperiment",
    "ChaosKind",
    "ChaosRecord",
    "KubeEvent",
    "RecordEvent",
    "chaos_events",
    "desired_phase",
    "end_reason",
    "is_injected",
    "is_paused",
    "is_recovered",
    "records",
]

PAUSE_ANNOTATION = "experiment.chaos-mesh.org/pause"
FINALIZER = "chaos-mesh/records"
CLEAN_FINALIZER_ANNOTATION = "chaos-mesh.chaos-mesh.org/cleanFinalizer"
CHAOS_DAEMON_SELECTOR = "app.kubernetes.io/component=chaos-daemon"
ONE_SHOT_POD_ACTIONS = frozenset({"pod-kill", "container-kill"})


@dataclass(frozen=True)
class ChaosKind:
    """A Chaos Mesh custom resource: its kind and plural (group ``chaos-mesh.org``, version v1alpha1)."""

    kind: str
    plural: str
    group: str = chaos.GROUP
    version: str = chaos.VERSION

    def one_shot(self, body: Mapping[str, Any] | None) -> bool:
        """A fault that happens once and is never recovered (Chaos Mesh's ``IsOneShot``)."""
        action = ((body or {}).get("spec") or {}).get("action")
        return self.kind == "PodChaos" and action in ONE_SHOT_POD_ACTIONS


NETWORK_CHAOS = ChaosKind("NetworkChaos", "networkchaos")
POD_CHAOS = ChaosKind("PodChaos", "podchaos")


# ------------------------------------------------------------------ reading an object's status


@dataclass(frozen=True)
class RecordEvent:
    """One step chaos-daemon took on a record: ``Apply``/``Recover``, ``Succeeded``/``Failed``."""

    type: str
    operation: str
    message: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class ChaosRecord:
    """One selected target (a pod) and what was done to it."""

    id: str  # "namespace/pod" (or "namespace/pod/container" for container selectors)
    phase: str  # "Not Injected" | "Injected" (and transitional "Not Injected/..." | "Injected/...")
    selector_key: str = "."
    injected_count: int = 0
    recovered_count: int = 0
    events: tuple[RecordEvent, ...] = ()

    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def pod(self) -> str:
        parts = self.id.split("/")
        return parts[1] if len(parts) > 1 else parts[0]

    @property
    def injected(self) -> bool:
        return self.phase == "Injected"

    def last_event(self) -> RecordEvent | None:
        return self.events[-1] if self.events else None


@dataclass(frozen=True)
class KubeEvent:
    """A Kubernetes Event about a chaos object (``reason``: Started, Applied, TimeUp, Paused, Failed, ...)."""

    reason: str
    message: str
    type: str = "Normal"
    at: datetime | None = None
    count: int = 1

    def describe(self) -> str:
        when = f" at {self.at.isoformat(timespec='seconds')}" if self.at else ""
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.type} {self.reason}: {self.message}{when}{times}"


def _conditions(obj: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(c.get("type")): str(c.get("status"))
        for c in (obj.get("status") or {}).get("conditions") or []
        if isinstance(c, Mapping)
    }


def condition(obj: Mapping[str, Any], kind: str) -> bool:
    return _conditions(obj).get(kind) == "True"


def desired_phase(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("status") or {}).get("experiment") or {}).get("desiredPhase")


def is_injected(obj: Mapping[str, Any]) -> bool:
    """In force: ``AllInjected=True`` and ``desiredPhase=Run``."""
    return condition(obj, "AllInjected") and desired_phase(obj) == "Run"


def is_recovered(obj: Mapping[str, Any]) -> bool:
    """Over: ``desiredPhase=Stop`` and ``AllRecovered=True`` (AllRecovered alone is also True after the
    selection and before the first injection)."""
    return condition(obj, "AllRecovered") and desired_phase(obj) == "Stop"


def is_paused(obj: Mapping[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get(PAUSE_ANNOTATION) == "true" or condition(obj, "Paused")


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def records(obj: Mapping[str, Any]) -> list[ChaosRecord]:
    """The object's records (``status.experiment.containerRecords``), in the controller's order."""
    out = []
    for raw in ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []:
        events = tuple(
            RecordEvent(
                str(e.get("type", "")),
                str(e.get("operation", "")),
                str(e.get("message") or ""),
                parse_time(e.get("timestamp")),
            )
            for e in raw.get("events") or []
        )
        out.append(
            ChaosRecord(
                id=str(raw.get("id", "")),
                phase=str(raw.get("phase", "")),
                selector_key=str(raw.get("selectorKey", ".")),
                injected_count=int(raw.get("injectedCount") or 0),
                recovered_count=int(raw.get("recoveredCount") or 0),
                events=events,
            )
        )
    return out


def chaos_events(obj: Mapping[str, Any]) -> list[str]:
    """Every record event, oldest first within each record, with the record's id and phase:
    ``teei-prod/nats-0 (Injected): Apply Succeeded at 2026-...``."""
    out = []
    for record in records(obj):
        for event in record.events:
            text = f"{record.id} ({record.phase}): {event.operation} {event.type}"
            if event.message:
                text += f": {event.message}"
            if event.at:
                text += f" at {event.at.isoformat(timespec='seconds')}"
            out.append(text)
    return out


def recovered_at(obj: Mapping[str, Any]) -> datetime | None:
    """When the last record was recovered (its latest ``Recover Succeeded`` event): the moment the fault
    really ended; None while a record is not recovered."""
    recs = records(obj)
    if not recs or any(r.phase != "Not Injected" for r in recs):
        return None
    times = [
        e.at
        for r in recs
        for e in r.events
        if e.operation == "Recover" and e.type == "Succeeded" and e.at is not None
    ]
    return max(times) if times else None


def injected_at(obj: Mapping[str, Any]) -> datetime | None:
    """When the last record was first injected (its first ``Apply Succeeded``)."""
    times = []
    for r in records(obj):
        applied = [e.at for e in r.events if e.operation == "Apply" and e.type == "Succeeded" and e.at]
        if applied:
            times.append(min(applied))
    return max(times) if times else None


def duration_expired(obj: Mapping[str, Any], now: datetime | None = None) -> bool:
    """``creationTimestamp + spec.duration`` has passed (Chaos Mesh's ``DurationExceeded``)."""
    spec = obj.get("spec") or {}
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if not spec.get("duration") or created is None:
        return False
    try:
        seconds = chaos.parse_duration(spec["duration"])
    except ValueError:
        return False
    return (now or utcnow()).timestamp() >= created.timestamp() + seconds


def end_reason(obj: Mapping[str, Any], events: Sequence[KubeEvent] = ()) -> str | None:
    """Why the fault stopped without the runbook deleting it: "duration expired", "paused", "deleted
    outside the runbook"; None while ``desiredPhase`` is Run. The Kubernetes Events (``TimeUp``,
    ``Paused``, ``Deleted``) say it first; the object's own spec and annotations when Events are not
    readable."""
    if desired_phase(obj) != "Stop":
        return None
    by_event = {"TimeUp": "duration expired", "Paused": "paused", "Deleted": "deleted outside the runbook"}
    for event in sorted(events, key=lambda e: e.at.timestamp() if e.at else 0.0, reverse=True):
        if event.reason in by_event:
            return by_event[event.reason]
    if is_deleting(obj):
        return "deleted outside the runbook"
    if duration_expired(obj):
        return "duration expired"
    if is_paused(obj):
        return "paused"
    return "stopped by Chaos Mesh"


# ------------------------------------------------------------------ the lifecycle


@dataclass
class ChaosExperiment:
    """One named Chaos Mesh object in one namespace, driven through ``KubeApi``."""

    api: KubeApi
    kind: ChaosKind
    namespace: str
    name: str
    poll_interval: float = 0.25
    created: bool = False  # this process created it (not a dry run)
    deleted_by_us: bool = False  # this process sent the DELETE
    last: dict[str, Any] | None = field(default=None, repr=False)  # the last object read

    # -- calls
    def _custom(self, api_client: Any) -> Any:
        return client.CustomObjectsApi(api_client)

    def _objects(
        self,
        error: type[GamedayError],
        what: str,
        method: str,
        *args: Any,
        retry_until: float | None = None,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> Any:
        timeout = self.api.request_timeout_for(retry_until)

        def call(api_client: Any) -> Any:
            fn = getattr(self._custom(api_client), method)
            return fn(
                self.kind.group,
                self.kind.version,
                self.namespace,
                self.kind.plural,
                *args,
                _request_timeout=timeout,
                **kwargs,
            )

        return self.api.call(error, what, call, retry_until=retry_until, idempotent=idempotent)

    def describe(self) -> str:
        return f"{self.kind.kind} {self.name}"

    def delete_command(self) -> str:
        return f"kubectl delete {self.kind.plural} {self.name} -n {self.namespace}"

    def create(
        self, body: Mapping[str, Any], error: type[GamedayError], *, dry_run: bool = False, attempts: int = 3
    ) -> dict[str, Any]:
        """Create ``body`` (``dryRun=All``: validated by the server, stored nowhere, retried like a read).

        A 5xx may come after the object was stored: the object is looked up, accepted when it carries this
        body's run id label, created again when absent; a 409 on such a retry is the first attempt's
        object (accepted on the same test). A 409 on the first attempt is someone else's: raised."""
        what = f"create {self.kind.plural} (dryRun=All)" if dry_run else f"create {self.describe()}"
        options: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        mine = ((body.get("metadata") or {}).get("labels") or {}).get(chaos.RUN_ID_LABEL)
        answer: Any = None
        for attempt in range(1, attempts + 1):
            try:
                answer = self._objects(
                    error, what, "create_namespaced_custom_object", dict(body), idempotent=dry_run, **options
                )
                break
            except GamedayError as exc:
                status = status_of(exc)
                after_error = status == 409 and attempt > 1
                if dry_run or not (status in (500, 502, 503, 504) or after_error):
                    raise
                stored = self.get(error)
                labels = ((stored or {}).get("metadata") or {}).get("labels") or {}
                if stored is not None and mine and labels.get(chaos.RUN_ID_LABEL) == mine:
                    answer = stored
                    break
                if stored is not None or attempt == attempts:
                    raise
                time.sleep(0.2 * attempt)
        if not dry_run:
            self.created = True
        return dict(answer or {})

    def get(self, error: type[GamedayError], *, retry_until: float | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist (404)."""
        try:
            obj = self._objects(
                error,
                f"get {self.describe()}",
                "get_namespaced_custom_object",
                self.name,
                retry_until=retry_until,
            )
        except GamedayError as exc:
            if status_of(exc) == 404:
                self.last = None
                return None
            raise
        self.last = dict(obj)
        return self.last

    def list_objects(self, error: type[GamedayError], label_selector: str = "") -> list[dict[str, Any]]:
        options: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        answer = self._objects(
            error, f"list {self.kind.plural} in {self.namespace}", "list_namespaced_custom_object", **options
        )
        return list((answer or {}).get("items") or [])

    def kube_events(self, error: type[GamedayError] = TargetError) -> list[KubeEvent]:
        """The Kubernetes Events about this object, oldest first (``list events`` in the namespace)."""
        selector = f"involvedObject.name={self.name},involvedObject.kind={self.kind.kind}"
        timeout = self.api.request_timeout

        def call(api_client: Any) -> Any:
            return client.CoreV1Api(api_client).list_namespaced_event(
                self.namespace, field_selector=selector, _request_timeout=timeout
            )

        answer = self.api.call(error, f"list events of {self.describe()}", call)
        out = []
        for ev in answer.items or []:
            at = ev.last_timestamp or ev.event_time or ev.first_timestamp
            if at is not None and at.tzinfo is None:
                at = at.replace(tzinfo=utcnow().tzinfo)
            out.append(KubeEvent(ev.reason or "", ev.message or "", ev.type or "Normal", at, ev.count or 1))
        return sorted(out, key=lambda e: e.at.timestamp() if e.at else 0.0)

    def _kube_events_or_note(self) -> tuple[list[KubeEvent], str]:
        try:
            return self.kube_events(TargetError), ""
        except TargetError as exc:
            return [], f"(Kubernetes Events not readable: {exc})"

    # -- injection
    def wait_injected(
        self, timeout: float, *, injected: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> datetime:
        """Poll until the fault is in force; return that moment (T+0). Transient API errors are polled
        through. ``InjectionFailed`` when it ends (``desiredPhase=Stop``), disappears, or is not in force
        within ``timeout``, with what the records and the Kubernetes Events say."""
        test = injected or is_injected
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            # transient answers are retried inside get() until the deadline; anything else is final
            last = self.get(InjectionFailed, retry_until=deadline)
            if last is None:
                raise InjectionFailed(f"{self.describe()} disappeared before it was injected")
            if test(last):
                return utcnow()
            if desired_phase(last) == "Stop":
                raise InjectionFailed(
                    f"{self.describe()} stopped before it was injected: {self.diagnose(last)}"
                )
            if time.monotonic() >= deadline:
                raise InjectionFailed(
                    f"{self.describe()} not injected within {timeout:g}s: {self.diagnose(last)}"
                )
            time.sleep(self.poll_interval)

    def diagnose(self, obj: Mapping[str, Any] | None) -> str:
        """What the object and its Events say about why it is not (or no longer) in force."""
        if obj is None:
            return "the object could not be read"
        parts = [
            f"desiredPhase {desired_phase(obj) or 'unset'}",
            "conditions " + json.dumps(_conditions(obj), sort_keys=True),
        ]
        recs = records(obj)
        if recs:
            parts.append(
                "records: " + "; ".join(chaos_events(obj)[-4:] or [f"{r.id} ({r.phase})" for r in recs])
            )
        else:
            parts.append("no record: Chaos Mesh selected no pod")
        events, note = self._kube_events_or_note()
        warnings = [e for e in events if e.type == "Warning" or e.reason == "Failed"]
        if warnings:
            parts.append("Kubernetes Events: " + "; ".join(e.describe() for e in warnings[-3:]))
        elif note:
            parts.append(note)
        return "; ".join(parts)

    # -- status
    def fault_status(self, *, obj: Mapping[str, Any] | None = None, read: bool = True) -> FaultStatus:
        """Whether the fault is in force and, when it ended without this process deleting it, why
        ("duration expired", "paused", "deleted outside the runbook") and when (the records' last
        ``Recover`` event). Raises ``TargetError`` when the object cannot be read."""
        if obj is None and read:
            obj = self.get(TargetError, retry_until=time.monotonic() + self.api.request_timeout)
        if obj is None:
            if self.deleted_by_us:
                return FaultStatus(
                    active=False, detail=f"{self.describe()} healed and deleted by the runbook"
                )
            if not self.created:
                return FaultStatus(active=False, detail=f"{self.describe()} does not exist")
            previous = self.last
            return FaultStatus(
                active=False,
                ended_early="deleted outside the runbook",
                ended_at=recovered_at(previous) if previous else None,
                detail=f"{self.describe()} is gone: someone deleted it",
            )
        if self.kind.one_shot(obj):
            done = condition(obj, "AllInjected")
            return FaultStatus(
                active=done, detail=f"{self.describe()}: one-shot, {'done' if done else 'pending'}"
            )
        if is_injected(obj) and not is_deleting(obj):
            return FaultStatus(active=True, detail=f"{self.describe()} in force on {len(records(obj))} pods")
        if self.deleted_by_us:
            return FaultStatus(
                active=False,
                ended_at=recovered_at(obj),
                detail=f"{self.describe()} being healed by the runbook ({self.diagnose_short(obj)})",
            )
        if desired_phase(obj) == "Stop":
            events, note = self._kube_events_or_note()
            reason = end_reason(obj, events)
            at = recovered_at(obj)
            detail = f"{self.describe()} ended: {reason}" + (
                f", recovered at {at.isoformat(timespec='seconds')}" if at else ", recovering"
            )
            return FaultStatus(
                active=False, ended_early=reason, ended_at=at, detail=detail + (f" {note}" if note else "")
            )
        return FaultStatus(
            active=False, detail=f"{self.describe()} not in force ({self.diagnose_short(obj)})"
        )

    def diagnose_short(self, obj: Mapping[str, Any]) -> str:
        recs = records(obj)
        pending = [f"{r.id} {r.phase}" for r in recs if not r.injected]
        return f"desiredPhase {desired_phase(obj)}, " + (
            f"not injected: {', '.join(pending)}" if pending else f"{len(recs)} records"
        )

    # -- deletion
    def delete_and_wait(
        self,
        timeout: float,
        *,
        node_of: Callable[[str, str], str | None] | None = None,
    ) -> tuple[bool, datetime | None]:
        """DELETE first (404 = already gone), retried through transient errors until the deadline; then
        wait until every record is recovered and the finalizer lets the object go.

        Returns ``(was_in_force, recovered_moment)``: ``was_in_force`` is False when the object was
        already gone or over (nothing to heal). ``HealFailed`` names the delete command, and for records
        that chaos-daemon could not recover, the pod's node (``node_of(namespace, pod)``) and the
        chaos-daemon to look at."""
        deadline = time.monotonic() + timeout
        try:
            answer = self._objects(
                HealFailed,
                f"delete {self.describe()}",
                "delete_namespaced_custom_object",
                self.name,
                retry_until=deadline,
            )
        except HealFailed as exc:
            if status_of(exc) == 404:
                self.deleted_by_us = True
                self.last = None
                return False, None
            raise HealFailed(f"{exc}; remove it by hand: {self.delete_command()}") from exc
        self.deleted_by_us = True
        obj: dict[str, Any] | None = (
            answer if isinstance(answer, dict) and answer.get("kind") != "Status" else None
        )
        if obj is None:
            obj = self.last
        was_in_force = obj is None or not is_recovered(obj) or self.kind.one_shot(obj)
        recovered_moment: datetime | None = None
        while True:
            try:
                obj = self.get(HealFailed, retry_until=deadline)
            except HealFailed as exc:
                raise HealFailed(
                    f"{exc}; check by hand: kubectl get {self.kind.plural} {self.name} "
                    f"-n {self.namespace}, then {self.delete_command()}"
                ) from exc
            if obj is None:
                return was_in_force, recovered_moment or utcnow()
            if recovered_moment is None and (self.kind.one_shot(obj) or condition(obj, "AllRecovered")):
                recovered_moment = utcnow()
            if time.monotonic() >= deadline:
                if recovered_moment is not None:
                    # the network is healed; only the finalizer is slow: not a heal failure
                    return was_in_force, recovered_moment
                raise HealFailed(self._stuck_message(obj, timeout, node_of))
            time.sleep(self.poll_interval)

    def _stuck_message(
        self, obj: Mapping[str, Any], timeout: float, node_of: Callable[[str, str], str | None] | None
    ) -> str:
        stuck = [r for r in records(obj) if r.phase != "Not Injected"]
        finalizers = (obj.get("metadata") or {}).get("finalizers") or []
        lines = [
            f"{self.describe()} still not recovered {timeout:g}s after delete"
            + (f" (finalizer {', '.join(finalizers)} held)" if finalizers else "")
        ]
        for record in stuck:
            node = node_of(record.namespace, record.pod) if node_of else None
            last = record.last_event()
            said = (
                f"; last: {last.operation} {last.type}{': ' + last.message if last and last.message else ''}"
                if last
                else ""
            )
            where = (
                f"on node {node}: check chaos-daemon there: kubectl -n chaos-mesh get pods -l "
                f"{CHAOS_DAEMON_SELECTOR} --field-selector spec.nodeName={node}, and its logs"
                if node
                else "on an unknown node (the pod is gone): check the chaos-daemon pods in the chaos-mesh "
                "namespace"
            )
            lines.append(f"record {record.id} is {record.phase}{said}; it is {where}")
        if not stuck:
            lines.append(
                f"records: {'; '.join(chaos_events(obj)[-3:]) or 'none'}; check chaos-controller-manager"
            )
        lines.append(
            f"the fault may still be in force: restore chaos-daemon, then {self.delete_command()}; only once "
            f"the network is back, force the finalizer off with kubectl annotate {self.kind.plural} "
            f"{self.name} "
            f"-n {self.namespace} {CLEAN_FINALIZER_ANNOTATION}=forced"
        )
        return "; ".join(lines)
