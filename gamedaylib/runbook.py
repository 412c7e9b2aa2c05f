"""``Gameday``: the one object a gameday notebook calls, the same for every gameday.

    gd = Gameday.start(from_namespace(globals()))   # the parameters cell's names
    gd.phase("preflight")                            # one cell per playbook phase
    ...
    gd.success_metrics()
    gd.finish()                                      # scorecard, incident report; heals
    gd.archive()                                     # report.html (headless), or how to complete it (live)

The gameday is the one ``gameday_id`` names; its phases, fault and readings are its package's
(``gamedaylib/gamedays/``). Live (JupyterLab) or headless (Papermill) is told by the kernel itself:
a frontend that can answer input is a person at a screen (override with the ``live`` parameter).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from gamedaylib import gamedays
from gamedaylib.archive import HTML_FILE, RUNBOOK_FILE
from gamedaylib.banner import Banner
from gamedaylib.display import NotebookDisplay, kernel_is_live
from gamedaylib.findings import verdict_reason
from gamedaylib.phase import PhaseResult, ShownDict, ShownText
from gamedaylib.report import render_html
from gamedaylib.run import Run
from gamedaylib.scorecard import table_markdown, verdict
from gamedaylib.targets.base import Target

__all__ = ["Gameday"]


class Gameday:
    """One run of a gameday, as its notebook drives it."""

    def __init__(self, run: Run, display: NotebookDisplay) -> None:
        self.run = run
        self.display = display

    @classmethod
    def start(cls, params: Mapping[str, Any], *, target: Target | None = None) -> Gameday:
        """Validate the parameters (nothing is written when they are wrong or the run is refused), open
        the archive, connect to the target, start the canaries and the sampler."""
        scenario = gamedays.scenario(str(params.get("gameday_id") or gamedays.DEFAULT_GAMEDAY))
        display = NotebookDisplay(live=False)
        run = Run.start(scenario, params, target=target, observers=[display], live=kernel_is_live())
        display.live = run.live
        return cls(run, display)

    # -- what the notebook calls --------------------------------------------------------------------
    def phase(self, phase_id: str) -> PhaseResult:
        """Run one playbook phase (shown as it goes); returns what it measured."""
        return self.run.phase(phase_id)

    def success_metrics(self) -> ShownText:
        """The playbook's success-metrics table, filled and judged, and the timeline chart."""
        run = self.run
        if run.journal_has_stamps():
            run.measure_team_response()  # a stamp pressed live after the incident-response cell counts
        run.scorecard.fill_missing()
        so_far = run.scorecard.verdict if run.finished else verdict(
            run.scorecard.metrics, completed=True, required=run.scorecard.required_metrics,
            stopped_by=run.stopped_by.as_dict() if run.stopped_by else None)
        card = {**run.scorecard.as_dict(), "verdict": so_far}
        text = (f"**Verdict so far:** `{so_far}`: {verdict_reason(card)}\n\nprofile `{run.params.profile}` · "
                f"required: {', '.join(run.params.required)}"
                + "\n\n" + table_markdown(run.scorecard.metrics))
        run.show(text)
        self.chart()
        return ShownText(text)

    def chart(self) -> Path | None:
        """The timeline (phases shaded, the fault marked) as a PNG in the archive, shown inline."""
        run = self.run
        if run.sampler is None:
            return None
        frame = run.sampler.frame()
        canaries = run.final_canary_report
        return run.figure("timeline.png", lambda c: c.timeline(frame, run.journal.entries(), t0=run.clock.t0,
                                                                title=f"{run.params.gameday_id} timeline",
                                                                canaries=canaries))

    def finish(self) -> ShownDict:
        """Stop canaries and sampler, write the scorecard and incident report; heal in ``finally``."""
        return ShownDict(self.run.finish())

    def archive(self) -> Path | None:
        """Headless: ``report.html`` from the notebook Papermill has saved so far (every cell up to
        ``finish``) when it writes into the archive. Live: how to complete the archive after saving."""
        run = self.run
        runbook = run.archive_dir / RUNBOOK_FILE
        if run.live:
            run.show(f"Save the notebook now, then add it and `report.html` to the archive:\n\n"
                     f"    gameday archive {run.archive_dir}\n\n(add `--notebook PATH` if it is saved anywhere "
                     f"but `{runbook}`)")
            return None
        if not runbook.is_file():
            run.show(f"The executed notebook is not in the archive: complete it with `gameday archive "
                     f"{run.archive_dir} --notebook <Papermill's output notebook>`.")
            return None
        return render_html(runbook, run.archive_dir / HTML_FILE)

    def rollback(self, reason: str = "run by hand") -> datetime | None:
        """The playbook's rollback procedure, by hand: end the fault now (safe twice)."""
        if self.run.closed:
            self.run.show("Rollback: the run is finished and its fault already ended (nothing to do).")
            return None
        return self.run.rollback(reason)

    def close(self) -> None:
        self.run.close()

    # -- what the notebook may look at ---------------------------------------------------------------
    def banner(self) -> Banner:
        return self.display.banner(self.run, self.run.current_phase or "start")

    @property
    def params(self) -> Any:
        return self.run.params

    @property
    def journal(self) -> Any:
        return self.run.journal

    @property
    def clock(self) -> Any:
        return self.run.clock

    @property
    def scorecard(self) -> Any:
        return self.run.scorecard

    @property
    def archive_dir(self) -> Path:
        return self.run.archive_dir
