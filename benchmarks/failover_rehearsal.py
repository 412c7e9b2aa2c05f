"""Benchmark: GAMEDAY-002 as a user runs it. `gameday lab up --gameday GAMEDAY-002` to ready (the
GAMEDAY-001 stack plus etcd, two Patroni nodes with their exporters, the relays and HAProxy), then the
whole rehearsal `gameday run --gameday GAMEDAY-002` on that lab (rehearsal profile: Papermill, the
nine phases, the archive and report.html), its phases alone (journal ``run.started`` ->
``run.finished``), the failover it measured, and `gameday lab down`.

    .venv/bin/python benchmarks/failover_rehearsal.py [--runs 2] [--json FILE]

Each run is a fresh lab folder (the pair is initialised anew at every `lab up` anyway). Targets: the
playbook's failover (<= 60 s); lab up and the rehearsal have none of their own, only the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import common

GAMEDAY = str(Path(sys.executable).with_name("gameday"))
FAILOVER_TARGET_S = 60.0


def cli(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    started = time.monotonic()
    proc = subprocess.run([GAMEDAY, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    return proc, time.monotonic() - started


def journal_span(archive: Path) -> float | None:
    """Seconds from the journal's ``run.started`` to its ``run.finished`` (the phases, without Papermill
    starting the kernel and the archive being written)."""
    stamps = {}
    for line in (archive / "journal.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["kind"] in ("run.started", "run.finished") and entry["kind"] not in stamps:
            stamps[entry["kind"]] = datetime.fromisoformat(entry["ts"])
    if len(stamps) < 2:
        return None
    return (stamps["run.finished"] - stamps["run.started"]).total_seconds()


def one_run(workdir: Path) -> dict[str, Any]:
    lab_dir, out = workdir / "lab", workdir / "out"
    up, up_s = cli("lab", "up", "--gameday", "GAMEDAY-002", "--lab-dir", str(lab_dir), timeout=300)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"lab up failed ({up.returncode}):\n{up.stderr[-2000:]}")
        status, _ = cli("lab", "status", "--lab-dir", str(lab_dir), "--json", timeout=60)
        state = json.loads(status.stdout)
        run, run_s = cli("run", "--gameday", "GAMEDAY-002", "--output-dir", str(out), "-p", f"lab_dir={lab_dir}",
                         timeout=900)
        archive = Path([line for line in run.stdout.splitlines() if line.strip()][-1].strip())
        card = json.loads((archive / "scorecard.json").read_text(encoding="utf-8"))
        metrics = {m["name"]: m for m in card["metrics"]}
    finally:
        down, down_s = cli("lab", "down", "--lab-dir", str(lab_dir), timeout=120)
    return {
        "lab_up_seconds": round(up_s, 2), "supervisor_startup_seconds": state["startup_seconds"],
        "processes": len(state["pids"]), "rehearsal_seconds": round(run_s, 2),
        "phases_seconds": journal_span(archive), "exit": run.returncode, "verdict": card["verdict"],
        "failover_seconds": metrics["failover_seconds"]["value"], "rto_seconds": metrics["rto_seconds"]["value"],
        "alert_fire_seconds": metrics["alert_fire_seconds"]["value"],
        "event_loss_count": metrics["event_loss_count"]["value"], "lab_down_seconds": round(down_s, 2),
        "lab_down_exit": down.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = common.base_argparser((__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="lab up + rehearsal + lab down, each in a new folder")
    args = parser.parse_args(argv)
    report = common.Report("failover_rehearsal")
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="gameday-bench-rehearsal-") as tmp:
            result = one_run(Path(tmp))
        runs.append(result)
        print(f"run {i + 1}: lab up {result['lab_up_seconds']:.1f} s ({result['processes']} processes), rehearsal "
              f"{result['rehearsal_seconds']:.1f} s (phases {result['phases_seconds']:.1f} s), verdict "
              f"{result['verdict']} (exit {result['exit']}), failover {result['failover_seconds']} s, lab down "
              f"{result['lab_down_seconds']:.1f} s", flush=True)
    median = statistics.median
    report.add("gameday lab up --gameday GAMEDAY-002 -> ready", median(r["lab_up_seconds"] for r in runs), "s",
               note=f"{runs[0]['processes']} processes; supervisor "
               f"{median(r['supervisor_startup_seconds'] for r in runs):.1f} s; {len(runs)} run(s)")
    report.add("gameday run --gameday GAMEDAY-002 (rehearsal), wall", median(r["rehearsal_seconds"] for r in runs),
               "s", note="Papermill, nine phases, archive and report.html")
    report.add("  of which the phases (run.started -> run.finished)",
               median(r["phases_seconds"] for r in runs if r["phases_seconds"] is not None), "s")
    failovers = [r["failover_seconds"] for r in runs if r["failover_seconds"] is not None]
    report.add("failover_seconds measured by the rehearsal", median(failovers) if failovers else None, "s",
               FAILOVER_TARGET_S, note="kill -> a write acknowledged through HAProxy")
    report.add("rehearsals passed", float(sum(r["verdict"] == "pass" for r in runs)), "count",
               note=f"of {len(runs)}")
    report.add("gameday lab down", median(r["lab_down_seconds"] for r in runs), "s")
    report.extra["runs"] = runs
    print(common.machine_line())
    report.print_table()
    report.write_json(args.json)
    return 0 if all(r["verdict"] == "pass" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
