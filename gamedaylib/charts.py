"""Charts of a gameday with matplotlib: the timeline, the canaries and the history across runs, drawn
to be read on a shared screen and in ``report.html``. The time series come as the sampler's pandas
DataFrame (``Sampler.frame()``, ``read_samples``).

What every chart here does for its reader:

- **Size and type for a room**: 16 in wide at ``DPI`` 100 (1600 px: the width of a notebook output at
  1920×1080), text 13 to 20 pt (18 to 28 px), thick lines.
- **The timeline** (``timeline_figure``): a phase ribbon on top (every phase named horizontally; names
  that do not fit their phase move to another row, or aside with a leader line: never on top of
  each other), then one panel per series over the T-offset (``T+01:30``). The fault's window is
  hatched, its start and end dashed; a stop condition or a failed phase is a solid black line, named
  (``marks_from_journal``). A legend explains every background element. A long quiet stretch with no
  fault and nothing moving (a wait for an alert after recovery) is drawn compressed and labelled, so
  the gameday itself never shrinks to a sliver. Lost canaries are their own series.
- **The canaries** (``canary_figure``): latency of the stored ones, and below every canary counted by
  outcome per time bin: lost and rejected canaries are counts, never points at a made-up latency.
- **The live chart** (``LIVE_PANELS``, ``until``): the lag, buffer and canary panels up to the very
  reading the banner shows, with the last value written at the end of each line.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, Agg canvas) and
returned; the caller saves or displays them. Long series (2 h at 1 Hz) are downsampled for plotting:
gauges keep each bucket's maximum (a peak is never hidden), counters keep the bucket's last value so
rates stay exact over the wider step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

from gamedaylib.clock import format_offset, parse_time

__all__ = [
    "DPI",
    "LIVE_PANELS",
    "MAX_POINTS",
    "PANELS",
    "canary_figure",
    "history_figure",
    "marks_from_journal",
    "phases_from_journal",
    "save",
    "timeline",
    "timeline_figure",
]

MAX_POINTS = 1500  # points per line after downsampling
DPI = 100  # 16 in -> 1600 px
WIDTH_IN = 16.0

# type sizes in points (at DPI 100 one point is 1.39 px): every one readable from the back of a room
TITLE_PT = 20
PANEL_TITLE_PT = 16
LABEL_PT = 14
TICK_PT = 13
LEGEND_PT = 13
LINE_W = 2.4

_PHASE_COLOURS = ("#dbe4f0", "#efe6cf")
_PHASE_EDGE = "#6b7280"
_PARTITION_COLOUR = "#c62828"
_MARK_COLOUR = "#111111"
_COMPRESSED_COLOUR = "#9ca3af"
_OUTCOME_COLOURS = {"stored": "#2e7d32", "duplicated": "#ef6c00", "lost": "#c62828", "rejected": "#6a1b9a"}

PANELS = ("lag", "buffer", "retries", "events", "canaries")  # the report's timeline
LIVE_PANELS = ("lag", "buffer", "canaries")  # what the room watches during a wait

_QUIET_SHARE = 0.25  # a quiet stretch after the fault, wider than this share of the run ...
_QUIET_SECONDS = 30.0  # ... and than this, is compressed ...
_COMPRESSED_SHARE = 0.06  # ... to this share of the other time
_ROWS = (0.78, 0.5, 0.22)  # the phase ribbon's label rows (axes fraction)


def _ts(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (datetime, str)):
        return parse_time(value.replace("Z", "+00:00") if isinstance(value, str) else value).timestamp()
    if isinstance(value, pd.Timestamp):
        return float(value.timestamp())
    return float(value)


def _fmt_offset(seconds: float, _pos: Any = None) -> str:
    """A tick label (``FuncFormatter`` passes the tick position too)."""
    return format_offset(seconds)


def _fmt_since(seconds: float, _pos: Any = None) -> str:
    """A tick label counted from the first sample (no T+0 yet): ``+00:12``."""
    return format_offset(seconds)[1:]


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _new_figure(height: float, width: float = WIDTH_IN) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure labels with (no pyplot, no GUI)
    return fig


def save(fig: Figure, path: Any, dpi: int = DPI) -> None:
    """Write ``fig`` as a PNG (static: no widget, no script)."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


def _style(ax: Axes) -> None:
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=TICK_PT)


def _legend_right(ax: Axes, handles: Sequence[Any] | None = None) -> None:
    """Outside, to the right: never over the data."""
    kwargs: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": LEGEND_PT,
                              "borderaxespad": 0, "frameon": False}
    if handles is not None:
        ax.legend(handles=handles, **kwargs)
    elif ax.lines:
        ax.legend(**kwargs)


