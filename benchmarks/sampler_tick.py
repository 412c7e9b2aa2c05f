"""Benchmark: the runbook's sampler against a real lab at 500 events/s: the CPU it takes (share of one
core at one reading per second) and the time of one reading, for the production-shaped lab (3 NATS
nodes, 2 replicas of each service: the default) with the single-node, single-replica lab beside it;
and the memory of one row.

For each shape: ``Lab.up({"lab_event_rate": 500, ...})`` in a temporary folder, a warm-up, then the
reader the runbook builds (``gamedays.nats_partition.make_reader``'s inputs: the lab target's endpoints,
the partition's status from the proxy, the alerts polled as from T+0 through Alertmanager or Prometheus,
the canaries' counts) runs in a real ``Sampler`` thread at its interval for ``--seconds``. Nothing else
runs in this process, so its CPU time over that window divided by the wall time is the sampler's share
of one core (target: under 5 %). Readings whose consumer lag could not be read are counted.

Usage:
    .venv/bin/python benchmarks/sampler_tick.py [--rate 500] [--seconds 60] [--shapes cluster,single] [--json F]
    .venv/bin/python benchmarks/sampler_tick.py --lab-dir .gameday/lab      # a running lab instead
    .venv/bin/python benchmarks/sampler_tick.py --own-endpoints --ticks 200  # no lab: one nats-server with
        1000 messages pending and two prometheus_client /metrics endpoints, ticks driven back to back
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import common

from gamedaylib.clock import utcnow
from gamedaylib.gamedays.nats_partition import SCENARIO
from gamedaylib.lab import processes as proc
from gamedaylib.lab.client import Lab
from gamedaylib.probes.alerts import AlertProbe
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.readings import PipelineReader, Reading
from gamedaylib.sampler import Sampler
from gamedaylib.targets.base import Endpoints
from gamedaylib.targets.lab import LabPartition, LabTarget


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnEndpoints:
    """A real nats-server and two real /metrics endpoints, stopped on exit."""

    def __enter__(self) -> Endpoints:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        here = Path(sys.executable).parent / "nats-server"
        binary = str(here) if here.exists() else shutil.which("nats-server")
        if not binary:
            raise SystemExit("nats-server not found")
        self.tmp = tempfile.TemporaryDirectory(prefix="sampler-bench-")
        port, monitor = _free_port(), _free_port()
        self.proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-sd", self.tmp.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        monitor_url = f"http://127.0.0.1:{monitor}"
        deadline = time.monotonic() + 10
        while not NatsMonitor(monitor_url, timeout=0.5).healthz():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("nats-server did not start")
            time.sleep(0.05)

        async def setup() -> None:
            import nats
            from nats.js.api import ConsumerConfig

            nc = await nats.connect(f"nats://127.0.0.1:{port}")
            js = nc.jetstream()
            await js.add_stream(name="EVENTS", subjects=["events.>"])
            await js.add_consumer("EVENTS", ConsumerConfig(durable_name="reporting"))
            for _ in range(1000):
                await js.publish("events.x", b"{}")
            await nc.close()

        asyncio.run(setup())
        self.servers = []
        urls = {}
        for name in ("api-gateway", "reporting"):
            registry = CollectorRegistry()
            for gauge in (
                "event_buffer_size",
                "event_buffer_capacity",
                "nats_connected",
                "circuit_breaker_state",
            ):
                Gauge(gauge, "", registry=registry).set(1)
            for counter in (
                "nats_retry",
                "nats_publish_errors",
                "events_published",
                "events_stored",
                "events_accepted",
                "events_dropped",
            ):
                Counter(counter, "", registry=registry).inc(5)
            codes = Counter("http_requests", "", ["code"], registry=registry)
            for code in ("202", "400", "503"):
                codes.labels(code=code).inc(3)
            p = _free_port()
            self.servers.append(start_http_server(p, addr="127.0.0.1", registry=registry))
            urls[name] = f"http://127.0.0.1:{p}/metrics"
        return Endpoints(nats_monitor_url=monitor_url, service_metrics={k: (v,) for k, v in urls.items()})

    def __exit__(self, *exc: object) -> None:
        for server, thread in self.servers:
            server.shutdown()
            server.server_close()
            thread.join(5)
        self.proc.terminate()
        self.proc.wait(10)
        self.tmp.cleanup()




def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class _Counts:
    def counts(self) -> dict[str, int]:
        return {"sent": 0, "accepted": 0, "failed": 0}


class _Full:
    """A reader whose every input is read (for memory per row)."""

    reading_type = Reading

    def read(self) -> Reading:
        return Reading(utcnow(), **{c: 1.0 for c in Reading.columns() if c != "fault_active"}, fault_active=True)

    def close(self) -> None:
        return None


SHAPES = {
    "cluster": {"lab_nats_nodes": 3, "lab_service_replicas": 2},
    "single": {"lab_nats_nodes": 1, "lab_service_replicas": 1},
}
TARGET_CPU_PERCENT = 5.0


def runbook_reader(lab_dir: Path) -> PipelineReader:
    """The reader a GAMEDAY-001 run builds on this lab (``nats_partition.make_reader``), with the alerts
    polled as they are from T+0 on (the most a reading does) and the canaries' counts."""
    target = LabTarget(lab_dir, None, start=False)
    ep = target.endpoints
    alerts = AlertProbe(ep.alertmanager_url, ep.prometheus_url) if ep.alertmanager_url or ep.prometheus_url else None
    t0 = utcnow()
    return PipelineReader(ep, canaries=_Counts(), fault_status=LabPartition(target).status, alerts=alerts,
                          alert_names=SCENARIO.alerts, t0=lambda: t0)


