"""How a run shows itself in the notebook: an observer of the run (``observers.RunObserver``).

Written for a shared screen at 1920×1080 read from the back of a room, and for ``report.html`` read
later: every block is HTML with inline styles only (large type; nothing external, no script), with
Markdown and plain text beside it for other readers.

- **Each phase** opens with the status banner (phase, T-offset clock, the gameday's tiles), redrawn
  in place; its checks (a failed one coloured), measurements and observations follow as tables.
- **Waits** say what is waited for, how far it is and how it ended, in words: "partition half-way:
  7 of 10 s (partition ends at T+00:20)", then "✔ partition half-way: 10 of 10 s, reached (...)".
  Headless (Papermill): such a line at most every few seconds, and one when the wait ends. Live: a
  progress bar and that line; when the wait ends the bar is replaced by a static one, full when the
  wait ran its course (a saved notebook holds no widget text).
- **One moment, one number**: live, every few seconds and when a wait or phase ends, the banner and
  the phase's one chart (``charts.LIVE_PANELS``, redrawn in place) are drawn from the *same* reading,
  the chart cut at that reading and writing its last values at the end of its lines.
- **The end**: the verdict as large as the banner, with its reason in words (``findings``).

Outside a notebook kernel nothing is displayed (a plain Python caller sees the return values).
"""

from __future__ import annotations

import html
import io
import math
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gamedaylib import findings
from gamedaylib.banner import Banner, VerdictBanner
from gamedaylib.observers import RunObserver, WaitProgress
from gamedaylib.phase import PhaseResult, fmt

if TYPE_CHECKING:
    from gamedaylib.readings import Reading
    from gamedaylib.run import Run
    from gamedaylib.stopconditions import StopReason

__all__ = ["NotebookDisplay", "Rich", "in_kernel", "kernel_is_live", "markdown_html", "result_html", "wait_words"]

FONT = "font-family:Helvetica,Arial,sans-serif"
PROSE = f"{FONT};font-size:18px;line-height:1.45;color:#111"
CELL = "text-align:left;vertical-align:top;padding:5px 12px;border-bottom:1px solid #d7dbe0"
MARKS = {"done": "✔", "deadline": "✘", "stopped": "■"}
BAR_COLOURS = {"done": "#2e7d32", "deadline": "#b00020", "stopped": "#8a4b00", "": "#1565c0"}
CHECK_CELLS = {"ok": ("✔ ok", "#e8f5e9", "#1b5e20"), "failed": ("✘ FAILED", "#b00020", "#ffffff"),
               "no": ("⚠ no", "#fff3e0", "#7a3e00")}


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


@dataclass(frozen=True)
class Rich:
    """One displayable block: HTML (inline styles) for notebooks and report.html, Markdown and text
    for every other reader."""

    html: str
    markdown: str = ""
    text: str = ""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        bundle = {"text/html": self.html, "text/plain": self.text or self.markdown or "(see the HTML)"}
        if self.markdown:
            bundle["text/markdown"] = self.markdown
        return bundle


_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})\.\d{1,6}")


def to_the_second(text: str) -> str:
    """Times as a reader wants them: ``23:52:13.248686+00:00`` shown as ``23:52:13+00:00`` (the journal and
    the scorecard keep every digit)."""
    return _FRACTION.sub(r"\1", text)


def markdown_html(text: str) -> str:
    """Markdown (tables included) as HTML in the screen's type size, times to the second."""
    import mistune

    render = mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])
    body = str(render(to_the_second(text)))
    body = body.replace("<table>", "<table style='border-collapse:collapse;font-size:18px'>")
    # a short cell (a name, a target, a result) never wraps: long evidence beside it takes the room
    body = re.sub(r"<(td|th)>(.*?)</\1>", lambda m: f"<{m.group(1)} style='{CELL}"
                  + (";white-space:nowrap" if len(html.unescape(re.sub(r"<[^>]+>", "", m.group(2)))) <= 24 else "")
                  + f"'>{m.group(2)}</{m.group(1)}>", body, flags=re.DOTALL)
    return f"<div class='gameday-prose' style='{PROSE}'>{body}</div>"


