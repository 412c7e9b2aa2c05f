"""Fixtures of the safety suite (the helpers live in ``safetytools.py``)."""

from __future__ import annotations

from typing import Any

from safetytools import FIGURES, lab, start_run

__all__ = ["lab", "start_run"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("time to heal (fault -> partition_active false)")
        for fault, seconds in FIGURES.items():
            terminalreporter.write_line(f"{fault:<40} {seconds:7.2f} s")
