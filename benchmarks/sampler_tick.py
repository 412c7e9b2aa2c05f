"""Cost of one sampler tick against real endpoints, and memory per row.

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
from gamedaylib.sampler import LAB_COLUMNS, Sampler, lab_sample_fn
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
        return Endpoints(nats_monitor_url=monitor_url, service_metrics=urls)

    def __exit__(self, *exc: object) -> None:
        for server, thread in self.servers:
            server.shutdown()
            server.server_close()
            thread.join(5)
        self.proc.terminate()
        self.proc.wait(10)
        self.tmp.cleanup()


def _lab_endpoints(lab_dir: str) -> Endpoints:
    state = json.loads((Path(lab_dir) / "state.json").read_text())
    metrics = {"api-gateway": state["gateway_metrics_url"], "reporting": state["reporting_metrics_url"]}
    if state.get("exporter_metrics_url"):
        metrics["nats-exporter"] = state["exporter_metrics_url"]
    return Endpoints(nats_monitor_url=state.get("nats_monitor_url"), service_metrics=metrics)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class _Counts:
    def counts(self) -> dict[str, int]:
        return {"sent": 0, "accepted": 0, "failed": 0}


def measure(endpoints: Endpoints, ticks: int, target: Any = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        fn = lab_sample_fn(endpoints, canary_sender=_Counts(), target=target)
        sampler = Sampler(fn, 1.0, Path(tmp) / "samples.csv")
        sampler.open()  # no background thread: ticks are driven and timed here
        durations = []
        for _ in range(5):
            sampler.tick()  # warm-up (connections, thread pool)
        for _ in range(ticks):
            started = time.perf_counter()
            row = sampler.tick()
            durations.append((time.perf_counter() - started) * 1000)
        sampler.stop()
        missing = [c for c in LAB_COLUMNS if row.get(c) is None]

    # Memory per row: 2 h at 1 Hz of full rows, measured by tracemalloc around the ticks.
    with tempfile.TemporaryDirectory() as tmp:
        full = dict.fromkeys(LAB_COLUMNS, 1.0)
        mem_sampler = Sampler(lambda: full, 1.0, Path(tmp) / "s.csv", columns=LAB_COLUMNS)
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
        from gamedaylib.targets.lab import LabTarget

        target = LabTarget(args.lab_dir, None, start=False)  # the running lab's proxy: partition_active
        figures = measure(_lab_endpoints(args.lab_dir), args.ticks, target)
        figures["endpoints"] = f"lab {args.lab_dir}"
    else:
        with OwnEndpoints() as endpoints:
            figures = measure(endpoints, args.ticks)
        figures["endpoints"] = "own: nats-server -js + 2 prometheus_client /metrics"
    print(
        f"sampler tick: p50 {figures['tick_ms_p50']} ms, p95 {figures['tick_ms_p95']} ms, "
        f"max {figures['tick_ms_max']} ms over {figures['ticks']} ticks ({figures['endpoints']})"
    )
    print(
        f"memory per row: {figures['bytes_per_row_tracemalloc']} B (tracemalloc), "
        f"{figures['bytes_per_row_arrays']} B (arrays); 2 h at 1 Hz: {figures['rows_2h_at_1hz_mb']} MB"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
