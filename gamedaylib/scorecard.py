"""The scorecard: each success metric measured, judged against its target, and the run's verdict.

Statuses are ``pass``, ``fail`` or ``not_measured`` (a probe failed; ``evidence`` says why, never
``pass``). The verdict, as a scheduler acts on it:

- ``aborted`` (exit 2): the run could not judge the system: it did not reach its end (invalid
  parameters, failed pre-flight, interrupted, tool error) or it lost sight of what it measures;
- ``fail`` (exit 1): the system missed a target: a metric failed, a required metric could not be
  measured, or a stop condition fired because of what the system did (``stopped_by``);
- ``pass`` (exit 0) otherwise.

``scorecard.json`` follows DESIGN.md's schema, with ``required``, ``unit``, ``label``, ``reason``,
``targets``, ``stopped_by`` and ``profile`` added.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES: tuple[str, ...] = ("pass", "fail", "not_measured")
VERDICTS: tuple[str, ...] = ("pass", "fail", "aborted")


def _compare(value: float, comparison: str, target: float) -> bool:
    if comparison == "<=":
        return value <= target
    if comparison == "<":
        return value < target
    if comparison == ">=":
        return value >= target
    if comparison == ">":
        return value > target
    if comparison == "==":
        return value == target
    raise ValueError(f"unknown comparison {comparison!r}")


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | None
    target: float
    comparison: str
    status: str
    evidence: str
    unit: str = ""
    required: bool = False
    label: str = ""

    @classmethod
    def judged(
        cls, name: str, value: float, target: float, evidence: str, *, comparison: str = "<=", unit: str = ""
    ) -> Metric:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return cls.not_measured(name, target, evidence or "no value", comparison=comparison, unit=unit)
        status = "pass" if _compare(float(value), comparison, float(target)) else "fail"
        return cls(name, value, target, comparison, status, evidence, unit)

    @classmethod
    def not_measured(
        cls, name: str, target: float, reason: str, *, comparison: str = "<=", unit: str = ""
    ) -> Metric:
        return cls(name, None, target, comparison, "not_measured", f"not measured: {reason}", unit)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label or self.name
        if self.status == "not_measured":
            d["reason"] = self.evidence.removeprefix("not measured: ")
        return d


def verdict(metrics: Iterable[Metric], *, completed: bool, required: Iterable[str] = (),
            stopped_by: Mapping[str, Any] | None = None) -> str:
    """``aborted`` unless completed (or stopped blind); ``fail`` on a stop condition the system fired,
    a failed metric or an unmeasured required one; else ``pass``."""
    if not completed or (stopped_by is not None and stopped_by.get("blind")):
        return "aborted"
    if stopped_by is not None:
        return "fail"
    required_set = set(required)
    for m in metrics:
        if m.status == "fail" or (m.status == "not_measured" and m.name in required_set):
            return "fail"
    return "pass"


@dataclass
class Scorecard:
    gameday_id: str
    run_id: str
    target: str
    profile: str
    started_at: str
    finished_at: str | None = None
    completed: bool = False
    metrics: list[Metric] = field(default_factory=list)
    required_metrics: list[str] = field(default_factory=list)
    metric_names: tuple[str, ...] = ()  # the playbook's order
    labels: dict[str, str] = field(default_factory=dict)  # the playbook's labels
    events: dict[str, Any] = field(
        default_factory=lambda: {
            "canaries_sent": 0,
            "canaries_stored": 0,
            "canaries_lost": 0,
            "canaries_duplicated": 0,
        }
    )
    targets: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # why the run was aborted or stopped, or that it was a dry run
    stopped_by: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def set_metric(self, metric: Metric) -> Metric:
        """Add or replace a metric (the last measurement wins); marks required ones, labels it."""
        changes: dict[str, Any] = {}
        if metric.name in self.required_metrics and not metric.required:
            changes["required"] = True
        if not metric.label and metric.name in self.labels:
            changes["label"] = self.labels[metric.name]
        if changes:
            metric = Metric(**{**asdict(metric), **changes})
        order = list(self.metric_names)
        self.metrics = [m for m in self.metrics if m.name != metric.name] + [metric]
        self.metrics.sort(key=lambda m: order.index(m.name) if m.name in order else len(order))
        return metric

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def fill_missing(self, reason: str = "the run did not reach this measurement") -> None:
        """Every metric of the playbook appears; those never measured say why."""
        for name in self.metric_names:
            if self.metric(name) is None:
                target = self.targets.get(name, 0)
                self.set_metric(Metric.not_measured(name, target, reason))

    @property
    def verdict(self) -> str:
        return verdict(self.metrics, completed=self.completed, required=self.required_metrics,
                       stopped_by=self.stopped_by)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "gameday_id": self.gameday_id,
            "run_id": self.run_id,
            "target": self.target,
            "profile": self.profile,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "verdict": self.verdict,
            "metrics": [m.as_dict() for m in self.metrics],
            "events": dict(self.events),
            "required_metrics": list(self.required_metrics),
            "targets": dict(self.targets),
            "stopped_by": self.stopped_by,
        }
        if self.reason:
            d["reason"] = self.reason
        d.update(self.extra)
        return d

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write ``scorecard.json`` atomically."""
        p = Path(path)
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return p


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "gameday_id", "run_id", "target", "profile", "started_at", "finished_at", "verdict", "metrics", "events",
    ],
    "properties": {
        "gameday_id": {"type": "string"},
        "run_id": {"type": "string"},
        "target": {"enum": ["lab", "kubernetes"]},
        "profile": {"enum": ["rehearsal", "full"]},
        "started_at": {"type": "string", "format": "date-time"},
        "finished_at": {"type": "string", "format": "date-time"},
        "verdict": {"enum": list(VERDICTS)},
        "metrics": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "value", "target", "comparison", "status", "evidence"],
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": ["number", "null"]},
                    "target": {"type": "number"},
                    "comparison": {"enum": ["<=", "<", ">=", ">", "=="]},
                    "status": {"enum": list(STATUSES)},
                    "evidence": {"type": "string", "minLength": 1},
                },
            },
        },
        "events": {
            "type": "object",
            "required": ["canaries_sent", "canaries_stored", "canaries_lost", "canaries_duplicated"],
            "properties": {
                k: {"type": "integer", "minimum": 0}
                for k in ("canaries_sent", "canaries_stored", "canaries_lost", "canaries_duplicated")
            },
        },
    },
}


def table_markdown(metrics: Iterable[Metric]) -> str:
    """The playbook's success-metrics table, filled."""
    rows = ["| Metric | Target | Result | Status | Evidence |", "|---|---|---|---|---|"]
    for m in metrics:
        result = "—" if m.value is None else f"{_fmt(m.value)} {m.unit}".strip()
        status = {"pass": "✔ Pass", "fail": "✘ Fail", "not_measured": "– Not measured"}[m.status]
        evidence = m.evidence.replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {m.label or m.name} | {m.comparison} {_fmt(m.target)} {m.unit} | {result} | {status} | "
                    f"{evidence} |")
    return "\n".join(rows)


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.1f}"