def _markdown(text: str) -> Rich:
    return Rich(markdown_html(text), to_the_second(text), to_the_second(text))


def _h(value: Any) -> str:
    return html.escape(str(value), quote=False)


def result_html(result: PhaseResult, title: str = "") -> str:
    """A phase's checks (each result a coloured word), measurements, observations and shell steps."""
    parts = [f"<div class='gameday-result' style='{PROSE}'>"]
    if title:
        parts.append(f"<div style='font-size:22px;font-weight:700;margin:6px 0'>{_h(title)}</div>")
    if result.checks:
        rows = []
        for c in result.checks:
            word, background, ink = CHECK_CELLS["ok" if c.ok else ("failed" if c.fatal else "no")]
            rows.append(f"<tr><td style='{CELL}'>{_h(c.name)}</td><td style='{CELL};background:{background};"
                        f"color:{ink};font-weight:700;white-space:nowrap'>{word}</td>"
                        f"<td style='{CELL}'>{_h(to_the_second(c.detail))}</td></tr>")
        parts.append("<table style='border-collapse:collapse;font-size:18px;margin:4px 0 10px'><thead><tr>"
                     + "".join(f"<th style='{CELL};border-bottom:2px solid #555'>{h}</th>"
                               for h in ("check", "result", "detail"))
                     + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    if result.values:
        rows = [f"<tr><td style='{CELL}'>{_h(k)}</td><td style='{CELL};font-weight:700'>{_h(to_the_second(fmt(v)))}"
                "</td></tr>"
                for k, v in result.values.items()]
        parts.append(f"<table style='border-collapse:collapse;font-size:18px;margin:4px 0 10px'><thead><tr>"
                     f"<th style='{CELL};border-bottom:2px solid #555'>measurement</th>"
                     f"<th style='{CELL};border-bottom:2px solid #555'>value</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table>")
    if result.observations:
        items = "".join(f"<li><i>{_h(q)}</i>: {_h(a) if a else '<i>(no answer recorded)</i>'}</li>"
                        for q, a in result.observations.items())
        parts.append(f"<ul>{items}</ul>")
    for cmd in result.commands:
        parts.append(markdown_html(cmd.as_markdown()))
    parts.append("</div>")
    return "".join(parts)


def wait_words(progress: WaitProgress, why: str = "") -> str:
    """What a wait is for, how far it is, and how it ended (``why``: why it ended early)."""
    what, elapsed, timeout = progress.what, progress.elapsed, progress.timeout
    detail = f" ({progress.detail})" if progress.detail else ""
    if progress.outcome == "done":
        if elapsed >= timeout - 1.0:
            return f"{MARKS['done']} {what}: {timeout:.0f} of {timeout:.0f} s, reached{detail}"
        return f"{MARKS['done']} {what}: done after {elapsed:.0f} s (at most {timeout:.0f} s){detail}"
    if progress.outcome == "deadline":
        return f"{MARKS['deadline']} {what}: not done by the deadline, {elapsed:.0f} of {timeout:.0f} s{detail}"
    if progress.outcome == "stopped":
        return (f"{MARKS['stopped']} {what}: ended early after {elapsed:.0f} of {timeout:.0f} s"
                + (f": {why}" if why else "") + detail)
    return f"{what}: {math.floor(min(elapsed, timeout))} of {timeout:.0f} s{detail}"  # never "5 of 5" before the end


def _bar_html(progress: WaitProgress, words: str) -> str:
    """A finished wait as a static bar and its words (full unless the wait ended early)."""
    share = (1.0 if progress.outcome in ("done", "deadline")
             else min(1.0, progress.elapsed / max(progress.timeout, 1e-9)))
    colour = BAR_COLOURS.get(progress.outcome, BAR_COLOURS[""])
    return (f"<div class='gameday-wait' style='display:flex;align-items:center;gap:16px;{PROSE};margin:4px 0'>"
            f"<div style='flex:0 0 30%;height:22px;background:#e5e7eb;border-radius:5px;overflow:hidden'>"
            f"<div style='width:{share * 100:.0f}%;height:100%;background:{colour}'></div></div>"
            f"<div style='flex:1 1 auto;font-size:20px'>{_h(words)}</div></div>")


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
        self._wait: tuple[Any, Any, str] | None = None  # bar, label, display id
        self._last_line = float("-inf")
        self._last_redraw = float("-inf")
        self.moments: list[dict[str, Any]] = []  # what the banner and the chart were drawn from, last first

    # -- the banner -------------------------------------------------------------------------------
    def banner(self, run: Run, phase: str, reading: Reading | None = None) -> Banner:
        p = run.params
        reading = reading if reading is not None else run.latest()
        title = {"start": "Start", "finish": "Finish"}.get(phase, run.playbook.title_of(phase))
        subtitle = " · ".join(x for x in (p.gameday_id, f"run {p.run_id}", p.target, p.profile) if x)
        accent = "alarm" if run.fault_in_force else ("ok" if run.healed_at is not None else "info")
        offset = (run.clock.offset(reading.at) if reading is not None and run.clock.t0 is not None
                  else run.clock.offset())
        return Banner(title, offset, tuple(run.scenario.tiles(run, reading)), subtitle, accent)

    def _show_banner(self, run: Run, phase: str) -> None:
        self._banner_phase = phase
        self._banner_id = f"gameday-banner-{uuid.uuid4().hex}"
        _display(self.banner(run, phase), self._banner_id)

    def refresh_banner(self, run: Run, reading: Reading | None = None) -> None:
        if self._banner_id is not None:
            _display(self.banner(run, self._banner_phase, reading), self._banner_id, update=True)

    def _moment(self, run: Run, reading: Reading | None, *, chart: bool) -> None:
        """The banner, and the phase's chart when asked, drawn from this one reading."""
        reading = reading if reading is not None else run.latest()
        banner = self.banner(run, self._banner_phase, reading)
        if self._banner_id is not None:
            _display(banner, self._banner_id, update=True)
        drawn = self._redraw_chart(run, reading) if chart else False
        self.moments.insert(0, {"at": reading.at if reading is not None else None, "banner": banner.text(),
                                "chart": drawn})
        del self.moments[20:]

    # -- hooks ------------------------------------------------------------------------------------
    def run_started(self, run: Run) -> None:
        self._show_banner(run, "start")

    def phase_started(self, run: Run, phase_id: str) -> None:
        self._chart_id = None
        self._show_banner(run, phase_id)

    def phase_finished(self, run: Run, result: PhaseResult, error: BaseException | None) -> None:
        body = result_html(result)
        text = result.as_markdown()
        if error is not None:
            failed = f"Phase failed: {type(error).__name__}: {error}"
            body += (f"<div style='{PROSE};background:#b00020;color:#ffffff;padding:10px 16px;border-radius:8px;"
                     f"font-size:20px;font-weight:700'>{_h(failed)}</div>")
            text += f"\n\n**{failed}**"
        if text.strip():
            _display(Rich(body, text, text))
        # the banner and the phase's chart (when it has one) agree at the phase's end
        self._moment(run, run.latest(), chart=self.live and self._chart_id is not None)

    def stopped(self, run: Run, reason: StopReason) -> None:
        what = "lost sight of what it measures" if reason.blind else "the system crossed a stop condition"
        text = (f"The fault was ended early: {what}. {reason.words}. The run goes on to verify, so the "
                "post-mortem has data.")
        block = (f"<div class='gameday-stopped' role='alert' style='{PROSE};background:#8a4b00;color:#ffffff;"
                 f"padding:12px 18px;border-radius:8px;font-size:22px;font-weight:700;margin:6px 0'>■ "
                 f"{_h(text)}</div>")
        _display(Rich(block, f"**{text}**", text))

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
        self._moment(run, run.latest(), chart=self.live and self._chart_id is not None)
        _display(VerdictBanner(run.params.gameday_id, scorecard["verdict"], findings.verdict_reason(scorecard),
                               str(run.archive_dir)))

    # -- waits ------------------------------------------------------------------------------------
    def _status(self, run: Run, reading: Reading | None) -> str:
        if reading is None:
            return ""
        bits = [f"{t.label} {t.value}" for t in run.scenario.tiles(run, reading)]
        return " · ".join([run.clock.offset(reading.at), *bits])

    @staticmethod
    def _why_early(run: Run) -> str:
        if run.stopped_by is not None:
            return run.stopped_by.words
        return run.fault_ended_early or ""

    def waiting(self, run: Run, progress: WaitProgress, reading: Reading | None) -> None:
        words = wait_words(progress, self._why_early(run) if progress.outcome == "stopped" else "")
        now = time.monotonic()
        if self.live and in_kernel():
            self._live_wait(run, progress, words, reading, now)
            return
        if progress.outcome or now - self._last_line >= self.print_every:
            self._last_line = now
            status = self._status(run, reading)  # from the same reading as the words' moment
            stream = self.stream or sys.stdout
            stream.write(words + (f" · {status}" if status else "") + "\n")
            stream.flush()
        if progress.outcome:
            self._last_line = float("-inf")

    def _live_wait(self, run: Run, progress: WaitProgress, words: str, reading: Reading | None,
                   now: float) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        if self._wait is None:
            bar = widgets.FloatProgress(value=0.0, min=0.0, max=max(progress.timeout, 1e-9), bar_style="info",
                                        layout=widgets.Layout(width="30%", height="26px"))
            label = widgets.HTML(layout=widgets.Layout(width="auto", flex="1 1 auto"))
            box = widgets.HBox([bar, label], layout=widgets.Layout(width="100%", align_items="center"))
            display_id = f"gameday-wait-{uuid.uuid4().hex}"
            bundle = dict(box._repr_mimebundle_() or {})
            bundle["text/plain"] = words  # what a reader without the widget sees: the words, never a repr
            display(bundle, raw=True, display_id=display_id)
            self._wait = (bar, label, display_id)
        bar, label, display_id = self._wait
        bar.value = progress.timeout if progress.outcome in ("done", "deadline") else min(progress.elapsed,
                                                                                           progress.timeout)
        label.value = f"<span style='{FONT};font-size:20px;white-space:normal'>{_h(words)}</span>"
        if progress.outcome:
            # the finished wait becomes static: a saved notebook keeps no widget text
            _display(Rich(_bar_html(progress, words), words, words), display_id, update=True)
            self._wait = None
        if progress.outcome or now - self._last_redraw >= self.redraw_every:
            self._last_redraw = now
            self._moment(run, reading, chart=True)

    def _redraw_chart(self, run: Run, reading: Reading | None) -> bool:
        """The phase's lag/buffer/canary chart up to ``reading``, drawn once and then redrawn in place."""
        if run.sampler is None:
            return False
        from IPython.display import Image

        from gamedaylib import charts

        until = reading.at if reading is not None else None
        as_of = f", as of {run.clock.offset(until)}" if until is not None else ""
        try:
            fig = charts.timeline(run.sampler.frame(), run.journal.entries(), t0=run.clock.t0,
                                  title=f"{run.params.gameday_id}: {run.playbook.title_of(self._banner_phase)}{as_of}",
                                  panels=charts.LIVE_PANELS, until=until)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=charts.DPI, bbox_inches="tight")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            run.journal.record("error", phase=run.current_phase, error="live chart", message=str(exc))
            return False
        image = Image(data=buf.getvalue(), format="png")
        if self._chart_id is None:
            self._chart_id = f"gameday-chart-{uuid.uuid4().hex}"
            _display(image, self._chart_id)
        else:
            _display(image, self._chart_id, update=True)
        return True