def sample_for(reader: PipelineReader, seconds: float, interval: float = 1.0) -> dict[str, Any]:
    """The sampler's own thread at its interval for ``seconds``: its share of one core and its ticks."""
    with tempfile.TemporaryDirectory() as tmp:
        sampler = Sampler(reader, interval, Path(tmp) / "samples.csv")
        for _ in range(3):
            reader.read()  # warm-up: connections, the scrape pool, the leader found once
        cpu0, wall0 = time.process_time(), time.monotonic()
        sampler.start()
        time.sleep(seconds)
        sampler.stop()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        frame = sampler.frame()
    durations = [t * 1000 for t in sampler.tick_seconds]
    blind = int(frame["lag_pending"].isna().sum()) if "lag_pending" in frame else sampler.ticks
    return {
        "seconds": round(wall, 1),
        "readings": sampler.ticks,
        "cpu_share_of_one_core": round(cpu / wall, 4),
        "tick_ms_p50": round(statistics.median(durations), 2),
        "tick_ms_p95": round(_percentile(durations, 95), 2),
        "tick_ms_max": round(max(durations), 2),
        "readings_without_lag": blind,
        "lag_pending_max": float(frame["lag_pending"].max()) if "lag_pending" in frame else None,
        "source": reader.service_source,
    }


def measure_lab(name: str, knobs: dict[str, Any], seconds: float, warmup: float) -> dict[str, Any]:
    """A lab of this shape up at the rate, sampled as a run samples it, then down."""
    with tempfile.TemporaryDirectory(prefix=f"gameday-bench-sampler-{name}-") as tmp:
        folder = Path(tmp)
        proc.make_traversable(folder)
        lab = Lab(folder / "lab")
        try:
            state = lab.up(knobs)
            time.sleep(warmup)
            figures = sample_for(runbook_reader(lab.lab_dir), seconds)
        finally:
            lab.down()
    figures["prometheus"] = state["prometheus_url"] is not None
    figures["alertmanager"] = state["alertmanager_url"] is not None
    return figures


def memory_per_row() -> dict[str, float]:
    """Memory of one row: 2 h at 1 Hz of full rows, measured by tracemalloc around the ticks."""
    with tempfile.TemporaryDirectory() as tmp:
        mem_sampler = Sampler(_Full(), 1.0, Path(tmp) / "s.csv")
        for _ in range(10):
            mem_sampler.tick()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        rows = 7200
        for _ in range(rows):
            mem_sampler.tick()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return {
        "bytes_per_row_tracemalloc": round((after - before) / rows, 1),
        "bytes_per_row_arrays": round(mem_sampler.memory_bytes() / mem_sampler.ticks, 1),
        "rows_2h_at_1hz_mb": round((after - before) / 1024 / 1024, 2),
    }


