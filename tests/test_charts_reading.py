"""The charts as a room and an analyst read them: type large enough for a shared screen, phase names that
never overlap, a legend for every background element, the stop moment marked, a long quiet wait that
does not squeeze the gameday into a sliver, lost canaries as their own series (counts, not points at a
made-up latency), and a live chart that ends at the banner's reading and writes its number."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.text import Annotation

from gamedaylib.canary import CanaryResult, account, canary_key
from gamedaylib.charts import (
    DPI,
    LIVE_PANELS,
    MAX_POINTS,
    canary_figure,
    history_figure,
    timeline,
    timeline_figure,
)

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 12, 1, 23, 19, 37, tzinfo=timezone.utc)
# a rehearsal as it ran: short closing phases, then a 110 s wait for an alert, then the post-mortem
PHASES = [("preflight", -10, 0), ("injection", 0, 0.5), ("buffering", 0.5, 10), ("heal", 10, 22),
          ("replay", 22, 30), ("rto", 30, 30.4), ("rpo", 30.4, 31), ("incident_response", 31, 141),
          ("postmortem", 141, 142)]


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _frame(start: float = -10, end: float = 142, step: float = 1.0) -> pd.DataFrame:
    rows = []
    for t in np.arange(start, end + step / 2, step):
        cut = 0 <= t < 20
        buffered = min(20.0, max(0.0, t * 5)) if cut else 0.0
        rows.append({
            "ts": _at(float(t)).isoformat(), "phase": "", "lag_pending": 0.0, "lag_ack_pending": 4.0,
            "buffer_size": buffered, "buffer_capacity": 20.0, "buffer_fraction_max": buffered / 10.0,
            "dropped_total": max(0.0, (t - 4) * 6),
            "retries_total": float(max(0, int(t))), "stored_total": 5.0 * t, "published_total": 5.0 * t,
            "canaries_sent": 2.0 * (t + 10), "canaries_failed": 0.0, "alerts_firing": 0.0,
            "fault_active": 1.0 if cut else 0.0,
        })
    frame = pd.DataFrame(rows)
    frame["dropped_total"] = frame["dropped_total"].clip(upper=127.0)
    return frame


def _journal(stop_at: float | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for name, a, b in PHASES:
        entries.append({"kind": "phase.started", "phase": name, "ts": _at(a).isoformat()})
        entries.append({"kind": "phase.finished", "phase": name, "status": "ok", "ts": _at(b).isoformat()})
    entries.append({"kind": "fault.active", "phase": "injection", "t0": T0.isoformat(), "ts": T0.isoformat()})
    entries.append({"kind": "fault.healed", "phase": "heal", "at": _at(20).isoformat(), "ts": _at(20).isoformat()})
    if stop_at is not None:
        entries.append({"kind": "stop_condition", "phase": "buffering", "condition": "stop_buffer_fraction",
                        "ts": _at(stop_at).isoformat()})
    return sorted(entries, key=lambda e: e["ts"])


def _report(lost: set[int], duplicated: set[int] = frozenset(), rejected: set[int] = frozenset()) -> Any:
    results = [CanaryResult(i, canary_key("R", i), _at(-5 + i / 2), 503 if i in rejected else 202, None, 3.0)
               for i in range(1, 61)]

    class Info:
        def __init__(self, count: int, at: datetime) -> None:
            self.count, self.first_created_at, self.last_created_at = count, at, at

    table = {r.key: Info(2 if r.seq in duplicated else 1, r.sent_at + timedelta(seconds=0.4))
             for r in results if r.seq not in lost and r.seq not in rejected}
    return account(results, lambda keys: table)


def _drawn(fig: Any) -> Any:
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def test_phase_names_are_horizontal_and_never_overlap() -> None:
    fig = timeline(_frame(), _journal(), t0=T0, title="GAMEDAY-001 timeline")
    renderer = _drawn(fig)
    ribbon = fig.axes[0]
    names = [t for t in ribbon.texts if t.get_text().replace(" ", "_") in {n for n, _, _ in PHASES}]
    assert sorted(t.get_text() for t in names) == sorted(n.replace("_", " ") for n, _, _ in PHASES)
    assert all(t.get_rotation() == 0 for t in names)
    boxes = [t.get_window_extent(renderer) for t in ribbon.texts]
    overlapping = [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in combinations(zip(ribbon.texts, boxes), 2)
                   if ba.overlaps(bb)]
    assert not overlapping
    figure_box = fig.bbox
    assert all(figure_box.x0 <= b.x0 and b.x1 <= figure_box.x1 for b in boxes)  # none pushed off the image


def test_every_background_element_has_a_legend_entry() -> None:
    fig = timeline(_frame(), _journal(stop_at=4), t0=T0)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["phase (named above)", "phase boundary", "partition in force", "partition start / end",
                      "stop / failure (named)", "quiet: time compressed"]
    buffer = fig.axes[2]
    assert buffer.get_title(loc="left") == "Gateway buffer (events), capacity 20"
    assert [t.get_text() for t in buffer.get_legend().get_texts()] == ["buffered", "capacity", "dropped/s"]


def test_the_stop_moment_is_a_named_line_on_every_panel() -> None:
    fig = timeline(_frame(), _journal(stop_at=4), t0=T0)
    for ax in fig.axes[1:]:
        solid = [line for line in ax.lines if line.get_color() == "#111111" and line.get_linestyle() == "-"]
        assert [list(line.get_xdata()) for line in solid] == [[4.0, 4.0]]
    words = [t.get_text() for t in fig.axes[1].texts if isinstance(t, Annotation)]
    assert "stopped: stop_buffer_fraction" in words


def test_a_long_quiet_wait_does_not_squeeze_the_gameday() -> None:
    fig = timeline(_frame(), _journal(), t0=T0)
    _drawn(fig)
    ax = fig.axes[-1]
    to_px = ax.transData.transform
    left, right = ax.get_window_extent().x0, ax.get_window_extent().x1
    gameday = (to_px((31, 0))[0] - to_px((-10, 0))[0]) / (right - left)
    assert gameday > 0.6, f"the fault and recovery take only {gameday:.0%} of the width"
    assert any("quiet (compressed)" in t.get_text() for t in fig.axes[0].texts)
    # the time axis still reads true: ticks are T-offsets, no two labels overlap
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert labels[0].get_text().startswith("T-") and labels[-1].get_text() >= "T+02:00"
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not [1 for a, b in combinations(boxes, 2) if a.overlaps(b)]


def test_a_short_run_is_drawn_at_full_scale() -> None:
    frame = _frame(end=40)
    journal = [e for e in _journal() if e.get("phase") not in ("incident_response", "postmortem")]
    fig = timeline(frame, journal, t0=T0)
    assert fig.axes[-1].get_xscale() == "linear"
    assert not any("compressed" in t.get_text() for t in fig.axes[0].texts)


def test_type_is_large_enough_for_a_room() -> None:
    fig = timeline(_frame(), _journal(stop_at=4), t0=T0, canaries=_report({20, 21}))
    _drawn(fig)
    assert fig.get_figwidth() * DPI >= 1600
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
             if t.get_text() and t.get_visible()]
    small = {(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 12}
    assert not small, small


def test_lost_canaries_are_their_own_series_in_the_timeline() -> None:
    fig = timeline(_frame(), _journal(), t0=T0, canaries=_report(lost={20, 21, 22, 23}))
    canary_ax = fig.axes[-1]
    assert canary_ax.get_title(loc="left") == "Canaries (per s): 4 lost"
    lost = next(line for line in canary_ax.lines if line.get_label().startswith("lost/s"))
    step = 2.0  # four canary intervals of 0.5 s
    assert float(np.nansum(lost.get_ydata()[:-1])) * step == pytest.approx(4)


def test_canary_figure_counts_lost_canaries_instead_of_plotting_a_made_up_latency() -> None:
    report = _report(lost={9, 10}, duplicated={12}, rejected={7})
    fig = canary_figure(report, t0=T0)
    latency, counts = fig.axes[0], fig.axes[1]
    points = sum(len(c.get_offsets()) for c in latency.collections)
    assert points == report.stored + report.duplicated  # only canaries that have a latency
    assert [t.get_text() for t in latency.get_legend().get_texts()] == ["stored (56)", "duplicated (1)",
                                                                        "loss window (RPO)"]
    heights: dict[str, float] = {}
    for container in counts.containers:
        heights[container.get_label()] = sum(p.get_height() for p in container.patches)
    assert heights == {"stored (56)": 56, "duplicated (1)": 1, "lost (2)": 2, "rejected (1)": 1}
    assert "2 lost" in fig.get_suptitle() and "1 rejected" in fig.get_suptitle()


def test_live_chart_ends_at_the_banners_reading_and_writes_its_number() -> None:
    frame = _frame(step=0.05)  # 3,000 rows: downsampled, buckets keep their maximum
    assert len(frame) > MAX_POINTS
    k = 300  # the reading the banner shows: buffer 20 at T+05:00 ... take one in the ramp instead
    k = int(np.argmax(frame["buffer_size"].to_numpy() > 7.0))
    until = frame["ts"].iloc[k]
    fig = timeline_figure(frame, [(n, _at(a), _at(b)) for n, a, b in PHASES], T0, panels=LIVE_PANELS, until=until)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[1:] == ["Consumer lag (messages)", "Gateway buffer (events), capacity 20", "Canaries (per s)"]
    buffer = fig.axes[2]
    written = [t.get_text() for t in buffer.texts if isinstance(t, Annotation)]
    assert written == [f"{frame['buffer_size'].iloc[k]:,.0f}"]
    assert max(buffer.lines[0].get_xdata()) <= (pd.Timestamp(until) - pd.Timestamp(T0)).total_seconds() + 1e-6


def test_history_draws_each_runs_target() -> None:
    runs = [
        {"gameday_id": "GAMEDAY-001", "run_id": "r1",
         "metrics": [{"name": "rto_seconds", "value": 40, "target": 120, "status": "pass"},
                     {"name": "rpo_seconds", "value": 0, "target": 30, "status": "pass"},
                     {"name": "event_loss_count", "value": 0, "target": 0, "status": "pass"}]},
        {"gameday_id": "GAMEDAY-001", "run_id": "r2", "rto_seconds": {"value": 150, "target": 120, "status": "fail"},
         "rpo_seconds": {"value": None, "target": 30, "status": "not_measured"},
         "event_loss_count": {"value": 12, "target": 0, "status": "fail"}},
    ]
    fig = history_figure(runs)
    assert fig.get_suptitle() == "GAMEDAY-001 across runs"
    rto = fig.axes[0]
    targets = [c for c in rto.collections if isinstance(c, LineCollection)]
    assert len(targets) == 1 and [float(seg[0][1]) for seg in targets[0].get_segments()] == [120.0, 120.0]
    assert [p.get_height() for p in rto.patches] == [40, 150]
    assert [t.get_text() for t in fig.axes[1].texts] == ["0", "n/m"]
    assert "target" in [t.get_text() for t in rto.get_legend().get_texts()]
