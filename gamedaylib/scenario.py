"""A gameday as the framework runs it: its playbook, parameters, phases, fault, readings and lab shape.

Each package under ``gamedaylib/gamedays/`` defines one ``Scenario`` (its ``SCENARIO``) from the
files beside it: ``playbook.md`` (the written playbook), the notebook (one cell per phase, calling
the ``Gameday`` facade), ``playbook.py`` (the playbook as data), ``params.py`` (its parameters),
``phases.py`` (one function per phase), its fault manifests and alert rules (``monitoring/``).
The core (run lifecycle, journal, readings, stop conditions, forms, scorecard, archive) is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gamedaylib.lab.knobs import LabKnobs
from gamedaylib.parameters import RunParams
from gamedaylib.phase import PhaseFn
from gamedaylib.playbook import Playbook

if TYPE_CHECKING:
    from gamedaylib.readings import Reader, Reading
    from gamedaylib.run import Run
    from gamedaylib.targets.base import Fault, Target

__all__ = ["Scenario", "Tile"]


@dataclass(frozen=True)
class Tile:
    """One number on the status banner: label, value in words, and its state (colour and word)."""

    label: str
    value: str
    state: str = "info"  # ok | alarm | warn | info | unknown


@dataclass(frozen=True)
class Scenario:
    playbook: Playbook
    params: type[RunParams]
    phases: Mapping[str, PhaseFn]  # phase id -> its function, in playbook order
    package_dir: Path
    notebook_name: str
    make_state: Callable[[], Any]  # the run's own facts between phases (T+0 is the clock's)
    make_reader: Callable[[Run], Reader]
    make_fault: Callable[[Target, Any], Fault]
    tiles: Callable[[Run, Reading | None], list[Tile]]
    fault_word: str  # what the banner calls the fault: "partition", "primary kill"
    alerts: tuple[str, ...] = ()  # the alert rules this gameday expects to fire (its monitoring/)
    knobs: type[LabKnobs] = LabKnobs  # the lab's shape for this gameday

    @property
    def id(self) -> str:
        return self.playbook.id

    @property
    def title(self) -> str:
        return self.playbook.title

    @property
    def notebook(self) -> Path:
        return self.package_dir / self.notebook_name

    @property
    def playbook_md(self) -> Path:
        return self.package_dir / "playbook.md"

    def describe(self) -> dict[str, str]:
        """What ``gameday list --json`` shows."""
        return {"id": self.id, "title": self.title, "notebook": str(self.notebook),
                "playbook": str(self.playbook_md)}
