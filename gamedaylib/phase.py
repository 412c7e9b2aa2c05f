"""A phase's outcome: what it checked, measured and was told, as the notebook and report show it.

A gameday's phases are functions ``run(ctx: Run) -> PhaseResult`` (``gamedays/<name>/phases.py``);
the run journals each check and measurement as it is made and the display shows the result when the
phase ends. ``Shown`` marks values the display already showed, so a notebook cell that returns one
does not show it a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gamedaylib.shell import CommandResult
from gamedaylib.targets.base import Check

if TYPE_CHECKING:
    from gamedaylib.run import Run

__all__ = ["PhaseFn", "PhaseResult", "Shown", "ShownDict", "ShownText", "fmt"]


class Shown:
    """A value already shown by the run's display: the notebook does not show it twice."""

    def _ipython_display_(self) -> None:
        return None


class ShownText(Shown, str):
    """Markdown already shown."""


class ShownDict(Shown, dict):  # type: ignore[type-arg]
    """A mapping already shown."""


def fmt(v: Any) -> str:
    """A value as a table cell shows it (no microseconds, no float noise)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.2f}"
    if isinstance(v, datetime):
        return v.isoformat(timespec="seconds")
    return str(v)


@dataclass
class PhaseResult(Shown):
    """What a phase measured and showed: checks, numbers, observations, shell steps."""

    phase: str
    checks: list[Check] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    observations: dict[str, str] = field(default_factory=dict)
    commands: list[CommandResult] = field(default_factory=list)
    ok: bool = True

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_markdown(self) -> str:
        lines = []
        if self.checks:
            lines += ["| Check | Result | Detail |", "|---|---|---|"]
            for c in self.checks:
                mark = "✔ ok" if c.ok else ("✘ FAILED" if c.fatal else "⚠ no")
                detail = str(c.detail).replace("|", "/").replace("\n", " ")
                lines.append(f"| {c.name} | {mark} | {detail} |")
            lines.append("")
        if self.values:
            lines += ["| Measurement | Value |", "|---|---|"]
            for k, v in self.values.items():
                lines.append(f"| {k} | {fmt(v).replace('|', '/')} |")
            lines.append("")
        if self.observations:
            lines += ["**Observations**", ""]
            for q, a in self.observations.items():
                lines.append(f"- *{q}* — {a or '_(no answer recorded)_'}")
            lines.append("")
        for cmd in self.commands:
            lines += [cmd.as_markdown(), ""]
        return "\n".join(lines)


PhaseFn = Callable[["Run", PhaseResult], None]
