"""Benchmark: the production-shaped lab (3 NATS nodes, 2 replicas of each service) at 500 events/s,
through a short partition, accounted from its own counters and the events table; the single-node,
single-replica lab beside it (``--shapes``).

For each shape:
1. ``Lab.up({"lab_event_rate": 500, ...})`` in a temporary folder;
2. after a warm-up, measure ``--seconds`` of steady state: the rate the simulated users achieved and
   the CPU of every lab process (``/proc``, a process's own children included: PostgreSQL's backends),
   in percent of one core, on a machine whose cores it names;
3. cut the network for ``--partition`` seconds (0: no cut), heal, time until every gateway's buffer is
   empty and the backlog is in PostgreSQL;
4. stop the simulated users, let the pipeline settle, and account: accepted (answers 202 in the
   ground truth), stored, lost (accepted, not in ``events``), duplicated (stored more than once),
   beside the services' own counters (accepted, published, dropped, stored, duplicates).

Targets: nothing lost, nothing duplicated, the rate held. ``--json FILE`` writes the figures.

    .venv/bin/python benchmarks/lab_throughput.py [--rate 500] [--seconds 60] [--partition 10]
        [--shapes cluster,single] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import common
import psycopg

from gamedaylib.lab import processes as proc
from gamedaylib.lab.client import Lab
from gamedaylib.lab.truth import read_answers

TICK = os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def total(urls: list[str], name: str) -> float:
    return sum(metric(url, name) for url in urls)


def cpu_ticks(pids: dict[str, int]) -> dict[str, int]:
    """CPU ticks (user + system) of each named process and of its descendants alive now."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        parent[int(entry)], ticks[int(entry)] = int(rest[1]), int(rest[11]) + int(rest[12])
    owner = {pid: name for name, pid in pids.items()}
    result: Counter[str] = Counter()
    for pid, used in ticks.items():
        walk, hops = pid, 0
        while walk in parent and walk not in owner and hops < 16:
            walk, hops = parent[walk], hops + 1
        if walk in owner:
            result[owner[walk]] += used
    return dict(result)


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> float:
    """Seconds until ``predicate()`` is true; SystemExit after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def stored_counts(dsn: str) -> Counter[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT idempotency_key, count(*) FROM events GROUP BY 1").fetchall()
    return Counter({key: count for key, count in rows})


SHAPES = {
    "cluster": {"lab_nats_nodes": 3, "lab_service_replicas": 2},
    "single": {"lab_nats_nodes": 1, "lab_service_replicas": 1},
}


def run_shape(name: str, args: argparse.Namespace, report: common.Report) -> None:
    """One lab of this shape at the rate: steady state, a partition, the accounting (figures prefixed
    with the shape's name)."""

    def add(what: str, value: float, unit: str, target: float | None = None, note: str = "") -> None:
        report.add(f"{name}: {what}", value, unit, target, note)

    with tempfile.TemporaryDirectory(prefix=f"gameday-bench-rate-{name}-") as tmp:
        folder = Path(tmp)
        proc.make_traversable(folder)
        lab = Lab(folder / "lab")
        knobs = {"lab_event_rate": args.rate, **SHAPES[name]}
        try:
            state = lab.up(knobs)
            gateways, reportings = state["gateway_metrics_urls"], state["reporting_metrics_urls"]
            time.sleep(args.warmup)

            # 2. steady state
            first = len(read_answers(lab.lab_dir))
            before, t0, load0 = cpu_ticks(state["pids"]), time.monotonic(), os.getloadavg()[0]
            time.sleep(args.seconds)
            after, elapsed = cpu_ticks(state["pids"]), time.monotonic() - t0
            answered = len(read_answers(lab.lab_dir)) - first
            cpu = {p: (after.get(p, 0) - before.get(p, 0)) / TICK / elapsed * 100 for p in state["pids"]}
            load = max(load0, os.getloadavg()[0])
            shape = f"{SHAPES[name]['lab_nats_nodes']} NATS node(s), {SHAPES[name]['lab_service_replicas']} replica(s)"
            add("rate achieved (users' answers)", answered / elapsed, "events/s", note=f"asked {args.rate:g}; {shape}")
            add("lab CPU, all processes", sum(cpu.values()), "% of a core",
                note=f"{os.cpu_count()} cores; load(1 min) up to {load:.1f}")
            for group in ("users", "gateway", "reporting", "nats", "proxy", "postgres", "prometheus", "exporter"):
                share = sum(v for p, v in cpu.items() if p == group or p.startswith(f"{group}-"))
                add(f"CPU {group}", share, "% of a core")

            # 3. a partition at full rate
            if args.partition > 0:
                lab.partition(True, args.partition)
                time.sleep(args.partition)
                held = total(gateways, "event_buffer_size")
                wait(lambda: not lab.status()["partition_active"], 30, "the partition to heal")
                healed = time.monotonic()
                wait(lambda: all(metric(u, "nats_connected") == 1 for u in gateways), 60, "the gateways to reconnect")
                wait(lambda: total(gateways, "event_buffer_size") < 100, 120, "the gateways' buffers to drain")
                add("partition: events held at heal", held, "count", note=f"{args.partition:g} s cut")
                add("partition: buffers drained after heal", time.monotonic() - healed, "s")

            # 4. stop the users, settle, account
            os.kill(state["pids"]["users"], signal.SIGTERM)
            proc.wait_gone([state["pids"]["users"]], 15)
            wait(lambda: total(gateways, "event_buffer_size") == 0, 120, "the gateways' buffers to empty")
            answers = read_answers(lab.lab_dir)
            accepted = {a["idempotency_key"] for a in answers if a["status"] == 202}
            last: tuple[int, int] | None = None
            settle_started = time.monotonic()
            while True:  # settled: the stored count has not changed for 2 s
                counts = stored_counts(state["events_dsn"])
                now = (len(counts), sum(counts.values()))
                if now == last and time.monotonic() - settle_started > 2:
                    break
                if now != last:
                    last, settle_started = now, time.monotonic()
                time.sleep(0.5)
            lost = sorted(key for key in accepted if counts[key] == 0)
            duplicated = sum(1 for key in accepted if counts[key] > 1)
            statuses = Counter(str(a["status"]) for a in answers)
            span = (datetime.fromisoformat(answers[-1]["ts"]) - datetime.fromisoformat(answers[0]["ts"])).total_seconds()
            add("accepted (answers 202)", float(len(accepted)), "count",
                note=f"{len(answers)} answers over {span:.0f} s: {dict(statuses)}")
            add("stored (accepted keys in events)", float(sum(1 for k in accepted if counts[k] > 0)), "count")
            add("lost (accepted, not stored)", float(len(lost)), "count", target=1)
            add("duplicated (stored twice or more)", float(duplicated), "count", target=1)
            counters = {
                "gateway events_accepted_total": total(gateways, "events_accepted_total"),
                "gateway events_published_total": total(gateways, "events_published_total"),
                "gateway events_dropped_total": total(gateways, "events_dropped_total"),
                "gateway nats_publish_errors_total": total(gateways, "nats_publish_errors_total"),
                "reporting events_stored_total": total(reportings, "events_stored_total"),
                "reporting duplicate_events_total": total(reportings, "duplicate_events_total"),
            }
            for what, value in counters.items():
                add(what, value, "count")
            report.extra[name] = {"knobs": knobs, "lost_keys_sample": lost[:20], "answers": dict(statuses),
                                  "counters": counters, "processes": len(state["pids"]),
                                  "cpu_percent": {k: round(v, 1) for k, v in sorted(cpu.items())}}
        finally:
            lab.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="lab_event_rate (events/s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady-state measurement")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--partition", type=float, default=10.0, help="cut seconds after the measurement (0: none)")
    parser.add_argument("--shapes", default="cluster,single",
                        help="comma-separated: cluster (3 NATS nodes, 2 replicas), single (1 node, 1 replica)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    report = common.Report("lab_throughput")
    for name in args.shapes.split(","):
        run_shape(name, args, report)
    print(common.machine_line())
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
