"""Cost of one sampler tick (one reading of the whole pipeline) against real endpoints, and memory per row.

Usage:
    .venv/bin/python benchmarks/sampler_tick.py [--ticks 200] [--lab-dir .gameday/lab]

Without ``--lab-dir`` it starts its own real endpoints: a nats-server with JetStream (stream EVENTS,
durable consumer ``reporting``, 1000 messages pending) and two prometheus_client HTTP endpoints shaped
like the lab's api-gateway and reporting ``/metrics``. With ``--lab-dir`` it samples a running lab
(``gameday lab up``) through its state.json. Prints one line per figure; the last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.readings import PipelineReader, Reading
from gamedaylib.sampler import Sampler
from gamedaylib.targets.base import Endpoints


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
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class _Counts:
    def counts(self) -> dict[str, int]:
        return {"sent": 0, "accepted": 0, "failed": 0}


class _Full:
    """A reader whose every input is read (for memory per row)."""

    reading_type = Reading

    def read(self) -> Reading:
        from gamedaylib.clock import utcnow

        return Reading(utcnow(), **{c: 1.0 for c in Reading.columns() if c != "fault_active"}, fault_active=True)

    def close(self) -> None:
        return None


def measure(endpoints: Endpoints, ticks: int, fault_status: Any = None, interval: float = 1.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        reader = PipelineReader(endpoints, canaries=_Counts(), fault_status=fault_status)
        sampler = Sampler(reader, interval, Path(tmp) / "samples.csv")
        sampler.open()  # no background thread: ticks are driven and timed here
        durations, cpu = [], []
        for _ in range(5):
            sampler.tick()  # warm-up (connections, thread pool)
        for _ in range(ticks):
            started, cpu_started = time.perf_counter(), time.process_time()
            reading = sampler.tick()
            cpu.append(time.process_time() - cpu_started)
            durations.append((time.perf_counter() - started) * 1000)
        sampler.stop()
        missing = {c: reading.errors.get(c, "") for c in Reading.columns() if getattr(reading, c) is None}

    # Memory per row: 2 h at 1 Hz of full rows, measured by tracemalloc around the ticks.
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
        "ticks": ticks,
        "tick_ms_p50": round(statistics.median(durations), 2),
        "tick_ms_p95": round(_percentile(durations, 95), 2),
        "tick_ms_max": round(max(durations), 2),
        "cpu_share_of_one_core": round(statistics.mean(cpu) / interval, 4),
        "source": reader.service_source,
        "columns_without_value": missing,
        "bytes_per_row_tracemalloc": round((after - before) / rows, 1),
        "bytes_per_row_arrays": round(mem_sampler.memory_bytes() / mem_sampler.ticks, 1),
        "rows_2h_at_1hz_mb": round((after - before) / 1024 / 1024, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--lab-dir", default=None)
    args = parser.parse_args()
    if args.lab_dir:
        from gamedaylib.targets.lab import LabPartition, LabTarget

        target = LabTarget(args.lab_dir, None, start=False)
        figures = measure(target.endpoints, args.ticks, LabPartition(target).status)
        figures["endpoints"] = f"lab {args.lab_dir}"
    else:
        with OwnEndpoints() as endpoints:
            figures = measure(endpoints, args.ticks)
        figures["endpoints"] = "own: nats-server -js + 2 prometheus_client /metrics"
    print(
        f"sampler tick: p50 {figures['tick_ms_p50']} ms, p95 {figures['tick_ms_p95']} ms, "
        f"max {figures['tick_ms_max']} ms over {figures['ticks']} ticks ({figures['endpoints']}); "
        f"CPU {figures['cpu_share_of_one_core'] * 100:.2f} % of one core at 1 reading/s"
    )
    print(
        f"memory per row: {figures['bytes_per_row_tracemalloc']} B (tracemalloc), "
        f"{figures['bytes_per_row_arrays']} B (arrays); 2 h at 1 Hz: {figures['rows_2h_at_1hz_mb']} MB"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
