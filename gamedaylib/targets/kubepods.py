"""Pods as the Kubernetes target judges them: by labels, then by state.

A pod counts ("judged") only when it is Running, not being deleted, and not a Job's: an Evicted or
Completed pod left behind by a Deployment, a CronJob's pod that shares the service's labels, a pod
terminating during a rollout are named and left out, never failing pre-flight nor partitioned.
``Coverage`` compares the pods a Chaos Mesh fault recorded with the pods running now: Chaos Mesh
selects once, so a pod started after the injection is outside the fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gamedaylib.exceptions import ProbeError
from gamedaylib.targets.base import Check

__all__ = ["Coverage", "PodView", "container_for", "name_matches", "pod_view", "pods_check"]

_JOB_LABELS = ("job-name", "batch.kubernetes.io/job-name", "controller-uid")


@dataclass(frozen=True)
class PodView:
    """What pre-flight, the fault and the logs need to know of one pod."""

    name: str
    phase: str
    ready: bool
    deleting: bool
    node: str | None
    labels: Mapping[str, str]
    containers: tuple[str, ...]
    restarts: Mapping[str, int]
    owners: tuple[str, ...]  # ownerReferences kinds
    reason: str = ""  # status.reason (Evicted, ...)

    @property
    def job(self) -> bool:
        return "Job" in self.owners or any(k in self.labels for k in _JOB_LABELS[:2])

    @property
    def judged(self) -> bool:
        """Counted: Running, not being deleted, not a Job's pod."""
        return self.phase == "Running" and not self.deleting and not self.job

    @property
    def ignored(self) -> bool:
        """Left out on purpose: finished (Completed, Evicted, Failed), being deleted, or a Job's pod."""
        return self.deleting or self.job or self.phase in ("Succeeded", "Failed")

    def state(self) -> str:
        if self.deleting:
            return "terminating"
        if self.phase == "Failed" and self.reason:
            return self.reason
        if self.phase == "Succeeded":
            return "Completed"
        if self.phase == "Running" and not self.ready:
            return "Running, not ready"
        return self.phase


def pod_view(pod: Any) -> PodView:
    """A ``V1Pod`` seen the way the target judges pods."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    conditions = (status.conditions if status else None) or []
    statuses = (status.container_statuses if status else None) or []
    return PodView(
        name=meta.name,
        phase=(status.phase if status else None) or "Unknown",
        ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
        deleting=meta.deletion_timestamp is not None,
        node=spec.node_name if spec else None,
        labels=dict(meta.labels or {}),
        containers=tuple(c.name for c in (spec.containers if spec else None) or []),
        restarts={s.name: int(s.restart_count or 0) for s in statuses},
        owners=tuple(o.kind for o in meta.owner_references or []),
        reason=(status.reason if status else None) or "",
    )


# Kubernetes' random names (pod-template-hash, generateName suffixes) use this alphabet, no vowels
_K8S_RAND = "[bcdfghjklmnpqrstvwxz2456789]"


def name_matches(name: str, prefix: str) -> bool:
    """A Deployment's pod (``<prefix>-<pod-template-hash>-<5 random>``) or a StatefulSet's
    (``<prefix>-<ordinal>``); not ``<prefix>-db-0`` nor ``<prefix>-migrate-28474830-xk2p9``."""
    if not name.startswith(prefix + "-"):
        return False
    rest = name[len(prefix) + 1 :]
    return bool(re.fullmatch(r"\d+", rest) or re.fullmatch(f"{_K8S_RAND}{{1,10}}-{_K8S_RAND}{{5}}", rest))


@dataclass(frozen=True)
class Coverage:
    """Pods the fault covers compared with the pods running now."""

    uncovered: tuple[str, ...] = ()  # running pods that are not in the records (created after injection)
    gone: tuple[str, ...] = ()  # records whose pod no longer runs

    def describe(self) -> str:
        parts = []
        if self.uncovered:
            parts.append(f"not under the fault (created after injection): {', '.join(self.uncovered)}")
        if self.gone:
            parts.append(f"partitioned pods no longer running: {', '.join(self.gone)}")
        return "; ".join(parts)


def container_for(pod: PodView, wanted: str, service: str) -> str:
    if wanted in pod.containers:
        return wanted
    if len(pod.containers) == 1:
        return pod.containers[0]
    raise ProbeError(
        "logs",
        f"pod {pod.name} has no container {wanted!r} (containers: {list(pod.containers)}); "
        f"set service_containers: {{{service}: <container>}}",
    )


def pods_check(what: str, pods: Sequence[PodView]) -> Check:
    judged = [p for p in pods if p.judged]
    ignored = [f"{p.name} ({p.state()})" for p in pods if p.ignored]
    waiting = [f"{p.name} ({p.state()})" for p in pods if not p.judged and not p.ignored]
    note = f"; ignored: {', '.join(sorted(ignored))}" if ignored else ""
    if not judged:
        return Check(
            f"{what} running and ready",
            False,
            f"no Running pod{note}" + (f"; not running: {', '.join(sorted(waiting))}" if waiting else ""),
        )
    bad = [f"{p.name} ({p.state()})" for p in judged if not p.ready] + waiting
    names = ", ".join(sorted(p.name for p in judged))
    return Check(
        f"{what} running and ready",
        not bad,
        (f"not ready: {', '.join(sorted(bad))}" if bad else names) + note,
    )