def measure_back_to_back(endpoints: Endpoints, ticks: int) -> dict[str, Any]:
    """``--own-endpoints``: ticks driven back to back (no lab, no alerts), CPU per tick."""
    with tempfile.TemporaryDirectory() as tmp:
        reader = PipelineReader(endpoints, canaries=_Counts())
        sampler = Sampler(reader, 1.0, Path(tmp) / "samples.csv")
        sampler.open()
        durations, cpu = [], []
        for _ in range(5):
            sampler.tick()  # warm-up (connections, thread pool)
        for _ in range(ticks):
            started, cpu_started = time.perf_counter(), time.process_time()
            sampler.tick()
            cpu.append(time.process_time() - cpu_started)
            durations.append((time.perf_counter() - started) * 1000)
        sampler.stop()
    return {
        "readings": ticks,
        "tick_ms_p50": round(statistics.median(durations), 2),
        "tick_ms_p95": round(_percentile(durations, 95), 2),
        "tick_ms_max": round(max(durations), 2),
        "cpu_share_of_one_core": round(statistics.mean(cpu), 4),
        "source": reader.service_source,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="lab_event_rate of the labs (events/s)")
    parser.add_argument("--seconds", type=float, default=60.0, help="sampling window per lab")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--shapes", default="cluster,single", help="comma-separated: cluster, single")
    parser.add_argument("--lab-dir", default=None, help="sample this running lab instead")
    parser.add_argument("--own-endpoints", action="store_true", help="no lab (see the usage)")
    parser.add_argument("--ticks", type=int, default=200, help="with --own-endpoints")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = common.Report("sampler_tick")
    runs: dict[str, dict[str, Any]] = {}
    if args.own_endpoints:
        with OwnEndpoints() as endpoints:
            runs["own endpoints"] = measure_back_to_back(endpoints, args.ticks)
    elif args.lab_dir:
        runs["running lab"] = sample_for(runbook_reader(Path(args.lab_dir)), args.seconds)
    else:
        for name in args.shapes.split(","):
            knobs = {"lab_event_rate": args.rate, **SHAPES[name]}
            runs[name] = measure_lab(name, knobs, args.seconds, args.warmup)
    for name, fig in runs.items():
        what = (f"{SHAPES[name]['lab_nats_nodes']} NATS node(s), {SHAPES[name]['lab_service_replicas']} replica(s) "
                f"at {args.rate:g} events/s" if name in SHAPES else name)
        print(f"{name}: sampler {fig['cpu_share_of_one_core'] * 100:.2f} % of one core at 1 reading/s; one reading "
              f"p50 {fig['tick_ms_p50']} ms, p95 {fig['tick_ms_p95']} ms, max {fig['tick_ms_max']} ms over "
              f"{fig['readings']} readings ({what}; service readings from {fig['source'] or 'nowhere'})", flush=True)
        report.add(f"{name}: sampler CPU at 1 reading/s", fig["cpu_share_of_one_core"] * 100, "% of a core",
                   TARGET_CPU_PERCENT, note=what)
        report.add(f"{name}: one reading, p50", fig["tick_ms_p50"], "ms")
        report.add(f"{name}: one reading, p95", fig["tick_ms_p95"], "ms")
        if "readings_without_lag" in fig:
            report.add(f"{name}: readings without the consumer lag", float(fig["readings_without_lag"]), "count",
                       target=1, note=f"of {fig['readings']}")
    memory = memory_per_row()
    report.add("memory per row (tracemalloc)", memory["bytes_per_row_tracemalloc"], "B")
    report.add("2 h at 1 Hz", memory["rows_2h_at_1hz_mb"], "MB")
    report.extra.update(runs=runs, memory=memory)
    print(common.machine_line())
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
