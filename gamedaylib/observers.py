"""Observers of a run: what shows it (the notebook display) and what announces it (webhooks).

A run calls its observers at each moment below; an observer never changes the run, and a failing
observer is journaled and skipped, never failing the gameday (like chaostoolkit's run event
handlers). ``RunObserver`` is the no-op base: override what you need.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gamedaylib.phase import PhaseResult
    from gamedaylib.readings import Reading
    from gamedaylib.run import Run
    from gamedaylib.stopconditions import StopReason

__all__ = ["Observers", "RunObserver", "WaitProgress"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WaitProgress:
    """A wait in progress: what for, how long so far, how long at most, and how it ended."""

    what: str  # "partition running", "waiting for recovery"
    elapsed: float
    timeout: float
    outcome: str = ""  # "" while waiting; then "done", "deadline" or "stopped"
    detail: str = ""  # e.g. "partition ends at T+00:20"


class RunObserver:
    """Hooks a run calls; every one is optional."""

    def run_started(self, run: Run) -> None: ...

    def phase_started(self, run: Run, phase_id: str) -> None: ...

    def phase_finished(self, run: Run, result: PhaseResult, error: BaseException | None) -> None: ...

    def waiting(self, run: Run, progress: WaitProgress, reading: Reading | None) -> None: ...

    def fault_injected(self, run: Run, t0: datetime) -> None: ...

    def fault_healed(self, run: Run, at: datetime, by: str) -> None: ...

    def stopped(self, run: Run, reason: StopReason) -> None: ...

    def show(self, run: Run, content: Any) -> None:
        """Something a phase shows beside its result (a chart, a form, a note)."""

    def run_finished(self, run: Run, scorecard: dict[str, Any]) -> None: ...


class Observers:
    """Calls every observer, journaling (never raising) what one of them fails with."""

    def __init__(self, observers: Sequence[RunObserver], journal: Any) -> None:
        self.observers = list(observers)
        self.journal = journal

    def __getattr__(self, hook: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            for observer in self.observers:
                method = getattr(observer, hook)
                try:
                    method(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - an observer may fail; the run goes on, journaled
                    log.warning("observer %s.%s failed: %s", type(observer).__name__, hook, exc)
                    self.journal.record("error", error=f"observer {type(observer).__name__}.{hook}",
                                        message=f"{type(exc).__name__}: {exc}")

        if not hasattr(RunObserver, hook):
            raise AttributeError(hook)
        return call
