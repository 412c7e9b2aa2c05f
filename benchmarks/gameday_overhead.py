"""What `gameday run` costs beyond the scenario's own waiting.

    python benchmarks/gameday_overhead.py [--partition 10] [--json FILE]

Measures, on this machine:
- Papermill running an empty notebook (kernel start, execute, write): the floor of any headless run;
- a whole `gameday run` (rehearsal) against a lab that is already up, its wall time, and the part of it
  that is the scenario's own waiting (T+0 → heal, heal → recovery confirmed, waiting for an alert),
  read from the run's journal; overhead = wall − waiting (target < 15 s);
- the lab's start (what `make gameday` adds when no lab is running);
- the cost of one sampler tick (the probes read once) against the running lab.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import common

GAMEDAY = str(Path(sys.executable).with_name("gameday"))


def empty_notebook_seconds(work: Path) -> float:
    import nbformat
    import papermill
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("x = 1", metadata={"tags": ["parameters"]}), new_code_cell("x")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = work / "empty.ipynb"
    nbformat.write(nb, str(src))
    start = time.monotonic()
    papermill.execute_notebook(str(src), str(work / "empty-out.ipynb"), parameters={"x": 2},
                               kernel_name="python3", progress_bar=False)
    return time.monotonic() - start


def scenario_wait_seconds(journal: list[dict]) -> float:
    """T+0 → heal, plus the replay phase (waiting for recovery) and the alert wait, from the journal."""
    t0 = next(datetime.fromisoformat(e["t0"]) for e in journal if e["kind"] == "fault.active")
    healed = next(datetime.fromisoformat(e["at"]) for e in journal if e["kind"] == "fault.healed")
    durations = {e["phase"]: e.get("duration_s", 0.0) for e in journal if e["kind"] == "phase.finished"}
    return (healed - t0).total_seconds() + durations.get("replay", 0.0) + durations.get("incident_response", 0.0)


def sampler_tick_seconds(state: dict, n: int = 20) -> list[float]:
    """One reading of the running lab, as the runbook's sampler takes it each tick."""
    from gamedaylib.readings import PipelineReader
    from gamedaylib.targets.lab import LabPartition, LabTarget

    target = LabTarget(state["lab_dir"], start=False)
    reader = PipelineReader(target.endpoints, fault_status=LabPartition(target).status)
    times = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            reader.read()
            times.append(time.perf_counter() - start)
            time.sleep(0.05)
    finally:
        reader.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", type=float, default=10.0, help="partition_seconds of the run")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    from gamedaylib.lab.client import Lab

    report = common.Report("gameday_overhead")
    with tempfile.TemporaryDirectory(prefix="gameday-bench-") as tmp:
        work = Path(tmp)
        report.add("papermill, empty notebook", empty_notebook_seconds(work), "s")
        lab = Lab(work / "lab")
        start = time.monotonic()
        state = lab.up()
        report.add("lab start (lab up)", time.monotonic() - start, "s")
        try:
            start = time.monotonic()
            proc = subprocess.run(
                [GAMEDAY, "run", "-p", f"lab_dir={lab.lab_dir}", "-p", f"partition_seconds={args.partition}",
                 "--output-dir", str(work / "out")], capture_output=True, text=True, timeout=600, check=False)
            wall = time.monotonic() - start
            archive = Path(proc.stdout.strip().splitlines()[-1])
            journal = [json.loads(line) for line in (archive / "journal.jsonl").read_text().splitlines()]
            waiting = scenario_wait_seconds(journal)
            report.add(f"gameday run wall (partition {args.partition:g}s, lab already up)", wall, "s")
            report.add("  of which scenario waiting", waiting, "s")
            report.add("  overhead (wall - waiting)", wall - waiting, "s", target=15.0)
            report.extra["verdict"] = json.loads((archive / "scorecard.json").read_text())["verdict"]
            report.extra["exit_status"] = proc.returncode
            ticks = sampler_tick_seconds(state)
            report.add("sampler tick, median", statistics.median(ticks) * 1000, "ms")
            report.add("sampler tick, max", max(ticks) * 1000, "ms")
        finally:
            lab.down()
    report.extra["machine"] = common.machine_line()
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
