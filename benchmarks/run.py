"""`make bench`: run every benchmark and print one table of every figure, with the machine it ran on.

    python benchmarks/run.py            # full sizes: 10M-row events table (built once, ~1-2 min), 1M keys,
                                        # 200 streams / 2,000 consumers, 7,200 samples; a few minutes
    python benchmarks/run.py --quick    # 1M rows, 100k keys, same NATS and sampling sizes; ~1-2 minutes
    python benchmarks/run.py --small    # tiny sizes, seconds (what tests/test_benchmarks_small.py runs)
    python benchmarks/run.py --json all.json --only events_queries,accounting

Each benchmark runs as its own subprocess (``benchmarks/<name>.py --json FILE``). The scripts written
by other modules (``drain.py``, ``lab_up.py``, ``lab_throughput.py``, ``gameday_overhead.py``, ``sampler_tick.py``,
``pg_failover.py``, ``failover_rehearsal.py``) run too
when present; their own printed output is shown and their JSON figures join the table.
The events table lives in ``--pg-dir`` (default /tmp/gameday-bench-pg) and is created there from
nothing on first use, then reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent

# name -> arguments per size (full, quick, small)
OURS: dict[str, dict[str, list[str]]] = {
    "events_queries": {
        "full": ["--rows", "10000000"],
        "quick": ["--rows", "1000000", "--repeat", "3"],
        "small": ["--rows", "20000", "--repeat", "2", "--no-seqscan"],
    },
    "accounting": {
        "full": ["--rows", "10000000", "--keys", "1000000"],
        "quick": ["--rows", "1000000", "--keys", "100000", "--naive-sample", "1000", "--repeat", "2"],
        "small": ["--rows", "20000", "--keys", "5000", "--naive-sample", "200", "--repeat", "1"],
    },
    "jsz_lag": {
        "full": ["--streams", "200", "--consumers-per-stream", "10"],
        "quick": ["--streams", "200", "--consumers-per-stream", "10", "--repeat", "10"],
        "small": ["--streams", "10", "--consumers-per-stream", "3", "--backlog", "50", "--repeat", "3"],
    },
    "sampling_memory": {
        "full": ["--samples", "7200"],
        "quick": ["--samples", "7200"],
        "small": ["--samples", "300"],
    },
}
OTHERS: dict[str, dict[str, list[str]]] = {
    "drain": {"full": [], "quick": ["--events", "10000"], "small": ["--events", "2000"]},
    "lab_up": {"full": [], "quick": ["--runs", "2"], "small": ["--runs", "1"]},
    "lab_throughput": {
        "full": [],
        "quick": ["--seconds", "30"],
        "small": ["--seconds", "5", "--rate", "100", "--partition", "3"],
    },
    "gameday_overhead": {"full": [], "quick": [], "small": []},
    "sampler_tick": {"full": [], "quick": ["--seconds", "30"], "small": ["--own-endpoints", "--ticks", "20"]},
    "pg_failover": {"full": [], "quick": [], "small": ["--modes", "sync"]},
    "failover_rehearsal": {"full": ["--runs", "2"], "quick": ["--runs", "1"], "small": ["--runs", "1"]},
}
PG_BENCHMARKS = {"events_queries", "accounting"}


def flatten(prefix: str, value: object, out: list[common.Figure]) -> None:
    """Numbers of another module's JSON as figures (nested keys joined with '.')."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        out.append(common.Figure(prefix, float(value), ""))
    elif isinstance(value, dict):
        for key, sub in value.items():
            if key in ("machine",):
                continue
            flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)


def takes_json(script: Path) -> bool:
    return "--json" in script.read_text(encoding="utf-8", errors="replace")


