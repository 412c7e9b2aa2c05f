"""The status banner at the top of each phase, and ``LiveWait`` for the long waits.

The banner is one block of HTML with inline CSS only (no scripts, fonts or images from elsewhere), so
it renders the same in JupyterLab, in the archived notebook and in ``report.html``. It is meant for a
shared screen: large type, white on dark, and every state says its name in words as well as in colour
(``PARTITION ACTIVE`` on red, ``HEALED`` on green, ``UNKNOWN`` on grey). Its plain-text form is one
line, for readers without HTML.

``LiveWait`` is how the runbook waits (the partition running, recovery): live, a progress bar and a
redraw callback (charts) every few seconds; headless, a compact progress line at most every
``print_every`` seconds. It never waits past its deadline. Known limit: while a wait blocks the
kernel, widget clicks queue up and their handlers run when the waiting cell ends (ipykernel handles
comm messages on the same channel as cell execution), so a stamp pressed during a wait is recorded
late. The stamp buttons therefore take a typed time ("happened at": ``14:03:20``, ``T+04:30``).
"""

from __future__ import annotations

import html
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, TextIO

import ipywidgets as widgets
from IPython.display import display, update_display

# colours with white text at a contrast ratio of at least 4.5:1
RED = "#b00020"
GREEN = "#1b6e20"
GREY = "#424242"
AMBER = "#8a4b00"
BLUE = "#0d3b66"
DARK = "#111827"

VERDICT_COLOURS = {"pass": GREEN, "fail": RED, "aborted": AMBER}


@dataclass(frozen=True)
class BannerState:
    phase_title: str
    t_offset: str
    partition_active: bool | None
    lag: int | None
    buffer: int | None
    canaries_lost: int | None
    verdict: str | None = None

    def text(self) -> str:
        part = {True: "PARTITION ACTIVE", False: "no partition", None: "partition unknown"}[self.partition_active]
        bits = [
            f"[{self.phase_title}]",
            self.t_offset,
            part,
            f"lag {_num(self.lag)}",
            f"buffer {_num(self.buffer)}",
            f"canaries lost {_num(self.canaries_lost)}",
        ]
        if self.verdict:
            bits.append(f"verdict {self.verdict.upper()}")
        return " | ".join(bits)


