"""How a run shows itself in the notebook: an observer of the run (``observers.RunObserver``).

- **Each phase** opens with the status banner (phase, T-offset clock, the gameday's tiles), redrawn
  in place when the phase ends; its checks, measurements and observations follow as tables.
- **Waits**: headless (Papermill), a progress line at most every few seconds and one when the wait
  ends, saying how it ended; live, a progress bar that ends full (replaced by a static line, so a
  saved notebook holds no widget text), the banner redrawn in place, and one lag/buffer chart per
  phase redrawn in place. Every number shown at one moment comes from the same reading.
- **The end**: the verdict as large as the banner.

Outside a notebook kernel nothing is displayed (a plain Python caller sees the return values).
"""

from __future__ import annotations

import html
import io
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gamedaylib.banner import Banner, VerdictBanner
from gamedaylib.observers import RunObserver, WaitProgress
from gamedaylib.phase import PhaseResult

if TYPE_CHECKING:
    from gamedaylib.readings import Reading
    from gamedaylib.run import Run
    from gamedaylib.stopconditions import StopReason

__all__ = ["NotebookDisplay", "in_kernel", "kernel_is_live"]

OUTCOME_WORDS = {"done": "done", "deadline": "deadline reached", "stopped": "ended early", "": ""}


def in_kernel() -> bool:
    """True inside an IPython kernel (a notebook)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def kernel_is_live() -> bool:
    """True when a person's frontend runs this cell: it can answer input requests (Jupyter messaging
    protocol, ``execute_request.allow_stdin``), which JupyterLab does and headless executors
    (Papermill, nbclient) never do."""
    if not in_kernel():
        return False
    from IPython import get_ipython

    kernel = get_ipython().kernel  # type: ignore[union-attr]
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # ipykernel < 6.4
        parent = kernel.get_parent()
    return bool((parent or {}).get("content", {}).get("allow_stdin", False))


def _display(obj: Any, display_id: str | None = None, update: bool = False) -> None:
    if not in_kernel():
        return
    from IPython.display import display, update_display

    if update and display_id is not None:
        update_display(obj, display_id=display_id)
    elif display_id is not None:
        display(obj, display_id=display_id)
    else:
        display(obj)


def _markdown(text: str) -> Any:
    from IPython.display import Markdown

    return Markdown(text)


class NotebookDisplay(RunObserver):
    """Shows a run in its notebook (see the module docstring)."""

    def __init__(self, *, live: bool, stream: TextIO | None = None, print_every: float = 5.0,
                 redraw_every: float = 5.0) -> None:
        self.live = live
        self.stream = stream
        self.print_every = print_every
        self.redraw_every = redraw_every
        self._banner_id: str | None = None
        self._banner_phase = "start"
        self._chart_id: str | None = None
        self._progress: Any = None
        self._progress_id: str | None = None
        self._last_line = float("-inf")
        self._last_redraw = float("-inf")

    # -- the banner -------------------------------------------------------------------------------
    def banner(self, run: Run, phase: str, reading: Reading | None = None) -> Banner:
        p = run.params
        reading = reading if reading is not None else run.latest()
        title = {"start": "Start", "finish": "Finish"}.get(phase, run.playbook.title_of(phase))
        subtitle = " · ".join(x for x in (p.gameday_id, f"run {p.run_id}", p.target, p.profile) if x)
        accent = "alarm" if run.fault_in_force else ("ok" if run.healed_at is not None else "info")
        return Banner(title, run.clock.offset(), tuple(run.scenario.tiles(run, reading)), subtitle, accent)

    def _show_banner(self, run: Run, phase: str) -> None:
        self._banner_phase = phase
        self._banner_id = f"gameday-banner-{uuid.uuid4().hex}"
        _display(self.banner(run, phase), self._banner_id)

    def refresh_banner(self, run: Run, reading: Reading | None = None) -> None:
        if self._banner_id is not None:
            _display(self.banner(run, self._banner_phase, reading), self._banner_id, update=True)

    # -- hooks ------------------------------------------------------------------------------------
    def run_started(self, run: Run) -> None:
        self._show_banner(run, "start")

    def phase_started(self, run: Run, phase_id: str) -> None:
        self._chart_id = None
        self._show_banner(run, phase_id)

    def phase_finished(self, run: Run, result: PhaseResult, error: BaseException | None) -> None:
        text = result.as_markdown()
        if error is not None:
            text += f"\n\n**Phase failed:** `{type(error).__name__}: {error}`"
        if text.strip():
            _display(_markdown(text))
        self.refresh_banner(run)

    def stopped(self, run: Run, reason: StopReason) -> None:
        what = "lost sight of what it measures" if reason.blind else "the system crossed a stop condition"
        _display(_markdown(f"**The fault was ended early: {what}.** {reason.words}. The run goes on to "
                           "verify, so the post-mortem has data."))

    def show(self, run: Run, content: Any) -> None:
        from gamedaylib.forms import Form

        if isinstance(content, str):
            _display(_markdown(content))
        elif isinstance(content, Path):
            from IPython.display import Image

            _display(Image(filename=str(content)))
        elif isinstance(content, Form):
            if in_kernel():
                content.show()
        else:
            _display(content)

    def run_finished(self, run: Run, scorecard: dict[str, Any]) -> None:
        self.refresh_banner(run)
        _display(VerdictBanner(run.params.gameday_id, scorecard["verdict"], str(scorecard.get("reason") or ""),
                               str(run.archive_dir)))

    # -- waits ------------------------------------------------------------------------------------
    def _status(self, run: Run, reading: Reading | None) -> str:
        if reading is None:
            return ""
        bits = [f"{t.label} {t.value}" for t in run.scenario.tiles(run, reading)]
        return " · ".join([run.clock.offset(reading.at), *bits])

    def waiting(self, run: Run, progress: WaitProgress, reading: Reading | None) -> None:
        line = f"{progress.what}: {progress.elapsed:.0f} of {progress.timeout:.0f} s"
        if progress.detail:
            line += f" ({progress.detail})"
        status = self._status(run, reading)
        if progress.outcome:
            line = (f"{progress.what}: {OUTCOME_WORDS.get(progress.outcome, progress.outcome)} after "
                    f"{progress.elapsed:.0f} s" + (f" ({progress.detail})" if progress.detail else ""))
        if status:
            line += f" · {status}"
        now = time.monotonic()
        if self.live and in_kernel():
            self._live_progress(run, progress, line, reading, now)
        elif progress.outcome or now - self._last_line >= self.print_every:
            self._last_line = now
            stream = self.stream or sys.stdout
            stream.write(line + "\n")
            stream.flush()
        if progress.outcome:
            self._last_line = float("-inf")

    def _live_progress(self, run: Run, progress: WaitProgress, line: str, reading: Reading | None,
                       now: float) -> None:
        import ipywidgets as widgets

        if self._progress is None:
            bar = widgets.FloatProgress(value=0.0, min=0.0, max=max(progress.timeout, 1e-9),
                                        layout=widgets.Layout(width="40%"))
            label = widgets.HTML()
            self._progress = (bar, label)
            self._progress_id = f"gameday-wait-{uuid.uuid4().hex}"
            box = widgets.HBox([bar, label])
            bundle = dict(box._repr_mimebundle_() or {})
            bundle["text/plain"] = line
            from IPython.display import display

            display(bundle, raw=True, display_id=self._progress_id)
        bar, label = self._progress
        bar.value = progress.timeout if progress.outcome else min(progress.elapsed, progress.timeout)
        label.value = f"<span style='font-size:18px'>{html.escape(line)}</span>"
        if progress.outcome:
            # the finished wait becomes a static line: a saved notebook keeps no widget text
            mark = {"done": "✔", "deadline": "✘", "stopped": "■"}.get(progress.outcome, "")
            _display(_markdown(f"{mark} {line}"), self._progress_id, update=True)
            self._progress = self._progress_id = None
        if progress.outcome or now - self._last_redraw >= self.redraw_every:
            self._last_redraw = now
            self.refresh_banner(run, reading)
            self._redraw_chart(run)

    def _redraw_chart(self, run: Run) -> None:
        """The phase's lag/buffer chart, drawn once and then redrawn in place."""
        if run.sampler is None:
            return
        from IPython.display import Image

        from gamedaylib import charts

        try:
            fig = charts.timeline(run.sampler.frame(), run.journal.entries(), t0=run.clock.t0,
                                  title=f"{run.params.gameday_id} so far")
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            run.journal.record("error", phase=run.current_phase, error="live chart", message=str(exc))
            return
        image = Image(data=buf.getvalue(), format="png")
        if self._chart_id is None:
            self._chart_id = f"gameday-chart-{uuid.uuid4().hex}"
            _display(image, self._chart_id)
        else:
            _display(image, self._chart_id, update=True)
