"""A full-profile gameday's sampling (2 hours at 1 Hz = 7,200 samples), simulated faster: memory and sizes.

    python benchmarks/sampling_memory.py                       # 7,200 samples
    python benchmarks/sampling_memory.py --samples 300 --json out.json

Runs ``gamedaylib.sampler.Sampler(reader, interval_seconds, csv_path)`` at a 1 ms interval with a
reader returning full ``Reading`` objects (every input of the event pipeline), marks the nine phases,
and measures this process's memory growth (RSS and tracemalloc). Then draws the timeline of those
samples (``gamedaylib.charts.timeline_figure``), embeds it in a notebook the way the runbook does
(nine chart outputs, more than the runbook shows), renders the HTML report
(``gamedaylib.report.render_html``) and prints the sizes of ``samples.csv``, the notebook and the
report.
"""

from __future__ import annotations

import base64
import gc
import io
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import common

MEMORY_TARGET_MB = 50.0
SIZE_TARGET_MB = 5.0


class FakeSystem:
    """A reader with plausible numbers: lag rises during the partition, drains after."""

    def __init__(self, samples: int) -> None:
        from gamedaylib.readings import Reading  # noqa: PLC0415

        self.reading_type = Reading
        self.samples = samples
        self.n = 0
        self.cut_start, self.cut_end = samples // 6, samples // 6 + max(1, samples // 12)
        self.done = threading.Event()

    def close(self) -> None:
        return None

    def read(self) -> Any:
        from gamedaylib.clock import utcnow  # noqa: PLC0415

        i = self.n
        self.n += 1
        if self.n >= self.samples:
            self.done.set()
        cut = self.cut_start <= i < self.cut_end
        if i < self.cut_start:
            lag = 0
        elif cut:
            lag = (i - self.cut_start) * 5
        else:
            lag = max(0, (self.cut_end - self.cut_start) * 5 - (i - self.cut_end) * 10)
        return self.reading_type(
            at=utcnow(), lag_pending=lag, lag_ack_pending=i % 7, buffer_size=lag // 2, buffer_capacity=10000,
            buffer_fraction_max=lag / 20000, dropped_total=0, published_total=5 * i, stored_total=5 * i - lag,
            requests_total=5 * i, requests_5xx=0, publish_errors_total=0, retries_total=i // 3 if cut else 0,
            gateway_connected=0 if cut else 1, reporting_connected=0 if cut else 1, breaker=2 if cut else 0,
            gateway_instances=2, reporting_instances=2, canaries_sent=2 * i, canaries_failed=0, alerts_firing=0,
            fault_active=cut)


def _rss_settled() -> float:
    gc.collect()
    return common.rss_mb()


def run_sampler(samples: int, csv_path: Path, report: common.Report) -> tuple[Any, Any]:
    """Run the project's Sampler for ``samples`` ticks (1 ms apart) while marking the playbook's phases."""
    from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK  # noqa: PLC0415
    from gamedaylib.sampler import Sampler  # noqa: PLC0415

    phase_ids = PLAYBOOK.phase_ids
    system = FakeSystem(samples)
    tracemalloc.start()
    rss0 = _rss_settled()
    t = time.perf_counter()
    sampler = Sampler(system, 0.001, csv_path)
    bounds = [int(samples * k / len(phase_ids)) for k in range(len(phase_ids))]
    sampler.mark_phase(phase_ids[0])
    sampler.start()
    try:
        deadline = time.monotonic() + max(120.0, samples * 0.05)
        phase = 0
        while not system.done.wait(0.005):
            while phase + 1 < len(bounds) and system.n >= bounds[phase + 1]:
                phase += 1
                sampler.mark_phase(phase_ids[phase])
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sampler took only {system.n} of {samples} samples in time")
    finally:
        sampler.stop()
    elapsed = time.perf_counter() - t
    rss_after_sampling = _rss_settled()
    current, peak = tracemalloc.get_traced_memory()
    rows = sampler.frame()
    rss_with_rows = _rss_settled()
    tracemalloc.stop()
    report.add(f"sampling {sampler.ticks:,} samples: RSS growth", rss_after_sampling - rss0, "MB",
               MEMORY_TARGET_MB, note=f"gamedaylib.sampler.Sampler, {len(sampler.columns)} columns; "
                                      f"{elapsed:.1f} s at 1 ms interval")
    report.add("sampling: Python heap held (tracemalloc)", current / 1e6, "MB", MEMORY_TARGET_MB,
               note=f"peak {peak / 1e6:.1f} MB; Sampler.memory_bytes {sampler.memory_bytes() / 1e6:.2f} MB")
    report.add("RSS growth incl. sampler.frame() (pandas)", rss_with_rows - rss0, "MB", MEMORY_TARGET_MB,
               note="what a chart call holds while drawing")
    size = csv_path.stat().st_size if csv_path.exists() else None
    report.add("samples.csv size", None if size is None else size / 1e6, "MB", None)
    report.extra.update({"samples_taken": sampler.ticks, "rss_growth_mb": rss_after_sampling - rss0,
                         "rss_growth_with_rows_mb": rss_with_rows - rss0,
                         "tracemalloc_current_mb": current / 1e6, "tracemalloc_peak_mb": peak / 1e6,
                         "sampler_memory_bytes": sampler.memory_bytes(), "samples_csv_bytes": size,
                         "rows_returned": len(rows), "sample_errors": sampler.errors})
    return rows, sampler


def timeline_png(rows: Any, sampler: Any) -> tuple[bytes, str]:
    """The runbook's timeline figure (gamedaylib.charts.timeline_figure) of those rows, as PNG at dpi 90."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from gamedaylib import charts  # noqa: PLC0415

    fig = charts.timeline_figure(rows, sampler.phases())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # as the runbook's charts are saved
    return buf.getvalue(), "gamedaylib.charts.timeline_figure, dpi 90"


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
        from gamedaylib.report import render_html  # noqa: PLC0415
    except ImportError:
        report.add("report.html", None, "MB", SIZE_TARGET_MB, note="gamedaylib.report.render_html absent")
        return
    html = render_html(nb_path, workdir / "report.html")
    report.add("report.html of that notebook", html.stat().st_size / 1e6, "MB", SIZE_TARGET_MB,
               note="gamedaylib.report.render_html")
    report.extra["report_html_bytes"] = html.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = common.base_argparser(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=7200)
    args = parser.parse_args(argv)
    report = common.Report("sampling_memory")
    workdir = Path(tempfile.mkdtemp(prefix="gameday-bench-sampling-"))
    try:
        rows, sampler = run_sampler(args.samples, workdir / "samples.csv", report)
        png, how = timeline_png(rows, sampler)
        notebook_and_report(png, workdir, report, how)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