def _num(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _tile(label: str, value: str, colour: str) -> str:
    return (
        f"<div style='background:{colour};color:#ffffff;padding:10px 18px;border-radius:8px;"
        f"min-width:150px;margin:4px;flex:1 1 150px'>"
        f"<div style='font-size:15px;letter-spacing:0.08em;text-transform:uppercase;opacity:0.92'>"
        f"{html.escape(label)}</div>"
        f"<div style='font-size:34px;font-weight:700;line-height:1.15'>{html.escape(value)}</div></div>"
    )


def status_banner_html(
    *,
    phase_title: str,
    t_offset: str,
    partition_active: bool | None,
    lag: int | None,
    buffer: int | None,
    canaries_lost: int | None,
    verdict: str | None = None,
    subtitle: str = "",
) -> str:
    """The banner as one self-contained HTML block (inline CSS only). ``subtitle`` (e.g. gameday id,
    run id, target and profile) is shown small under the phase title."""
    if partition_active is True:
        part, part_colour = "ACTIVE", RED
    elif partition_active is False:
        part, part_colour = "OFF", GREEN
    else:
        part, part_colour = "UNKNOWN", GREY
    lost_colour = GREY if canaries_lost is None else (RED if canaries_lost > 0 else GREEN)
    lag_colour = GREY if lag is None else BLUE
    buffer_colour = GREY if buffer is None else (AMBER if buffer > 0 else BLUE)
    tiles = [
        _tile("partition", part, part_colour),
        _tile("consumer lag", _num(lag), lag_colour),
        _tile("gateway buffer", _num(buffer), buffer_colour),
        _tile("canaries lost", _num(canaries_lost), lost_colour),
    ]
    if verdict:
        tiles.append(_tile("verdict", verdict.upper(), VERDICT_COLOURS.get(verdict.lower(), GREY)))
    summary = BannerState(phase_title, t_offset, partition_active, lag, buffer, canaries_lost, verdict).text()
    return (
        f"<div class='gameday-banner' role='status' aria-label='{html.escape(summary, quote=True)}' "
        f"style='background:{DARK};color:#ffffff;font-family:Helvetica,Arial,sans-serif;"
        f"padding:14px 18px;border-radius:10px;border-left:14px solid {part_colour};margin:6px 0'>"
        f"<div style='display:flex;justify-content:space-between;align-items:baseline;flex-wrap:wrap'>"
        f"<div style='font-size:38px;font-weight:800'>{html.escape(phase_title)}</div>"
        f"<div style='font-size:44px;font-weight:800;font-family:DejaVu Sans Mono,Menlo,monospace'>"
        f"{html.escape(t_offset)}</div></div>"
        + (f"<div style='font-size:16px;color:#e5e7eb'>{html.escape(subtitle)}</div>" if subtitle else "")
        + f"<div style='display:flex;flex-wrap:wrap;margin-top:8px'>{''.join(tiles)}</div></div>"
    )


class _Banner:
    """Displayable banner: HTML for notebooks, one line of text for everything else."""

    def __init__(self, state: BannerState) -> None:
        self.state = state

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": status_banner_html(**asdict(self.state)), "text/plain": self.state.text()}


class StatusBanner:
    """A banner shown once and updated in place (``display_id``) while a phase runs."""

    def __init__(self) -> None:
        self.display_id: str | None = None
        self.state: BannerState | None = None

    def show(self, **fields: Any) -> str:
        """Display a new banner (e.g. at the top of a phase); returns its display id."""
        self.state = BannerState(**fields)
        self.display_id = f"gameday-banner-{uuid.uuid4().hex}"
        display(_Banner(self.state), display_id=self.display_id)
        return self.display_id

    def update(self, **fields: Any) -> None:
        """Change the last banner shown, in place (fields not given keep their value)."""
        if self.display_id is None or self.state is None:
            self.show(**fields)
            return
        self.state = replace(self.state, **fields)
        update_display(_Banner(self.state), display_id=self.display_id)


def show_banner(
    *,
    phase_title: str,
    t_offset: str,
    partition_active: bool | None,
    lag: int | None,
    buffer: int | None,
    canaries_lost: int | None,
    verdict: str | None = None,
    banner: StatusBanner | None = None,
) -> StatusBanner:
    """Display the banner (a new one, or in place of ``banner``'s last one) and return its handle."""
    fields: dict[str, Any] = {
        "phase_title": phase_title, "t_offset": t_offset, "partition_active": partition_active, "lag": lag,
        "buffer": buffer, "canaries_lost": canaries_lost, "verdict": verdict,
    }
    if banner is None:
        banner = StatusBanner()
        banner.show(**fields)
    else:
        banner.update(**fields)
    return banner


class LiveWait:
    """Wait for a condition or a deadline, showing progress.

    ``wait_until(predicate)`` checks ``predicate()`` every ``interval`` seconds and returns True as
    soon as it holds, False at the deadline (``timeout`` seconds after the wait started), never later
    than the deadline plus one predicate call. ``status()`` may return a short text shown with the
    progress. Live: an ipywidgets progress bar, and ``redraw()`` every ``redraw_every`` seconds (for
    charts redrawn in place). Headless: a line ``description: 12/20 s ...`` written to ``stream`` at
    most every ``print_every`` seconds.
    """

    def __init__(
        self,
        description: str,
        timeout: float,
        *,
        live: bool,
        redraw: Callable[[], None] | None = None,
        redraw_every: float = 5.0,
        print_every: float = 5.0,
        status: Callable[[], str] | None = None,
        stream: TextIO | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.description = description
        self.timeout = max(0.0, float(timeout))
        self.live = live
        self.redraw = redraw
        self.redraw_every = redraw_every
        self.print_every = print_every
        self.status = status
        self.stream = stream
        self._monotonic = monotonic
        self._sleep = sleep
        self._progress: widgets.FloatProgress | None = None
        self._label: widgets.HTML | None = None

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def _show(self, elapsed: float, final: str = "") -> None:
        text = self.status() if self.status else ""
        line = f"{self.description}: {elapsed:.0f}/{self.timeout:.0f} s"
        if text:
            line += f" {text}"
        if final:
            line += f" {final}"
        if self.live:
            if self._progress is None:
                self._progress = widgets.FloatProgress(
                    value=0.0, min=0.0, max=max(self.timeout, 1e-9), description=self.description[:20],
                    layout=widgets.Layout(width="60%"),
                )
                self._label = widgets.HTML()
                display(widgets.HBox([self._progress, self._label]))
            assert self._label is not None
            self._progress.value = min(elapsed, self.timeout)
            self._label.value = f"<span style='font-size:16px'>{html.escape(line)}</span>"
        else:
            self._write(line)

    def _redraw(self) -> None:
        if self.redraw is not None:
            self.redraw()

    def _finish(self, elapsed: float, final: str, outcome: bool) -> bool:
        self._show(elapsed, final)
        if self.live:
            self._redraw()
        return outcome

    def wait_until(self, predicate: Callable[[], bool] | None = None, *, interval: float = 1.0) -> bool:
        """True when ``predicate`` held before the deadline; False at the deadline. Without a
        predicate, simply waits ``timeout`` seconds (showing progress) and returns False."""
        start = self._monotonic()
        deadline = start + self.timeout
        last_show = last_redraw = float("-inf")
        while True:
            if predicate is not None and predicate():
                return self._finish(self._monotonic() - start, "done", True)
            now = self._monotonic()
            if now >= deadline:
                return self._finish(self.timeout, "deadline reached", False)
            if now - last_show >= (1.0 if self.live else self.print_every):
                self._show(now - start)
                last_show = now
            if self.live and now - last_redraw >= self.redraw_every:
                self._redraw()
                last_redraw = now
            self._sleep(max(0.0, min(interval, deadline - self._monotonic())))


def render(
    *,
    gameday_id: str,
    run_id: str,
    phase: str,
    offset: str,
    numbers: dict[str, Any] | None = None,
    target: str = "",
    profile: str = "",
    partition_active: bool | None = None,
    verdict: str | None = None,
) -> str:
    """The banner HTML from the runbook's own names: ``phase`` is a phase id (or a free title),
    ``numbers`` may hold ``lag``, ``buffer`` and ``canaries_lost``."""
    from gamedaylib.playbook import PHASES_BY_ID

    nums = numbers or {}
    title = PHASES_BY_ID[phase].title if phase in PHASES_BY_ID else phase
    subtitle = " · ".join(x for x in (gameday_id, f"run {run_id}" if run_id else "", target, profile) if x)
    return status_banner_html(
        phase_title=title, t_offset=offset, partition_active=partition_active,
        lag=_int(nums.get("lag")), buffer=_int(nums.get("buffer")), canaries_lost=_int(nums.get("canaries_lost")),
        verdict=verdict, subtitle=subtitle,
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
