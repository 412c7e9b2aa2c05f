"""Charts of a gameday with matplotlib: the timeline (phases shaded and labelled, the fault
highlighted), the canaries, and the history across runs. The time series come as the sampler's
pandas DataFrame (``Sampler.frame()``, ``read_samples``).

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, any backend, Agg in
headless runs) and returned; the caller saves or displays them. The x axis is the T-offset in
minutes:seconds (``T+01:30``); before T+0 is known, offsets count from the first sample.
Long series (2 h at 1 Hz) are downsampled for plotting: gauges keep each bucket's maximum (a peak is
never hidden), counters keep the bucket's last value so rates stay exact over the wider step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from gamedaylib.clock import format_offset, parse_time

__all__ = [
    "MAX_POINTS",
    "canary_figure",
    "history_figure",
    "phases_from_journal",
    "save",
    "timeline",
    "timeline_figure",
]

MAX_POINTS = 1500  # points per line after downsampling

_PHASE_COLOURS = ("#e8eef7", "#f6f1e4")
_PARTITION_COLOUR = "#d62728"
_OUTCOME_COLOURS = {"stored": "#2ca02c", "duplicated": "#ff7f0e", "lost": "#d62728", "rejected": "#9467bd"}



def _ts(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (datetime, str)):
        return parse_time(value.replace("Z", "+00:00") if isinstance(value, str) else value).timestamp()
    return float(value)


def _fmt_offset(seconds: float, _pos: Any = None) -> str:
    """A tick label (``FuncFormatter`` passes the tick position too)."""
    return format_offset(seconds)


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def save(fig: Figure, path: Any, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG (static: no widget, no script)."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


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


_WIDE = 0.06  # a phase at least this wide (fraction of the axis) is labelled horizontally, centred
_LABEL_GAP = 0.025  # narrow phases starting closer than this to a vertical label share that label


def _label_phases(top: Any, spans: Sequence[tuple[str, float, float]], width: float) -> None:
    """Phase names in the top panel: a wide phase centred inside it (staggered on two rows); a narrow
    one written upwards at its start. Narrow phases starting within ``_LABEL_GAP`` of the previous
    vertical label (the short closing phases of a rehearsal) share it, as ``first – last``, instead of
    being drawn on top of each other."""
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "lw": 0}
    where = {"transform": top.get_xaxis_transform(), "va": "top", "clip_on": True, "bbox": box}
    group: list[tuple[str, float]] = []  # (name, start) of the narrow phases under one vertical label

    def vertical() -> None:
        if group:
            name = group[0][0] if len(group) == 1 else f"{group[0][0]} – {group[-1][0]}"
            label = top.text(group[0][1], 0.97, name, ha="left", rotation=90, fontsize=6, **where)
            label.set_in_layout(False)
            group.clear()

    for i, (name, a, b) in enumerate(spans):
        if b - a >= _WIDE * width:
            vertical()
            y = 0.97 if i % 2 == 0 else 0.84
            top.text((a + b) / 2, y, name, ha="center", fontsize=7, **where).set_in_layout(False)
        else:
            if group and a - group[0][1] >= _LABEL_GAP * width:
                vertical()
            group.append((name, a))
    vertical()


def _shade(
    axes: Iterable[Any],
    phases: Sequence[tuple[str, Any, Any]],
    partitions: Sequence[tuple[float, float]],
    origin: float,
    x_end: float,
) -> None:
    axes = list(axes)
    spans = []
    for name, start, end in phases:
        a = (_ts(start) or origin) - origin
        end_ts = _ts(end)
        spans.append((str(name), a, end_ts - origin if end_ts is not None else x_end))
    for i, (_, a, b) in enumerate(spans):
        for ax in axes:
            ax.axvspan(a, b, color=_PHASE_COLOURS[i % 2], zorder=0, lw=0)
    width = max(x_end - min([a for _, a, _ in spans] + [0.0]), 1.0)
    _label_phases(axes[0], spans, width)
    for a, b in partitions:
        for ax in axes:
            ax.axvspan(
                a,
                b,
                facecolor=_PARTITION_COLOUR,
                alpha=0.12,
                hatch="//",
                edgecolor=_PARTITION_COLOUR,
                lw=0,
                zorder=0.5,
            )
            ax.axvline(a, color=_PARTITION_COLOUR, lw=0.8, ls="--")
            ax.axvline(b, color=_PARTITION_COLOUR, lw=0.8, ls="--")


def timeline_figure(
    frame: pd.DataFrame,
    phases: Sequence[tuple[str, Any, Any]] = (),
    t0: datetime | None = None,
    *,
    partition: tuple[Any, Any] | None = None,
    max_points: int = MAX_POINTS,
    title: str = "Gameday timeline",
) -> Figure:
    """Five panels over T-offset: consumer lag, gateway buffer, retry rate, events per second,
    canary outcomes. ``partition`` = (start, end) of the fault overrides the ``fault_active`` column."""
    fig = Figure(figsize=(11, 11), layout="constrained")
    axes = fig.subplots(5, 1, sharex=True)
    fig.suptitle(title)
    if "ts" in frame and len(frame):
        stamps = pd.to_datetime(frame["ts"], utc=True)
        frame = frame[stamps.notna()]
        # seconds since the epoch whatever the resolution (pandas 3 gives datetime64[us], 2 gave [ns])
        since_epoch = stamps[stamps.notna()] - pd.Timestamp(0, tz="UTC")
        ts = (since_epoch / pd.Timedelta(seconds=1)).to_numpy(dtype=float)
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
    x_end = float(x[-1]) if len(x) else 60.0

    def gauge(name: str) -> np.ndarray:
        return _gauge(_column(rows, name), edges)

    def counter(name: str) -> np.ndarray:
        return _last(_column(rows, name), edges)

    lag_ax, buf_ax, retry_ax, eps_ax, canary_ax = axes
    lag_ax.plot(x, gauge("lag_pending"), label="pending", color="#1f77b4")
    lag_ax.plot(x, gauge("lag_ack_pending"), label="ack pending", color="#17becf", lw=0.8)
    lag_ax.set_title("Consumer lag (messages)", fontsize=9, loc="left")
    buf_ax.plot(x, gauge("buffer_size"), label="buffered", color="#ff7f0e")
    capacity, buffered = gauge("buffer_capacity"), gauge("buffer_size")
    buf_title = "Gateway buffer (events)"
    if np.any(~np.isnan(capacity)):
        cap = float(np.nanmax(capacity))
        buf_title += f", capacity {cap:g}"
        if np.any(~np.isnan(buffered)) and float(np.nanmax(buffered)) > 0.2 * cap:
            buf_ax.plot(x, capacity, label="capacity", color="grey", ls=":", lw=0.8)
    buf_ax.set_title(buf_title, fontsize=9, loc="left")
    retry_ax.plot(x, _rate(counter("retries_total"), x), color="#8c564b", label="retries/s")
    retry_ax.set_title("NATS retry rate (per s)", fontsize=9, loc="left")
    eps_ax.plot(x, _rate(counter("stored_total"), x), color="#2ca02c", label="stored/s")
    eps_ax.plot(x, _rate(counter("published_total"), x), color="#bcbd22", lw=0.8, label="published/s")
    eps_ax.set_title("Events per second", fontsize=9, loc="left")
    sent, failed = _rate(counter("canaries_sent"), x), _rate(counter("canaries_failed"), x)
    canary_ax.plot(x, sent - np.nan_to_num(failed), color=_OUTCOME_COLOURS["stored"], label="accepted/s")
    canary_ax.plot(x, failed, color=_OUTCOME_COLOURS["rejected"], label="failed/s (user-facing)")
    canary_ax.set_title("Canary outcomes (per s)", fontsize=9, loc="left")

    if partition is not None:
        a, b = _ts(partition[0]), _ts(partition[1])
        spans = [((a or origin) - origin, (b - origin) if b is not None else x_end)]
    else:
        spans = _runs(x_all, _column(rows, "fault_active")) if len(rows) else []
    _shade(axes, phases, spans, origin, x_end)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        if ax.lines:  # outside, to the right: never over the data or the phase labels
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, borderaxespad=0)
        ax.tick_params(labelsize=8)
    canary_ax.xaxis.set_major_formatter(FuncFormatter(_fmt_offset))
    canary_ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 3, 5, 6, 10]))
    canary_ax.set_xlabel(
        "T-offset (min:s)" if t0 is not None else "time since first sample (min:s; T+0 unknown)"
    )
    if not len(rows):
        lag_ax.text(0.5, 0.5, "no samples", transform=lag_ax.transAxes, ha="center")
        canary_ax.set_xlim(0, max(60.0, x_end))
    return fig


def canary_figure(report: Any, t0: datetime | None = None) -> Figure:
    """Each canary at its send time: end-to-end latency when stored, a marker row when not."""
    fig = Figure(figsize=(11, 3.5), layout="constrained")
    ax = fig.subplots()
    outcomes = list(getattr(report, "outcomes", []) or [])
    origin = _ts(t0) if t0 is not None else (_ts(outcomes[0].sent_at) if outcomes else 0.0)
    assert origin is not None
    top = max((o.latency_s for o in outcomes if o.latency_s is not None), default=1.0)
    for outcome, colour in _OUTCOME_COLOURS.items():
        chosen = [o for o in outcomes if o.outcome == outcome]
        if not chosen:
            continue
        xs = [(_ts(o.sent_at) or origin) - origin for o in chosen]
        if outcome in ("stored", "duplicated"):
            ys = [o.latency_s if o.latency_s is not None else 0.0 for o in chosen]
        else:
            ys = [top * (1.15 if outcome == "lost" else 1.3)] * len(chosen)
        ax.scatter(
            xs,
            ys,
            s=10,
            color=colour,
            label=f"{outcome} ({len(chosen)})",
            marker="o" if outcome in ("stored", "duplicated") else "x",
        )
    for a, b in getattr(report, "loss_windows", []) or []:
        ax.axvspan(
            (_ts(a) or origin) - origin,
            (_ts(b) or origin) - origin + report.interval_seconds,
            color=_OUTCOME_COLOURS["lost"],
            alpha=0.15,
        )
    ax.set_title(
        f"Canaries: {report.sent} sent, {report.stored} stored once, {report.duplicated} duplicated, "
        f"{report.lost} lost, {report.rejected} rejected; RPO {report.rpo_seconds:g} s",
        fontsize=9,
    )
    ax.set_ylabel("end-to-end latency (s)")
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_offset))
    ax.set_xlabel("sent at, T-offset (min:s)")
    ax.grid(True, alpha=0.3)
    if outcomes:
        ax.legend(loc="upper right", fontsize=7)
    return fig


def history_figure(runs: Sequence[Mapping[str, Any]]) -> Figure:
    """RTO, RPO and event loss across runs (oldest first). A run is a mapping with ``run_id`` and the
    metric values (``rto_seconds``, ``rpo_seconds``, ``event_loss_count``; None = not measured), or a
    scorecard dict (``metrics`` list)."""
    names = (("rto_seconds", "RTO (s)"), ("rpo_seconds", "RPO (s)"), ("event_loss_count", "Events lost"))
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True)
    fig.suptitle("GAMEDAY-001 across runs")
    labels = [str(r.get("run_id", i + 1)) for i, r in enumerate(runs)]
    xs = np.arange(len(runs))
    for ax, (name, label) in zip(axes, names):
        values, targets, colours = [], [], []
        for run in runs:
            value, target, status = _metric(run, name)
            values.append(np.nan if value is None else float(value))
            targets.append(np.nan if target is None else float(target))
            colours.append({"pass": "#2ca02c", "fail": "#d62728"}.get(status or "", "#7f7f7f"))
        ax.bar(xs, np.nan_to_num(values), color=colours)
        for x, v in zip(xs, values):
            if math.isnan(v):
                ax.text(x, 0, "n/m", ha="center", va="bottom", fontsize=7, color="#7f7f7f")
        if any(not math.isnan(t) for t in targets):
            ax.step(xs, targets, where="mid", color="black", ls="--", lw=0.8, label="target")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1].set_xticks(xs, labels, rotation=30, ha="right", fontsize=7)
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
    frame: pd.DataFrame,
    journal_entries: Sequence[Mapping[str, Any]],
    t0: datetime | None = None,
    title: str = "Gameday timeline",
) -> Figure:
    """``timeline_figure`` with phases and the fault's window read from the journal."""
    entries = list(journal_entries)
    # The journal has the exact moments (T+0 confirmed, heal confirmed); the samples' fault_active
    # column is only as fine as the sample interval, so it is the fallback.
    return timeline_figure(frame, phases_from_journal(entries), t0, partition=_partition_from_journal(entries),
                           title=title)
