"""A written playbook as data: phases (ids, titles, T-offsets, the questions verbatim), the success
metrics with their labels, the pre-gameday checklist and the critical event types.

Each gameday package holds one ``Playbook`` (``gamedays/<name>/playbook.py``, built from its
``playbook.md``); everything that names a phase, a question or a metric takes it from there, so the
notebook, the forms, the journal, the scorecard and the incident report agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["INCIDENT_STAMPS", "MetricSpec", "Phase", "Playbook"]

# the moments the incident-response phase stamps (buttons live, parameters headless)
INCIDENT_STAMPS: tuple[str, ...] = ("alert_seen", "paged", "acknowledged", "status_page_updated")


@dataclass(frozen=True)
class Phase:
    id: str
    title: str
    offset_minutes: int  # the playbook's nominal T-offset
    questions: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class MetricSpec:
    """One success metric: its name in scorecard.json, its label in the playbook's table, how it is
    compared with its target, and its unit."""

    name: str
    label: str
    comparison: str = "<="
    unit: str = ""


@dataclass(frozen=True)
class Playbook:
    id: str
    title: str
    phases: tuple[Phase, ...]
    metrics: tuple[MetricSpec, ...]  # the playbook's table first, then the ones the design adds
    checklist: tuple[str, ...] = ()
    critical_event_types: tuple[str, ...] = ()

    @property
    def phase_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.phases)

    def phase(self, phase_id: str) -> Phase:
        return next(p for p in self.phases if p.id == phase_id)

    def title_of(self, phase_id: str) -> str:
        """The phase's title (a free text such as ``Start`` or ``Finish`` comes back as it is)."""
        return next((p.title for p in self.phases if p.id == phase_id), phase_id)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def metric(self, name: str) -> MetricSpec:
        return next(m for m in self.metrics if m.name == name)

    def label(self, metric_name: str) -> str:
        return next((m.label for m in self.metrics if m.name == metric_name), metric_name)

    def questions(self) -> list[tuple[str, str]]:
        """Every (phase id, question) in playbook order."""
        return [(p.id, q) for p in self.phases for q in p.questions]
