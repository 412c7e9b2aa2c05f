"""Charts render to PNG from the sampler's DataFrame with the expected panels, phases, the fault's
window (from the journal's ``fault.*`` moments, else the ``fault_active`` column) and downsampling."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gamedaylib.canary import CanaryResult, account, canary_key
from gamedaylib.charts import (
    MAX_POINTS,
    canary_figure,
    history_figure,
    phases_from_journal,
    timeline,
    timeline_figure,
)
from gamedaylib.clock import Clock, utcnow
from gamedaylib.readings import Reading
from gamedaylib.sampler import Sampler, read_samples

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 11, 28, 4, 0, tzinfo=timezone.utc)


def _rows(n: int, step: float = 1.0) -> pd.DataFrame:
    """A gameday-shaped series as ``Sampler.frame()`` gives it: the fault in force from T+0 to T+60,
    a one-sample lag spike at T+60."""
    rows = []
    for i in range(n):
        t = -30 + i * step
        cut = 0 <= t < 60
        rows.append(
            {
                "ts": T0.timestamp() + t,
                "t_offset_s": t,
                "phase": "buffering" if cut else "preflight",
                "lag_pending": 5000.0 if abs(t - 60) < step / 2 else (min(t, 60) * 10 if t > 0 else 0.0),
                "lag_ack_pending": 1.0,
                "buffer_size": t * 5 if cut else 0.0,
                "buffer_capacity": 10000.0,
                "retries_total": i * 2.0,
                "stored_total": i * 5.0 if not cut else 150.0,
                "published_total": i * 5.0,
                "canaries_sent": i * 2.0,
                "canaries_failed": 0.0,
                "fault_active": 1.0 if cut else 0.0,
            }
        )
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)  # as Sampler.frame() makes it
    return frame


class Script:
    """A reader whose n-th reading holds lag n."""

    reading_type = Reading

    def __init__(self) -> None:
        self.n = 0

    def read(self) -> Reading:
        self.n += 1
        return Reading(at=utcnow(), lag_pending=float(self.n))

    def close(self) -> None:
        pass


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


def test_timeline_has_five_panels_phases_and_partition() -> None:
    rows = _rows(150)
    phases = [
        ("preflight", T0 - timedelta(seconds=30), T0),
        ("buffering", T0, T0 + timedelta(seconds=60)),
        ("heal", T0 + timedelta(seconds=60), None),
    ]
    fig = timeline_figure(rows, phases, t0=T0)
    png = _png(fig)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == [
        "Phases",  # the ribbon naming the phases above the panels
        "Consumer lag (messages)",
        "Gateway buffer (events), capacity 10,000",
        "NATS retry rate (per s)",
        "Events per second",
        "Canaries (per s)",
    ]
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["preflight", "buffering", "heal"]
    top = fig.axes[1]
    hatched = [p for p in top.patches if p.get_hatch() == "//"]
    assert len(hatched) == 1  # the partition window
    x0, x1 = hatched[0].get_x(), hatched[0].get_x() + hatched[0].get_width()
    assert (x0, x1) == pytest.approx((0, 60))
    # Rates derived from counters: 2 retries per 1 s sample.
    retry_line = fig.axes[3].lines[0]
    assert retry_line.get_ydata()[5] == pytest.approx(2.0)
    # Stored events stall during the partition.
    stored = fig.axes[4].lines[0].get_ydata()
    assert stored[60] == 0 and stored[10] == pytest.approx(5.0)
    tick_text = fig.axes[-1].xaxis.get_major_formatter()(90, 0)
    assert tick_text == "T+01:30"
    assert fig.axes[-1].xaxis.get_major_formatter()(-30, 0) == "T-00:30"


def test_two_hours_at_1hz_is_downsampled_without_losing_the_peak() -> None:
    rows = _rows(7200)
    fig = timeline_figure(rows, [], t0=T0)
    lag = fig.axes[1].lines[0]
    assert len(lag.get_xdata()) <= MAX_POINTS
    assert max(lag.get_ydata()) == 5000.0  # the one-sample spike survives (bucket maximum)
    assert list(lag.get_xdata()) == sorted(lag.get_xdata()) and lag.get_xdata()[-1] == pytest.approx(7169)


def test_timeline_from_journal_entries_and_no_rows() -> None:
    entries = [
        {"kind": "phase.started", "phase": "preflight", "ts": (T0 - timedelta(seconds=30)).isoformat()},
        {"kind": "phase.finished", "phase": "preflight", "ts": T0.isoformat()},
        {"kind": "fault.active", "phase": "injection", "ts": T0.isoformat(), "t0": T0.isoformat()},
        {"kind": "phase.started", "phase": "injection", "ts": T0.isoformat()},
        {"kind": "fault.healed", "phase": "heal", "ts": (T0 + timedelta(seconds=25)).isoformat(),
         "at": (T0 + timedelta(seconds=20)).isoformat()},
    ]
    phases = phases_from_journal(entries)
    assert [(p, e is None) for p, _, e in phases] == [("preflight", False), ("injection", True)]
    rows = _rows(150)  # fault_active says 0..60 s; the journal's exact moments (0..20 s, healed "at") win
    fig = timeline(rows, entries, t0=T0)
    hatched = [p for p in fig.axes[1].patches if p.get_hatch() == "//"]
    assert len(hatched) == 1 and hatched[0].get_width() == pytest.approx(20)
    assert _png(timeline(pd.DataFrame(), entries, t0=None)).startswith(b"\x89PNG")


def test_canary_figure_shows_every_outcome() -> None:
    results = [
        CanaryResult(i, canary_key("R", i), T0 + timedelta(seconds=i / 2), 503 if i == 7 else 202, None, 3.0)
        for i in range(1, 21)
    ]

    class Info:
        def __init__(self, count: int, at: datetime) -> None:
            self.count, self.first_created_at, self.last_created_at = count, at, at

    table = {
        r.key: Info(2 if r.seq == 12 else 1, r.sent_at + timedelta(seconds=0.2))
        for r in results
        if r.seq not in (9, 10)
    }
    report = account(results, lambda keys: table)
    fig = canary_figure(report, t0=T0)
    title = fig._suptitle.get_text()
    assert "2 lost" in title and "1 rejected" in title and "1 duplicated" in title
    ax = fig.axes[1]  # every canary counted by outcome (the top panel: latency of those stored)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        "duplicated (1)",
        "lost (2)",
        "rejected (1)",
        "stored (16)",
    ]
    assert _png(fig).startswith(b"\x89PNG")


def test_history_figure_across_runs() -> None:
    runs = [
        {
            "run_id": "r1",
            "metrics": [
                {"name": "rto_seconds", "value": 40, "target": 120, "status": "pass"},
                {"name": "rpo_seconds", "value": 0, "target": 30, "status": "pass"},
                {"name": "event_loss_count", "value": 0, "target": 0, "status": "pass"},
            ],
        },
        {"run_id": "r2", "rto_seconds": 150, "rpo_seconds": None, "event_loss_count": 12},
    ]
    fig = history_figure(runs, title="GAMEDAY-001 across runs")
    assert fig._suptitle is not None and fig._suptitle.get_text() == "GAMEDAY-001 across runs"
    assert [ax.get_ylabel() for ax in fig.axes] == ["RTO (s)", "RPO (s)", "Events lost"]
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [40, 150]
    assert [t.get_text() for t in fig.axes[1].texts] == ["0", "n/m"]  # a zero bar is labelled; unmeasured says so
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["r1", "r2"]
    assert _png(fig).startswith(b"\x89PNG")


def test_a_chart_of_the_archived_samples_is_the_chart_of_the_run(tmp_path: Path) -> None:
    """The analyst's ``read_samples`` gives the frame the run charted: same points on the same axis."""
    clock = Clock()
    sampler = Sampler(Script(), 1, tmp_path / "samples.csv", clock=clock).open()
    sampler.mark_phase("preflight")
    for _ in range(5):
        sampler.tick()
    clock.t0 = datetime.now(timezone.utc) - timedelta(seconds=2)
    sampler.stop()
    live = timeline_figure(sampler.frame(), [], t0=clock.t0)
    archived_frame = read_samples(tmp_path / "samples.csv")
    archived = timeline_figure(archived_frame, [], t0=clock.t0)
    x_live, x_archived = live.axes[1].lines[0].get_xdata(), archived.axes[1].lines[0].get_xdata()
    assert list(x_archived) == pytest.approx(list(x_live), abs=0.002)
    assert -5 < x_live[0] < 5  # seconds around T+0, not seconds since 1970
    assert list(archived.axes[1].lines[0].get_ydata()) == [1, 2, 3, 4, 5]