# -- downsampling and rates ---------------------------------------------------------------------------


def _bucket_edges(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n + 1)
    return np.unique(np.linspace(0, n, max_points + 1).astype(int))


def _gauge(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    if len(edges) == len(values) + 1:
        return values
    out = np.full(len(edges) - 1, np.nan)
    for i, (a, b) in enumerate(pairwise(edges)):
        chunk = values[a:b]
        if np.any(~np.isnan(chunk)):
            out[i] = np.nanmax(chunk)
    return out


def _last(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    if len(edges) == len(values) + 1:
        return values
    return values[edges[1:] - 1]


def _rate(counter: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-second rate between consecutive points; counter resets and gaps give NaN."""
    rate = np.full(len(counter), np.nan)
    if len(counter) < 2:
        return rate
    dv, dt = np.diff(counter), np.diff(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where((dt > 0) & (dv >= 0), dv / dt, np.nan)
    rate[1:] = r
    return rate


def _runs(x: np.ndarray, flags: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous spans where ``flags`` is true (> 0.5)."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for i, f in enumerate(flags):
        on = not math.isnan(f) and f > 0.5
        if on and start is None:
            start = x[i]
        if not on and start is not None:
            spans.append((start, x[i]))
            start = None
    if start is not None:
        spans.append((start, x[-1]))
    return spans


# -- the time axis: T-offsets, compressed quiet stretches --------------------------------------------

_NICE_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600)


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(1, ticks)
    return float(next((s for s in _NICE_STEPS if s >= raw), _NICE_STEPS[-1]))


def _quiet_spans(
    x: np.ndarray,
    gauges: Sequence[np.ndarray],
    phases: Sequence[tuple[str, float, float]],
    busy: Sequence[tuple[float, float]],
    moments: Sequence[float],
    x_start: float,
    x_end: float,
) -> list[tuple[float, float]]:
    """Phases after the fault, wider than ``_QUIET_SECONDS`` and ``_QUIET_SHARE`` of the run, in which
    nothing moved: no mark, every gauge flat (within 2 % of its range over the run): a long wait for an
    alert after recovery. They are drawn compressed; the run before and during the fault never is."""
    total = x_end - x_start
    if total <= 0 or not len(x) or not busy:
        return []
    fault_end = max(b for _, b in busy)
    ranges = [float(np.nanmax(g) - np.nanmin(g)) if np.any(~np.isnan(g)) else 0.0 for g in gauges]
    quiet = []
    for _name, a, b in phases:
        a, b = max(a, x_start, fault_end), min(b, x_end)
        if b - a < max(_QUIET_SECONDS, _QUIET_SHARE * total):
            continue
        if any(fa < b and fb > a for fa, fb in busy) or any(a <= m <= b for m in moments):
            continue
        inside = (x >= a) & (x <= b)
        if not np.any(inside):
            continue
        flat = True
        for g, r in zip(gauges, ranges, strict=True):
            chunk = g[inside]
            chunk = chunk[~np.isnan(chunk)]
            if len(chunk) and float(chunk.max() - chunk.min()) > 0.02 * r + 1e-9:
                flat = False
        if flat:
            # keep a little of each edge at full scale: the moment the phase began and ended
            pad = 0.03 * total
            if b - a > 3 * pad:
                quiet.append((a + pad, b - pad))
    return quiet


class _TimeScale:
    """A piecewise-linear x scale: time at full scale, quiet spans squeezed."""

    def __init__(self, quiet: Sequence[tuple[float, float]], x_start: float, x_end: float) -> None:
        self.quiet = sorted(quiet)
        squeezed = sum(b - a for a, b in self.quiet)
        normal = max(1e-9, (x_end - x_start) - squeezed)
        self.factor = min(1.0, _COMPRESSED_SHARE * normal / max(squeezed / max(1, len(self.quiet)), 1e-9))
        kx, ky = [x_start], [x_start]
        for a, b in self.quiet:
            kx += [a, b]
            ky += [ky[-1] + (a - kx[-3]), ky[-1] + (a - kx[-3]) + (b - a) * self.factor]
        kx.append(x_end)
        ky.append(ky[-1] + (x_end - kx[-2]))
        self.kx, self.ky = np.asarray(kx, float), np.asarray(ky, float)

    @staticmethod
    def _map(x: Any, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        y = np.interp(x, xp, fp)
        y = np.where(x < xp[0], fp[0] + (x - xp[0]), y)
        return np.where(x > xp[-1], fp[-1] + (x - xp[-1]), y)

    def forward(self, x: Any) -> np.ndarray:
        return self._map(x, self.kx, self.ky)

    def inverse(self, y: Any) -> np.ndarray:
        return self._map(y, self.ky, self.kx)

    def apply(self, ax: Axes) -> None:
        if self.quiet:
            ax.set_xscale("function", functions=(self.forward, self.inverse))

    def ticks(self, x_start: float, x_end: float, count: int = 12) -> list[float]:
        """Round T-offsets at full scale, each squeezed span's ends, never two labels crowded."""
        shown = float(self.forward(x_end) - self.forward(x_start))
        step = _nice_step(shown, count)
        ticks = [t for t in np.arange(math.floor(x_start / step) * step, x_end + step / 2, step)
                 if x_start - 1e-9 <= t <= x_end + 1e-9 and not any(a < t < b for a, b in self.quiet)]
        ticks += [v for span in self.quiet for v in span]
        out: list[float] = []
        for t in sorted(ticks):
            if out and float(self.forward(t) - self.forward(out[-1])) < 0.09 * shown:
                if any(t in span for span in self.quiet):  # a squeezed span's end wins over a round tick
                    out[-1] = t
                continue
            out.append(float(t))
        return out


# -- the phase ribbon, background, marks -------------------------------------------------------------


def _place_labels(fig: Figure, ax: Axes, items: Sequence[tuple[float, float, str]]) -> list[Any]:
    """Phase names in the ribbon, horizontal: centred on their phase; a name that would touch another
    goes to the next row; with every row taken it moves right, with a leader line to its phase."""
    fig.draw_without_rendering()  # final layout: the transforms below are the saved image's
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    box = ax.get_window_extent(renderer)
    ends = [-math.inf] * len(_ROWS)
    gap = 10.0
    texts = []
    bbox = {"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.9, "lw": 0}
    for a, b, name in sorted(items, key=lambda i: (i[0], i[1])):
        text = ax.text(0, _ROWS[0], name, transform=ax.transAxes, ha="left", va="center", fontsize=LABEL_PT,
                       bbox=bbox, clip_on=False, zorder=5)
        text.set_in_layout(False)
        width = text.get_window_extent(renderer).width
        xa, xb = (float(ax.transData.transform((v, 0))[0]) for v in (a, b))
        centre = (xa + xb) / 2
        ideal = min(max(centre - width / 2, box.x0 + 2), box.x1 - width - 2)
        # each row's nearest free place; the least displaced wins (ties: the higher row)
        places = [(abs(max(ideal, end + gap) - ideal), i, max(ideal, end + gap)) for i, end in enumerate(ends)
                  if max(ideal, end + gap) + width <= box.x1 + 1]
        if places:
            _, row, left = min(places)
        else:  # no room left anywhere: the emptiest row, at the right edge
            row = min(range(len(ends)), key=lambda i: ends[i])
            left = box.x1 - width - 2
        text.set_position(((left - box.x0) / box.width, _ROWS[row]))
        ends[row] = left + width
        if left > xb or left + width < xa:  # moved away from its phase: a leader line back to it
            y = _ROWS[row]
            ax.plot([(centre - box.x0) / box.width, (left - box.x0) / box.width], [y, y], transform=ax.transAxes,
                    color=_PHASE_EDGE, lw=1.2, clip_on=False, zorder=4)
            ax.plot([(centre - box.x0) / box.width], [y], "o", ms=5, transform=ax.transAxes,
                    color=_PHASE_EDGE, clip_on=False, zorder=4)
        texts.append(text)
    return texts


def _phase_spans(phases: Sequence[tuple[str, Any, Any]], origin: float, x_end: float) -> list[tuple[str, float, float]]:
    spans = []
    for name, start, end in phases:
        a = (_ts(start) or origin) - origin
        end_ts = _ts(end)
        spans.append((str(name), a, end_ts - origin if end_ts is not None else x_end))
    return spans


def marks_from_journal(entries: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The moments a chart marks, as ``(time, words)``: a stop condition that fired, a phase that
    failed, a run that was aborted."""
    marks: list[tuple[str, str]] = []
    for e in entries:
        kind, ts = e.get("kind"), str(e.get("ts") or "")
        if not ts:
            continue
        if kind == "stop_condition":
            marks.append((ts, f"stopped: {e.get('condition', 'stop condition')}"))
        elif kind == "phase.finished" and e.get("status") == "failed":
            marks.append((ts, f"{e.get('phase', 'a phase')} failed"))
        elif kind == "run.finished" and e.get("verdict") == "aborted":
            marks.append((ts, "aborted"))
    return marks


# -- the timeline ---------------------------------------------------------------------------------------


def _seconds(stamps: pd.Series) -> np.ndarray:
    """UTC times as seconds since the epoch, whatever the series' resolution (ns, us, ms)."""
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)


def _frame(frame: Any) -> pd.DataFrame:
    if isinstance(frame, pd.DataFrame):
        return frame
    return pd.DataFrame(list(frame or []))


def timeline_figure(
    frame: Any,
    phases: Sequence[tuple[str, Any, Any]] = (),
    t0: datetime | None = None,
    *,
    partition: tuple[Any, Any] | None = None,
    marks: Sequence[tuple[Any, str]] = (),
    canaries: Any = None,
    panels: Sequence[str] = PANELS,
    until: Any = None,
    max_points: int = MAX_POINTS,
    title: str = "Gameday timeline",
    fault_word: str = "partition",
) -> Figure:
    """The phase ribbon, then ``panels`` over T-offset: ``lag`` (consumer lag), ``buffer`` (gateway
    buffer and its capacity), ``retries`` (NATS retry rate), ``events`` (stored and published per
    second), ``canaries`` (accepted, failed and, given the ``canaries`` report, lost per second).

    ``partition`` = (start, end) of the fault overrides the ``fault_active`` column; ``marks`` are
    ``(time, words)`` drawn as named black lines; ``until`` (a time) cuts the series there (the live
    chart: the very reading the banner shows) and writes each line's last value at its end."""
    frame = _frame(frame)
    if "ts" in frame and len(frame):
        stamps = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
        if until is not None:
            cut = pd.Timestamp(_ts(until) or 0.0, unit="s", tz="UTC")
            stamps = stamps.where(stamps <= cut)
        frame = frame[stamps.notna()]
        ts = _seconds(stamps[stamps.notna()])
    else:
        ts = np.array([], dtype=float)
    rows = frame
    if t0 is not None:
        origin = _ts(t0) or 0.0
    elif len(ts):
        origin = float(ts[0])
    else:
        starts = [_ts(start) for _, start, _ in phases] + ([_ts(partition[0])] if partition else [])
        origin = min((s for s in starts if s is not None), default=0.0)
    x_all = ts - origin if len(ts) else ts
    edges = _bucket_edges(len(rows), max_points)
    x = _last(x_all, edges) if len(rows) else x_all
    until_x = (_ts(until) or origin) - origin if until is not None else None
    x_end = until_x if until_x is not None else (float(x[-1]) if len(x) else 60.0)

    def gauge(name: str) -> np.ndarray:
        return _gauge(_column(rows, name), edges)

    def counter(name: str) -> np.ndarray:
        return _last(_column(rows, name), edges)

    panels = [p for p in panels if p in PANELS]
    heights = {"lag": 2.6, "buffer": 2.6, "retries": 2.0, "events": 2.2, "canaries": 2.3}
    ribbon_h = 1.15
    if until is not None:  # the live chart fits under the banner on a 1080-line screen
        heights = {"lag": 1.7, "buffer": 1.7, "retries": 1.4, "events": 1.4, "canaries": 1.4}
        ribbon_h = 0.85
    fig = _new_figure(ribbon_h + sum(heights[p] for p in panels) + 0.9)
    axes = list(fig.subplots(len(panels) + 1, 1, sharex=True,
                             gridspec_kw={"height_ratios": [ribbon_h] + [heights[p] for p in panels]}))
    ribbon, data_axes = axes[0], axes[1:]
    fig.suptitle(title, fontsize=TITLE_PT, fontweight="bold")

    last_values: list[tuple[Axes, float, float, str]] = []

    def line(ax: Axes, y: np.ndarray, label: str, colour: str, *, lw: float = LINE_W, ls: str = "-",
             last_of: str = "") -> None:
        """Plot ``y``; ``last_of`` (a column) writes that column's last reading at the line's end, from
        the raw rows (never a downsampled bucket): the number the banner shows for that reading."""
        ax.plot(x, y, label=label, color=colour, lw=lw, ls=ls)
        raw = _column(rows, last_of) if last_of else np.array([], dtype=float)
        finite = np.flatnonzero(~np.isnan(raw))
        if last_of and until_x is not None and len(finite):
            i = int(finite[-1])
            last_values.append((ax, float(x_all[i]), float(raw[i]), f"{raw[i]:,.0f}"))

    for name, ax in zip(panels, data_axes, strict=False):
        if name == "lag":
            line(ax, gauge("lag_pending"), "pending (num_pending)", "#1565c0", last_of="lag_pending")
            line(ax, gauge("lag_ack_pending"), "awaiting ack", "#00838f", lw=1.6)
            ax.set_title("Consumer lag (messages)", fontsize=PANEL_TITLE_PT, loc="left", fontweight="bold")
        elif name == "buffer":
            capacity, buffered = gauge("buffer_capacity"), gauge("buffer_size")
            line(ax, buffered, "buffered", "#ef6c00", last_of="buffer_size")
            text = "Gateway buffer (events)"
            if np.any(~np.isnan(capacity)):
                cap = float(np.nanmax(capacity))
                text += f", capacity {cap:,.0f}"
                if np.any(~np.isnan(buffered)) and float(np.nanmax(buffered)) > 0.2 * cap:
                    line(ax, capacity, "capacity", "#374151", lw=1.6, ls=":")
            dropped = counter("dropped_total")
            if np.any(~np.isnan(dropped)) and np.nanmax(dropped) > np.nanmin(dropped):
                line(ax, _rate(dropped, x), "dropped/s", _OUTCOME_COLOURS["lost"], lw=1.8)
            ax.set_title(text, fontsize=PANEL_TITLE_PT, loc="left", fontweight="bold")
        elif name == "retries":
            line(ax, _rate(counter("retries_total"), x), "retries/s", "#6d4c41")
            ax.set_title("NATS retry rate (per s)", fontsize=PANEL_TITLE_PT, loc="left", fontweight="bold")
        elif name == "events":
            line(ax, _rate(counter("stored_total"), x), "stored/s", "#2e7d32")
            line(ax, _rate(counter("published_total"), x), "published/s", "#9e9d24", lw=1.6)
            ax.set_title("Events per second", fontsize=PANEL_TITLE_PT, loc="left", fontweight="bold")
        elif name == "canaries":
            sent, failed = _rate(counter("canaries_sent"), x), _rate(counter("canaries_failed"), x)
            line(ax, sent - np.nan_to_num(failed), "accepted/s", _OUTCOME_COLOURS["stored"])
            line(ax, failed, "failed/s (user-facing)", _OUTCOME_COLOURS["rejected"])
            title = "Canaries (per s)"
            lost = [o for o in (getattr(canaries, "outcomes", None) or []) if o.outcome == "lost"]
            if canaries is not None and getattr(canaries, "outcomes", None):
                step = max(1.0, float(getattr(canaries, "interval_seconds", 1.0) or 1.0) * 4)
                bins = np.arange(min(x_all.min() if len(x_all) else 0.0, 0.0), x_end + step, step)
                sent_at = np.array([(_ts(o.sent_at) or origin) - origin for o in lost])
                counts, _ = np.histogram(sent_at, bins=bins) if len(bins) > 1 else (np.array([]), None)
                ax.step(bins[:-1], counts / step, where="post", color=_OUTCOME_COLOURS["lost"], lw=LINE_W,
                        label=f"lost/s (accepted, never stored: {len(lost)})")
                title = f"Canaries (per s): {len(lost)} lost"
            ax.set_title(title, fontsize=PANEL_TITLE_PT, loc="left", fontweight="bold")

    # the fault's window
    if partition is not None:
        a, b = _ts(partition[0]), _ts(partition[1])
        spans = [((a or origin) - origin, (b - origin) if b is not None else x_end)]
    else:
        spans = _runs(x_all, _column(rows, "fault_active")) if len(rows) else []
    phase_spans = [(n.replace("_", " "), a, min(b, x_end) if until_x is not None else b)
                   for n, a, b in _phase_spans(phases, origin, x_end) if until_x is None or a <= until_x]
    mark_x = [((_ts(at) or origin) - origin, words) for at, words in marks]
    mark_x = [(m, w) for m, w in mark_x if until_x is None or m <= until_x]

    x_start = min([float(x[0]) if len(x) else 0.0] + [a for _, a, _ in phase_spans] + [a for a, _ in spans])
    if until_x is not None and t0 is not None and until_x > 0:
        # live, once the fault is in: from a little before T+0, so the fault is not squeezed by pre-flight
        x_start = max(x_start, -max(10.0, 0.15 * until_x))
        phase_spans = [(n, max(a, x_start), b) for n, a, b in phase_spans if b > x_start]
    x_end = max([x_end] + ([] if until_x is not None else [b for _, _, b in phase_spans] + [m for m, _ in mark_x]))
    if x_end <= x_start:
        x_end = x_start + 60.0
    quiet = _quiet_spans(x, [gauge("lag_pending"), gauge("buffer_size")], phase_spans, spans,
                         [m for m, _ in mark_x], x_start, x_end) if until_x is None else []
    scale = _TimeScale(quiet, x_start, x_end)

    for ax in data_axes:
        for _, a, _b in phase_spans[1:]:
            ax.axvline(a, color=_PHASE_EDGE, lw=1.0, ls=(0, (1, 2)), zorder=0.6)
        for a, b in spans:
            ax.axvspan(a, b, facecolor=_PARTITION_COLOUR, alpha=0.10, hatch="//", edgecolor=_PARTITION_COLOUR,
                       lw=0, zorder=0.5)
            ax.axvline(a, color=_PARTITION_COLOUR, lw=1.6, ls="--")
            ax.axvline(b, color=_PARTITION_COLOUR, lw=1.6, ls="--")
        for a, b in quiet:
            ax.axvspan(a, b, facecolor="#f3f4f6", edgecolor=_COMPRESSED_COLOUR, hatch="..", lw=0, zorder=0.4)
        for m, _ in mark_x:
            ax.axvline(m, color=_MARK_COLOUR, lw=2.4, zorder=3)
        _style(ax)
        ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))  # a flat zero reads 0, not 0.00 ... 0.04
    for ax, at, value, text in last_values:
        ax.annotate(text, (at, value), xytext=(6, 0), textcoords="offset points", va="center",
                    fontsize=LABEL_PT, fontweight="bold", color=ax.lines[0].get_color(),
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.85, "lw": 0})

    # the ribbon: phases as blocks, the fault and the marks over them
    ribbon.set_ylim(0, 1)
    ribbon.set_yticks([])
    for side in ("top", "right", "left"):
        ribbon.spines[side].set_visible(False)
    for i, (_, a, b) in enumerate(phase_spans):
        ribbon.axvspan(a, b, 0, 1, facecolor=_PHASE_COLOURS[i % 2], edgecolor="white", lw=2)
    for a, b in spans:
        ribbon.axvspan(a, b, 0.0, 0.08, facecolor=_PARTITION_COLOUR, lw=0)
    for a, b in quiet:
        ribbon.axvspan(a, b, 0.0, 1.0, facecolor="#f3f4f6", edgecolor=_COMPRESSED_COLOUR, hatch="..", lw=0, zorder=2)
    ribbon.set_title("Phases", fontsize=PANEL_TITLE_PT, loc="left", fontweight="bold")

    legend = [Patch(facecolor=_PHASE_COLOURS[0], edgecolor=_PHASE_EDGE, label="phase (named above)"),
              Line2D([], [], color=_PHASE_EDGE, lw=1.0, ls=(0, (1, 2)), label="phase boundary")]
    if spans:
        legend += [Patch(facecolor=_PARTITION_COLOUR, alpha=0.25, hatch="//", edgecolor=_PARTITION_COLOUR,
                         label=f"{fault_word} in force"),
                   Line2D([], [], color=_PARTITION_COLOUR, lw=1.6, ls="--", label=f"{fault_word} start / end")]
    if mark_x:
        legend.append(Line2D([], [], color=_MARK_COLOUR, lw=2.4, label="stop / failure (named)"))
    if quiet:
        legend.append(Patch(facecolor="#f3f4f6", edgecolor=_COMPRESSED_COLOUR, hatch="..",
                            label="quiet: time compressed"))
    _legend_right(ribbon, legend)
    for ax in data_axes:
        _legend_right(ax)

    bottom = data_axes[-1] if data_axes else ribbon
    scale.apply(bottom)
    margin = 0.01 * (x_end - x_start)
    bottom.set_xlim(x_start - margin, x_end + (0.08 * (x_end - x_start) if last_values else margin))
    bottom.xaxis.set_major_locator(FixedLocator(scale.ticks(x_start, x_end, count=10)))
    # before T+0 is known the axis counts from the first sample, and says so: "+00:12", never "T+00:12"
    bottom.xaxis.set_major_formatter(FuncFormatter(_fmt_offset if t0 is not None else _fmt_since))
    bottom.set_xlabel("T-offset (min:s)" if t0 is not None else "time since the first sample (min:s; T+0 not "
                      "reached)", fontsize=LABEL_PT)
    if not len(rows) and data_axes:
        data_axes[0].text(0.5, 0.5, "no samples", transform=data_axes[0].transAxes, ha="center",
                          fontsize=LABEL_PT)

    labels = [(a, b, name) for name, a, b in phase_spans]
    for a, b in quiet:
        labels.append((a, b, f"≈ {b - a:.0f} s quiet (compressed)"))
    _place_labels(fig, ribbon, labels)
    top = data_axes[0] if data_axes else ribbon
    shown = float(scale.forward(x_end) - scale.forward(x_start)) or 1.0
    previous, level = -math.inf, 0
    for m, words in sorted(mark_x):
        where = float(scale.forward(m) - scale.forward(x_start)) / shown
        level = level + 1 if where - previous < 0.2 else 0  # marks close together: stacked, never overlapping
        previous = where
        right = where > 0.7  # near the right edge: the words go to the left of the line
        top.annotate(words, (m, 1.0), xycoords=("data", "axes fraction"), xytext=(-5 if right else 5, -5 - 30 * level),
                     textcoords="offset points", ha="right" if right else "left", va="top", fontsize=LABEL_PT,
                     fontweight="bold", color=_MARK_COLOUR, annotation_clip=False,
                     bbox={"boxstyle": "round,pad=0.2", "facecolor": "#fff59d", "lw": 0}).set_in_layout(False)
    return fig


def canary_figure(report: Any, t0: datetime | None = None) -> Figure:
    """The canaries over their send time: the end-to-end latency of those stored (top), and every
    canary counted by outcome per time bin (bottom: stored, duplicated, lost, rejected, stacked)."""
    fig = _new_figure(8.5)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.6, 1.0]})
    outcomes = list(getattr(report, "outcomes", []) or [])
    origin = _ts(t0) if t0 is not None else (_ts(outcomes[0].sent_at) if outcomes else 0.0)
    assert origin is not None
    sent_x = {id(o): (_ts(o.sent_at) or origin) - origin for o in outcomes}
    for outcome in ("stored", "duplicated"):
        chosen = [o for o in outcomes if o.outcome == outcome and o.latency_s is not None]
        if chosen:
            top.scatter([sent_x[id(o)] for o in chosen], [o.latency_s for o in chosen], s=36,
                        color=_OUTCOME_COLOURS[outcome], label=f"{outcome} ({len(chosen)})", zorder=3)
    interval = float(getattr(report, "interval_seconds", 1.0) or 1.0)
    windows = list(getattr(report, "loss_windows", []) or [])
    for ax in (top, bottom):
        for a, b in windows:
            ax.axvspan((_ts(a) or origin) - origin, (_ts(b) or origin) - origin + interval,
                       color=_OUTCOME_COLOURS["lost"], alpha=0.13, lw=0)
        _style(ax)
    top.set_ylabel("end-to-end latency (s)", fontsize=LABEL_PT)
    top.set_ylim(bottom=0)
    top.set_title("Latency of the canaries stored", fontsize=PANEL_TITLE_PT, loc="left", fontweight="bold")
    xs = list(sent_x.values())
    span = (max(xs) - min(xs)) if xs else 0.0
    step = max(interval * 4, _nice_step(span, 120) if span > 480 * interval else interval * 4)
    lo = math.floor(min(xs) / step) * step if xs else 0.0
    bins = np.arange(lo, (max(xs) if xs else 0.0) + 2 * step, step)
    stack = np.zeros(len(bins) - 1)
    for outcome, colour in _OUTCOME_COLOURS.items():
        chosen = [sent_x[id(o)] for o in outcomes if o.outcome == outcome]
        if not chosen:
            continue
        counts, _ = np.histogram(chosen, bins=bins)
        bottom.bar(bins[:-1], counts, width=step, bottom=stack, align="edge", color=colour,
                   edgecolor="white", lw=0.5, label=f"{outcome} ({len(chosen)})")
        stack += counts
    bottom.set_ylabel(f"canaries per {step:.0f} s" if step >= 10 else f"canaries per {step:.2g} s", fontsize=LABEL_PT)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    bottom.set_title("Every canary by outcome (lost = accepted, never stored)", fontsize=PANEL_TITLE_PT,
                     loc="left", fontweight="bold")
    rpo = getattr(report, "rpo_seconds", None)
    fig.suptitle(f"Canaries: {report.sent} sent, {report.stored} stored once, {report.duplicated} duplicated, "
                 f"{report.lost} lost, {report.rejected} rejected" + (f"; RPO {rpo:.1f} s" if rpo is not None else ""),
                 fontsize=TITLE_PT, fontweight="bold")
    handles = list(top.get_legend_handles_labels()[0])
    if windows:
        handles.append(Patch(facecolor=_OUTCOME_COLOURS["lost"], alpha=0.25, label="loss window (RPO)"))
    if handles:
        _legend_right(top, handles)
    if outcomes:
        _legend_right(bottom, bottom.get_legend_handles_labels()[0])
    bottom.xaxis.set_major_formatter(FuncFormatter(_fmt_offset))
    bottom.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 3, 5, 6, 10]))
    bottom.set_xlabel("sent at, T-offset (min:s)", fontsize=LABEL_PT)
    return fig


