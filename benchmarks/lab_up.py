"""Benchmark: `lab up` to ready and `lab down`, over a few runs, in a temporary lab folder.

The first run of a folder includes PostgreSQL's initdb ("cold"); later runs reuse it ("warm"), as a
second `gameday lab up` in the same folder does. Prints one line per run and a summary; with
``--json FILE`` also writes the figures.

    .venv/bin/python benchmarks/lab_up.py [--runs 3] [--json benchmarks/results/lab_up.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gamedaylib.lab.client import Lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="gameday-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab")
        for i in range(args.runs):
            t0 = time.monotonic()
            try:
                state = lab.up()
                up_s = time.monotonic() - t0
            finally:
                t1 = time.monotonic()
                lab.down()
                down_s = time.monotonic() - t1
            kind = "cold" if i == 0 else "warm"
            runs.append(
                {
                    "run": i + 1,
                    "kind": kind,
                    "up_seconds": round(up_s, 3),
                    "supervisor_startup_seconds": state["startup_seconds"],
                    "down_seconds": round(down_s, 3),
                    "processes": len(state["pids"]),
                    "prometheus": state["prometheus_url"] is not None,
                }
            )
            print(
                f"run {i + 1} ({kind}): lab up -> ready {up_s:.2f}s "
                f"(supervisor {state['startup_seconds']:.2f}s, {len(state['pids'])} processes), "
                f"lab down {down_s:.2f}s",
                flush=True,
            )
    warm = [r["up_seconds"] for r in runs if r["kind"] == "warm"] or [runs[0]["up_seconds"]]
    summary = {
        "runs": runs,
        "up_seconds_cold": runs[0]["up_seconds"],
        "up_seconds_warm_median": statistics.median(warm),
        "down_seconds_median": statistics.median(r["down_seconds"] for r in runs),
        "target_up_seconds": 5.0,
    }
    print(
        f"lab up: cold {summary['up_seconds_cold']:.2f}s, warm median {summary['up_seconds_warm_median']:.2f}s "
        f"(target < 5 s); lab down median {summary['down_seconds_median']:.2f}s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
