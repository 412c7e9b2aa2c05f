"""Benchmark: `lab up` to ready and `lab down`, for the production-shaped lab (3 NATS nodes, 2 replicas
of each service: the default) and for the single-node, single-replica lab beside it.

Each shape runs ``--runs`` times in its own temporary lab folder: the first run of a folder includes
PostgreSQL's initdb ("cold"); later runs reuse it ("warm"), as a second `gameday lab up` in the same
folder does. Prometheus and Alertmanager take part when installed (the line says which). Prints one
line per run and a table; with ``--json FILE`` also writes the figures (target: warm `lab up` of the
default shape under 8 s).

    .venv/bin/python benchmarks/lab_up.py [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from gamedaylib.lab.client import Lab

SHAPES = {
    "cluster": {"lab_nats_nodes": 3, "lab_service_replicas": 2},
    "single": {"lab_nats_nodes": 1, "lab_service_replicas": 1},
}
# Issue 11's aim for the default (cluster) shape. With Prometheus, ready waits until it has scraped every
# target, which it starts about 5 s after its own start (its scrape manager's update tick, not configurable
# in Prometheus 2.42): that floor is the same for both shapes, so the single shape gets the same aim.
TARGET_UP_SECONDS = {"cluster": 8.0, "single": 8.0}


def run_shape(name: str, knobs: dict[str, Any], runs: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix=f"gameday-bench-up-{name}-") as tmp:
        lab = Lab(Path(tmp) / "lab")
        for i in range(runs):
            t0 = time.monotonic()
            try:
                state = lab.up(knobs)
                up_s = time.monotonic() - t0
            finally:
                t1 = time.monotonic()
                lab.down()
                down_s = time.monotonic() - t1
            kind = "cold" if i == 0 else "warm"
            restarts = lab.supervisor_log.read_text(errors="replace").count("starting the NATS cluster again")
            results.append({
                "run": i + 1, "kind": kind, "up_seconds": round(up_s, 3),
                "supervisor_startup_seconds": state["startup_seconds"], "down_seconds": round(down_s, 3),
                "processes": len(state["pids"]), "prometheus": state["prometheus_url"] is not None,
                "alertmanager": state["alertmanager_url"] is not None, "nats_restarts_so_far": restarts,
            })
            print(
                f"{name} run {i + 1} ({kind}): lab up -> ready {up_s:.2f}s (supervisor "
                f"{state['startup_seconds']:.2f}s, {len(state['pids'])} processes, prometheus "
                f"{'yes' if state['prometheus_url'] else 'no'}, alertmanager "
                f"{'yes' if state['alertmanager_url'] else 'no'}), lab down {down_s:.2f}s",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per shape (the first is cold)")
    parser.add_argument("--shapes", default="cluster,single", help="comma-separated: cluster, single")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    report = common.Report("lab_up")
    for name in args.shapes.split(","):
        runs = run_shape(name, SHAPES[name], args.runs)
        warm = [r["up_seconds"] for r in runs if r["kind"] == "warm"] or [runs[0]["up_seconds"]]
        nodes, replicas = SHAPES[name]["lab_nats_nodes"], SHAPES[name]["lab_service_replicas"]
        shape = f"{nodes} NATS node(s), {replicas} replica(s)"
        report.add(f"{name}: lab up, warm median", statistics.median(warm), "s", TARGET_UP_SECONDS[name],
                   note=f"{shape}; {len(warm)} run(s); max {max(warm):.2f} s")
        report.add(f"{name}: lab up, cold (initdb)", runs[0]["up_seconds"], "s", note=shape)
        report.add(f"{name}: lab down, median", statistics.median(r["down_seconds"] for r in runs), "s")
        report.add(f"{name}: processes", float(runs[0]["processes"]), "count")
        report.extra[name] = runs
    print(common.machine_line())
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