def history_figure(runs: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """RTO, RPO and event loss across runs (oldest first): bars coloured by status (green met, red
    missed, grey not measured, written "n/m"), each run's target drawn as a black bar across its column.
    A run is a mapping with ``run_id`` and the metric values (``rto_seconds``, ``rpo_seconds``,
    ``event_loss_count``; None = not measured) or ``{"value", "target", "status"}`` mappings, or a
    scorecard dict (``metrics`` list)."""
    names = (("rto_seconds", "RTO (s)"), ("rpo_seconds", "RPO (s)"), ("event_loss_count", "Events lost"))
    fig = _new_figure(10.0)
    axes = fig.subplots(len(names), 1, sharex=True)
    if title is None:
        ids = {str(r.get("gameday_id")) for r in runs if r.get("gameday_id")}
        title = f"{ids.pop()} across runs" if len(ids) == 1 else "Runs across gamedays" if ids else "Across runs"
    fig.suptitle(title, fontsize=TITLE_PT, fontweight="bold")
    labels = [str(r.get("run_id", i + 1)) for i, r in enumerate(runs)]
    xs = np.arange(len(runs))
    for ax, (name, label) in zip(axes, names, strict=True):
        values, targets, colours = [], [], []
        for run in runs:
            value, target, status = _metric(run, name)
            values.append(np.nan if value is None else float(value))
            targets.append(np.nan if target is None else float(target))
            colours.append({"pass": "#2e7d32", "fail": "#c62828"}.get(status or "", "#9ca3af"))
        ax.bar(xs, np.nan_to_num(values), color=colours, width=0.6)
        top = max([v for v in values + targets if not math.isnan(v)] + [1.0])
        for x, v in zip(xs, values, strict=False):
            text = "n/m" if math.isnan(v) else f"{v:g}"
            ax.text(x, 0 if math.isnan(v) else v, text, ha="center", va="bottom", fontsize=TICK_PT,
                    color="#6b7280" if math.isnan(v) else "#111111")
        if any(not math.isnan(t) for t in targets):
            ax.hlines(targets, xs - 0.42, xs + 0.42, colors="#111111", lw=3, label="target")
        ax.set_ylim(0, top * 1.25)
        ax.set_ylabel(label, fontsize=LABEL_PT)
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(labelsize=TICK_PT)
    legend = [Patch(facecolor="#2e7d32", label="met"), Patch(facecolor="#c62828", label="missed"),
              Patch(facecolor="#9ca3af", label="not measured (n/m)"),
              Line2D([], [], color="#111111", lw=3, label="target")]
    _legend_right(axes[0], legend)
    axes[-1].set_xticks(xs, labels, rotation=30, ha="right", fontsize=TICK_PT)
    return fig


def _metric(run: Mapping[str, Any], name: str) -> tuple[Any, Any, str | None]:
    for m in run.get("metrics") or []:
        if isinstance(m, Mapping) and m.get("name") == name:
            return m.get("value"), m.get("target"), m.get("status")
    value = run.get(name)
    if isinstance(value, Mapping):
        return value.get("value"), value.get("target"), value.get("status")
    return value, run.get(f"{name}_target"), run.get(f"{name}_status")


# -- the runbook's adapter ----------------------------------------------------------------------------


def phases_from_journal(entries: Iterable[Mapping[str, Any]]) -> list[tuple[str, datetime, datetime | None]]:
    """``(phase, start, end)`` from the journal's ``phase.started`` / ``phase.finished`` entries."""
    phases: list[tuple[str, datetime, datetime | None]] = []
    open_at: dict[str, int] = {}
    for e in entries:
        kind, phase, ts = e.get("kind"), e.get("phase"), e.get("ts")
        if not phase or not ts:
            continue
        at = datetime.fromisoformat(str(ts))
        if kind == "phase.started":
            open_at[phase] = len(phases)
            phases.append((phase, at, None))
        elif kind == "phase.finished" and phase in open_at:
            i = open_at.pop(phase)
            phases[i] = (phases[i][0], phases[i][1], at)
    return phases


def _partition_from_journal(entries: Sequence[Mapping[str, Any]]) -> tuple[Any, Any] | None:
    start = end = None
    for e in entries:
        if e.get("kind") == "fault.active" and start is None:
            start = e.get("t0") or e.get("at") or e.get("ts")
        elif e.get("kind") == "fault.healed" and start is not None and end is None:
            end = e.get("at") or e.get("ts")
    return (start, end) if start is not None else None


def timeline(
    frame: Any,
    journal_entries: Sequence[Mapping[str, Any]],
    t0: datetime | None = None,
    title: str = "Gameday timeline",
    *,
    canaries: Any = None,
    panels: Sequence[str] = PANELS,
    until: Any = None,
) -> Figure:
    """``timeline_figure`` with phases, the fault's window and the stop/failure marks read from the
    journal (``canaries``: the final canary report, for the lost canaries' series)."""
    entries = list(journal_entries)
    # The journal has the exact moments (T+0 confirmed, heal confirmed); the samples' fault_active
    # column is only as fine as the sample interval, so it is the fallback.
    return timeline_figure(frame, phases_from_journal(entries), t0, partition=_partition_from_journal(entries),
                           marks=marks_from_journal(entries), canaries=canaries, panels=panels, until=until,
                           title=title)