def run_one(name: str, args: list[str], workdir: Path, timeout: float) -> tuple[int | None, float, Path]:
    """Run ``benchmarks/<name>.py``; its figures end up in the returned JSON path (from ``--json``, or
    from the last stdout line when that is a JSON object and the script has no ``--json``)."""
    script = HERE / f"{name}.py"
    out = workdir / f"{name}.json"
    json_args = ["--json", str(out)] if takes_json(script) else []
    cmd = [sys.executable, str(script), *args, *json_args]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, timeout=timeout, check=False, stdout=subprocess.PIPE, text=True)
        rc: int | None = proc.returncode
        stdout = proc.stdout or ""
    except subprocess.TimeoutExpired as exc:
        print(f"!!! {name} timed out after {timeout:.0f}s", flush=True)
        rc = None
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    print(stdout, end="" if stdout.endswith("\n") or not stdout else "\n", flush=True)
    if not json_args and rc == 0:
        lines = [line for line in stdout.splitlines() if line.strip()]
        if lines and lines[-1].lstrip().startswith("{"):
            try:
                out.write_text(json.dumps(json.loads(lines[-1])))
            except ValueError:
                pass
    return rc, time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller table and key set")
    size.add_argument("--small", action="store_true", help="tiny sizes (seconds); for the tests")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--skip-others", action="store_true",
                        help="run only this module's benchmarks, not drain/lab_up/lab_throughput/gameday_overhead/"
                             "sampler_tick/pg_failover/failover_rehearsal")
    parser.add_argument("--pg-dir", default=str(common.BENCH_PG_DIR))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per benchmark")
    parser.add_argument("--json", metavar="FILE", help="write every benchmark's figures to FILE")
    args = parser.parse_args(argv)
    mode = "small" if args.small else "quick" if args.quick else "full"
    only = set(args.only.split(",")) if args.only else None

    plan: list[tuple[str, list[str], bool]] = []
    for name, sizes in OURS.items():
        extra = ["--pg-dir", args.pg_dir] if name in PG_BENCHMARKS else []
        plan.append((name, sizes[mode] + extra, True))
    if not args.skip_others:
        for name, sizes in OTHERS.items():
            if (HERE / f"{name}.py").exists():
                plan.append((name, sizes[mode], False))
    if only is not None:
        plan = [p for p in plan if p[0] in only]

    print(f"gameday benchmarks ({mode}); {common.machine_line()}", flush=True)
    combined: dict[str, object] = {"mode": mode, "machine": common.machine(), "benchmarks": {}}
    table: list[common.Figure] = []
    failed: list[str] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gameday-bench-run-") as tmp:
        for name, bench_args, ours in plan:
            rc, seconds, out = run_one(name, bench_args, Path(tmp), args.timeout)
            entry: dict[str, object] = {"returncode": rc, "seconds": round(seconds, 1)}
            if rc != 0:
                failed.append(name)
                table.append(common.Figure(f"[{name}] FAILED (rc {rc})", None, ""))
            if out.exists():
                data = json.loads(out.read_text())
                entry["result"] = data
                figs = data.get("figures") if isinstance(data, dict) else None
                if ours or (isinstance(figs, list) and all(isinstance(f, dict) and "name" in f for f in figs)):
                    for fig in data.get("figures", []):
                        table.append(common.Figure(f"[{name}] {fig['name']}", fig.get("value"),
                                                   fig.get("unit", ""), fig.get("target"), fig.get("note", "")))
                else:
                    flat: list[common.Figure] = []
                    flatten("", data, flat)
                    for fig in flat:
                        fig.name = f"[{name}] {fig.name}"
                    table.extend(flat)
            combined["benchmarks"][name] = entry  # type: ignore[index]
    total = time.perf_counter() - t_all
    print(f"\n=== every figure ({mode}, {total:.0f} s in all)")
    print(common.machine_line())
    common.print_figures(table)
    missed = [f.name for f in table if f.status == "MISS"]
    if missed:
        print(f"\nmissed targets: {', '.join(missed)}")
    if failed:
        print(f"\nfailed benchmarks: {', '.join(failed)}")
    combined["total_seconds"] = total
    combined["missed"] = missed
    combined["failed"] = failed
    if args.json:
        Path(args.json).write_text(json.dumps(combined, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
