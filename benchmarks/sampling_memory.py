"""A full-profile gameday's sampling (2 hours at 1 Hz = 7,200 samples), simulated faster: memory and sizes.

    python benchmarks/sampling_memory.py                       # 7,200 samples
    python benchmarks/sampling_memory.py --samples 300 --json out.json

Runs ``gamedaylib.sampler.Sampler(sample_fn, interval_seconds, csv_path)`` with a tiny interval and a
sample function returning the numbers a real sample holds, and measures this process's memory growth
(RSS and tracemalloc) across the run. Then draws the timeline of those samples
(``gamedaylib.charts``), embeds it in a notebook the way the runbook does, renders the HTML report
(``gamedaylib.archive.render_html``) and prints the sizes of ``samples.csv``, the notebook and the
report. When a module is missing, the figure says which and what was measured instead.
"""

from __future__ import annotations

import base64
import gc
import inspect
import io
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import common

MEMORY_TARGET_MB = 50.0
SIZE_TARGET_MB = 5.0


class FakeSystem:
    """Plausible numbers for one sample: lag rises during the partition, drains after."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.n = 0
        self.t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.done = threading.Event()

    def __call__(self) -> dict[str, Any]:
        i = self.n
        self.n += 1
        if self.n >= self.samples:
            self.done.set()
        cut = self.samples // 6 <= i < self.samples // 6 + 600
        lag = (i - self.samples // 6) * 5 if cut else max(0, 3000 - (i - self.samples // 6 - 600) * 10)
        return {
            "time": (self.t0 + timedelta(seconds=i)).isoformat(),
            "t_offset_seconds": float(i - self.samples // 6),
            "consumer_lag": lag if i >= self.samples // 6 else 0,
            "ack_pending": i % 7,
            "buffer_size": lag // 2,
            "buffer_capacity": 10000,
            "nats_connected": 0 if cut else 1,
            "circuit_breaker_state": 2 if cut else 0,
            "events_accepted_total": 5 * i,
            "events_stored_total": 5 * i - lag,
            "http_errors_total": 0,
            "canaries_sent": 2 * i,
            "canaries_stored": 2 * i - lag // 5,
        }


def _rss_settled() -> float:
    gc.collect()
    return common.rss_mb()


def run_sampler(samples: int, csv_path: Path, report: common.Report) -> list[dict[str, Any]]:
    """Run the project's Sampler for ``samples`` samples; fall back to a reference loop if it is absent."""
    system = FakeSystem(samples)
    try:
        from gamedaylib.sampler import Sampler  # noqa: PLC0415
    except ImportError as exc:
        Sampler = None  # noqa: N806
        missing = str(exc)
    tracemalloc.start()
    rss0 = _rss_settled()
    t = time.perf_counter()
    rows: list[dict[str, Any]]
    if Sampler is not None:
        params = list(inspect.signature(Sampler).parameters)
        sampler = (Sampler(system, 0.001, csv_path) if params[:1] != ["endpoints"]
                   else None)
        if sampler is None:
            raise RuntimeError(f"Sampler signature {params} is not Sampler(sample_fn, interval_seconds, csv_path)")
        sampler.start()
        try:
            if not system.done.wait(timeout=max(60.0, samples * 0.05)):
                raise RuntimeError(f"the sampler took only {system.n} of {samples} samples in time")
        finally:
            sampler.stop()
        rows = list(sampler.rows()) if hasattr(sampler, "rows") else []
        label = "Sampler"
    else:
        import csv  # noqa: PLC0415

        rows = []
        with csv_path.open("w", newline="") as fh:
            writer: Any = None
            while not system.done.is_set():
                row = system()
                rows.append(row)
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                fh.flush()
        label = f"reference loop (gamedaylib.sampler absent: {missing})"
    elapsed = time.perf_counter() - t
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _rss_settled()
    report.add(f"sampling {samples:,} samples: RSS growth", rss1 - rss0, "MB", MEMORY_TARGET_MB,
               note=f"{label}; {elapsed:.1f} s for {system.n:,} samples")
    report.add("sampling: Python heap held after (tracemalloc)", current / 1e6, "MB", MEMORY_TARGET_MB,
               note=f"peak {peak / 1e6:.1f} MB")
    size = csv_path.stat().st_size if csv_path.exists() else None
    report.add("samples.csv size", None if size is None else size / 1e6, "MB", None)
    report.extra.update({"sampler": label, "samples_taken": system.n, "rss_growth_mb": rss1 - rss0,
                         "tracemalloc_current_mb": current / 1e6, "tracemalloc_peak_mb": peak / 1e6,
                         "samples_csv_bytes": size, "rows_returned": len(rows)})
    return rows


