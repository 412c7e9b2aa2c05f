"""The gamedays this installation has: one package per playbook, each holding its playbook, notebook,
parameters, phases, fault manifests, alert rules and lab shape (``Scenario``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from gamedaylib.exceptions import InvalidParameters

if TYPE_CHECKING:
    from gamedaylib.scenario import Scenario

__all__ = ["DEFAULT_GAMEDAY", "gameday_ids", "monitoring_dirs", "scenario", "scenarios"]

GAMEDAYS_DIR = Path(__file__).resolve().parent
MONITORING = "monitoring"  # each gameday's alert rules (*.rules.yml), lab-overrides.yml and tests/
DEFAULT_GAMEDAY = "GAMEDAY-001"

# id -> the package defining its SCENARIO (imported on demand)
_PACKAGES: dict[str, str] = {
    "GAMEDAY-001": "gamedaylib.gamedays.nats_partition",
    "GAMEDAY-002": "gamedaylib.gamedays.postgres_failover",
}


def gameday_ids() -> tuple[str, ...]:
    return tuple(_PACKAGES)


def scenario(gameday_id: str) -> Scenario:
    """The gameday named ``gameday_id``; ``InvalidParameters`` naming the known ones otherwise."""
    package = _PACKAGES.get(gameday_id)
    if package is None:
        raise InvalidParameters({"gameday_id": f"unknown gameday {gameday_id!r}; this installation has "
                                               f"{', '.join(_PACKAGES)} (gameday list)"})
    found: Scenario = importlib.import_module(package).SCENARIO
    return found


def scenarios() -> list[Scenario]:
    return [scenario(i) for i in _PACKAGES]


def monitoring_dirs() -> list[Path]:
    """Every gameday's ``monitoring/`` folder (alert rules the lab's Prometheus loads)."""
    return sorted(p for p in GAMEDAYS_DIR.glob(f"*/{MONITORING}") if p.is_dir())
