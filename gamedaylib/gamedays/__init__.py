"""The gamedays this installation has: one package per playbook, each holding its playbook, notebook,
fault manifests, alert rules and lab shape as package data."""

from __future__ import annotations

from pathlib import Path

GAMEDAYS_DIR = Path(__file__).resolve().parent
MONITORING = "monitoring"  # each gameday's alert rules (*.rules.yml), lab-overrides.yml and tests/


def monitoring_dirs() -> list[Path]:
    """Every gameday's ``monitoring/`` folder (alert rules the lab's Prometheus loads)."""
    return sorted(p for p in GAMEDAYS_DIR.glob(f"*/{MONITORING}") if p.is_dir())