def timeline_png(rows: list[dict[str, Any]], samples: int) -> tuple[bytes, str]:
    """The timeline figure as PNG, from gamedaylib.charts when present, else a plain matplotlib twin."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if not rows:
        system = FakeSystem(samples)
        rows = [system() for _ in range(samples)]
    try:
        from gamedaylib import charts  # noqa: PLC0415
    except ImportError:
        charts = None  # type: ignore[assignment]
    phases = [("injection", 0.0, 600.0), ("replay", 600.0, 1500.0)]
    fig = None
    how = ""
    if charts is not None and hasattr(charts, "timeline_figure"):
        fig = charts.timeline_figure(rows, phases)
        how = "gamedaylib.charts.timeline_figure"
    if fig is None:
        x = [r["t_offset_seconds"] for r in rows]
        fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
        axes[0].plot(x, [r["consumer_lag"] for r in rows], lw=0.8)
        axes[0].set_ylabel("consumer lag")
        axes[1].plot(x, [r["buffer_size"] for r in rows], lw=0.8)
        axes[1].set_ylabel("buffer")
        for ax in axes:
            ax.axvspan(0, 600, alpha=0.15)
        how = "matplotlib fallback (gamedaylib.charts.timeline_figure absent)"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue(), how


def notebook_and_report(png: bytes, workdir: Path, report: common.Report, chart_how: str) -> None:
    import nbformat  # noqa: PLC0415

    nb = nbformat.v4.new_notebook()
    b64 = base64.b64encode(png).decode()
    cells = [nbformat.v4.new_markdown_cell("# GAMEDAY-001 (benchmark)")]
    # The runbook shows the timeline at the end and a live chart per phase: nine phases, nine charts.
    for phase in range(9):
        cell = nbformat.v4.new_code_cell(f"gd.phase_{phase}()")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": b64, "text/plain": "<Figure>"}),
                        nbformat.v4.new_output("display_data", data={"text/markdown": "| metric | value |\n|--|--|\n"
                                                                     + "| lag | 10 |\n" * 20})]
        cells.append(cell)
    nb.cells = cells
    nb_path = workdir / "runbook.ipynb"
    nbformat.write(nb, str(nb_path))
    report.add("timeline PNG (7,200 samples)", len(png) / 1e6, "MB", None, note=chart_how)
    report.add("runbook.ipynb with 9 such charts", nb_path.stat().st_size / 1e6, "MB", SIZE_TARGET_MB)
    report.extra.update({"png_bytes": len(png), "notebook_bytes": nb_path.stat().st_size, "chart": chart_how})
    try:
        from gamedaylib.archive import render_html  # noqa: PLC0415
    except ImportError:
        report.add("report.html", None, "MB", SIZE_TARGET_MB, note="gamedaylib.archive.render_html absent")
        return
    html = render_html(nb_path, workdir / "report.html")
    report.add("report.html of that notebook", html.stat().st_size / 1e6, "MB", SIZE_TARGET_MB,
               note="gamedaylib.archive.render_html")
    report.extra["report_html_bytes"] = html.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = common.base_argparser(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=7200)
    args = parser.parse_args(argv)
    report = common.Report("sampling_memory")
    workdir = Path(tempfile.mkdtemp(prefix="gameday-bench-sampling-"))
    try:
        rows = run_sampler(args.samples, workdir / "samples.csv", report)
        png, how = timeline_png(rows, args.samples)
        notebook_and_report(png, workdir, report, how)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
