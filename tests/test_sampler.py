"""The sampler: interval accuracy, incremental CSV, failing samples, phases; the lab sample on real
endpoints (a real nats-server with JetStream and real /metrics endpoints shaped like the lab's)."""

from __future__ import annotations

import asyncio
import csv
import itertools
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.sampler import LAB_COLUMNS, Sampler, lab_sample_fn, read_samples
from gamedaylib.targets.base import Endpoints

pytestmark = pytest.mark.timeout(60)


@dataclass
class FakeClock:
    t0: datetime | None = None


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_ticks_on_a_fixed_grid_and_writes_each_row_at_once(tmp_path: Path) -> None:
    calls: list[float] = []

    def sample() -> dict[str, float]:
        calls.append(time.monotonic())
        # Each sample costs 30 ms: a sampler that sleeps an interval *after* sampling would drift to
        # 130 ms per tick; one on a fixed grid stays at 100 ms.
        time.sleep(0.25 if len(calls) == 4 else 0.03)  # sample 4 overruns 2 grid points
        return {"a": len(calls), "b": 0.5}

    path = tmp_path / "samples.csv"
    sampler = Sampler(sample, 0.1, path, columns=["a", "b"])
    sampler.start()
    try:
        time.sleep(0.75)
        seen_live = _csv_rows(path)  # read while the sampler runs: rows are already on disk
        time.sleep(1.0)
    finally:
        sampler.stop()
    assert not sampler.running
    assert len(seen_live) >= 3
    assert list(seen_live[0]) == ["ts", "t_offset_s", "phase", "a", "b", "sample_error"]

    rows = sampler.rows()
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    normal = [g for i, g in enumerate(gaps) if i != 3]
    assert sum(normal) / len(normal) == pytest.approx(0.1, abs=0.012), normal  # on the grid, no drift
    # The overrun sample resumes on the next grid point (0.3 s later): no skipped-tick burst after it.
    assert 0.25 <= gaps[3] < 0.45
    assert min(gaps[4:]) > 0.05
    assert len(_csv_rows(path)) == len(rows) == len(calls)
    assert rows[0]["a"] == 1.0 and rows[0]["b"] == 0.5 and rows[0]["t_offset_s"] is None
    assert sampler.tick_seconds[0] == pytest.approx(0.03, abs=0.02)


def test_failing_sample_is_a_blank_row_and_the_thread_goes_on(tmp_path: Path) -> None:
    n = {"calls": 0}

    def sample() -> dict[str, float]:
        n["calls"] += 1
        if n["calls"] % 2 == 0:
            raise RuntimeError("probe exploded")
        return {"x": n["calls"]}

    path = tmp_path / "samples.csv"
    with Sampler(sample, 0.05, path, columns=["x"]) as sampler:
        time.sleep(0.4)
    rows = sampler.rows()
    assert len(rows) >= 6
    assert sampler.errors == sum(1 for r in rows if r["x"] is None) >= 3
    on_disk = _csv_rows(path)
    assert on_disk[1]["x"] == "" and "RuntimeError: probe exploded" in on_disk[1]["sample_error"]
    assert on_disk[2]["x"] == "3" and on_disk[2]["sample_error"] == ""
    assert "probe exploded" in (sampler.last_error or "")


def test_phases_offsets_and_latest(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "samples.csv"
    sampler = Sampler(lambda: {"v": 1}, 0.05, path, clock=clock, columns=["v"])
    assert sampler.latest() is None
    sampler.mark_phase("preflight")
    sampler.start()
    try:
        time.sleep(0.2)
        sampler.mark_phase("injection")
        clock.t0 = datetime.now(timezone.utc)
        time.sleep(0.2)
        latest = sampler.latest()
    finally:
        sampler.stop()
    assert latest is not None and latest["phase"] == "injection" and 0 <= latest["t_offset_s"] < 0.3
    phases = sampler.phases()
    assert [p for p, _, _ in phases] == ["preflight", "injection"]
    assert phases[0][2] == phases[1][1] and phases[1][2] is not None  # closed at stop
    rows = sampler.rows()
    assert rows[0]["phase"] == "preflight" and rows[0]["t_offset_s"] < 0
    # After stop the CSV carries the negative offsets of the rows sampled before T+0.
    on_disk = read_samples(path)
    assert all(r["t_offset_s"] is not None for r in on_disk)
    assert on_disk[0]["t_offset_s"] == pytest.approx(rows[0]["t_offset_s"], abs=0.002)
    assert on_disk[0]["phase"] == "preflight" and on_disk[-1]["phase"] == "injection"


def test_invalid_interval_and_undeclared_columns(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameters, match="sample_interval_seconds"):
        Sampler(dict, 0, tmp_path / "s.csv", columns=["a"])
    with pytest.raises(TypeError, match="declare the columns"):
        Sampler(dict, 1, tmp_path / "s.csv")


def test_memory_stays_small_for_two_hours_at_1hz(tmp_path: Path) -> None:
    sampler = Sampler(lambda: dict.fromkeys(LAB_COLUMNS, 1.0), 1.0, tmp_path / "s.csv", columns=LAB_COLUMNS)
    for _ in range(7200):
        sampler.tick()
    assert sampler.memory_bytes() < 2 * 1024 * 1024
    assert len(sampler.rows()) == 7200


# -- the lab sample on real endpoints ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def real_endpoints(tmp_path: Path) -> Iterator[Endpoints]:
    binary = Path(sys.executable).parent / "nats-server"
    nats_bin = str(binary) if binary.exists() else shutil.which("nats-server")
    if not nats_bin:
        pytest.skip("nats-server not installed")
    port, monitor = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            nats_bin,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(monitor),
            "-sd",
            str(tmp_path / "js"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers = []
    try:
        monitor_url = f"http://127.0.0.1:{monitor}"
        deadline = time.monotonic() + 10
        while not NatsMonitor(monitor_url, timeout=0.5).healthz():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)

        async def setup() -> None:
            import nats
            from nats.js.api import ConsumerConfig

            nc = await nats.connect(f"nats://127.0.0.1:{port}")
            js = nc.jetstream()
            await js.add_stream(name="EVENTS", subjects=["events.>"])
            await js.add_consumer("EVENTS", ConsumerConfig(durable_name="reporting"))
            for _ in range(12):
                await js.publish("events.x", b"{}")
            await nc.close()

        asyncio.run(setup())

        gw, rep = CollectorRegistry(), CollectorRegistry()
        Gauge("event_buffer_size", "", registry=gw).set(17)
        Gauge("event_buffer_capacity", "", registry=gw).set(10000)
        Counter("nats_retry", "", registry=gw).inc(4)
        Counter("nats_publish_errors", "", registry=gw).inc(2)
        codes = Counter("http_requests", "", ["code"], registry=gw)
        codes.labels(code="202").inc(50)
        codes.labels(code="503").inc(3)
        Counter("events_published", "", registry=gw).inc(47)
        Gauge("circuit_breaker_state", "", registry=gw).set(2)
        Gauge("nats_connected", "", registry=gw).set(0)
        Counter("nats_retry", "", registry=rep).inc(1)
        Counter("events_stored", "", registry=rep).inc(35)
        Gauge("nats_connected", "", registry=rep).set(1)
        urls = {}
        for name, registry in (("api-gateway", gw), ("reporting", rep)):
            p = _free_port()
            servers.append(start_http_server(p, addr="127.0.0.1", registry=registry))
            urls[name] = f"http://127.0.0.1:{p}/metrics"
        yield Endpoints(nats_monitor_url=monitor_url, service_metrics=urls)
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)
        proc.terminate()
        proc.wait(10)


class Canaries:
    def counts(self) -> dict[str, int]:
        return {"sent": 9, "accepted": 7, "failed": 2}


class Partition:
    def partition_active(self) -> bool:
        return True


def test_lab_sample_reads_every_column_from_real_endpoints(real_endpoints: Endpoints) -> None:
    fn = lab_sample_fn(real_endpoints, canary_sender=Canaries(), target=Partition())
    try:
        row = fn()
    finally:
        fn.close()
    assert set(LAB_COLUMNS) <= set(row)
    assert row["lag_pending"] == 12 and row["lag_ack_pending"] == 0
    assert (row["buffer_size"], row["buffer_capacity"]) == (17, 10000)
    assert row["retry_total"] == 5  # gateway 4 + reporting 1
    assert (row["publish_errors_total"], row["http_5xx_total"]) == (2, 3)
    assert (row["events_published_total"], row["events_stored_total"]) == (47, 35)
    assert (row["circuit_breaker_state"], row["gateway_nats_connected"], row["reporting_nats_connected"]) == (
        2,
        0,
        1,
    )
    assert (row["canaries_sent"], row["canaries_failed"], row["partition_active"]) == (9, 2, True)
    assert "sample_error" not in row


def test_lab_sample_blanks_only_what_is_down(real_endpoints: Endpoints) -> None:
    broken = Endpoints(
        nats_monitor_url=f"http://127.0.0.1:{_free_port()}",
        service_metrics={
            **real_endpoints.service_metrics,
            "reporting": f"http://127.0.0.1:{_free_port()}/metrics",
        },
    )
    fn = lab_sample_fn(broken)
    try:
        started = time.monotonic()
        row = fn()
        took = time.monotonic() - started
    finally:
        fn.close()
    assert row["buffer_size"] == 17  # the gateway still answers
    assert row.get("lag_pending") is None and row.get("events_stored_total") is None
    assert "nats:" in row["sample_error"] and "reporting:" in row["sample_error"]
    assert took < 2.5


def test_sampler_over_real_endpoints_writes_samples_csv(real_endpoints: Endpoints, tmp_path: Path) -> None:
    clock = FakeClock(datetime.now(timezone.utc) - timedelta(seconds=5))
    path = tmp_path / "samples.csv"
    with Sampler(lab_sample_fn(real_endpoints), 0.2, path, clock=clock) as sampler:
        sampler.mark_phase("buffering")
        time.sleep(0.7)
    rows = read_samples(path)
    assert len(rows) >= 3
    assert all(r["lag_pending"] == 12 and r["buffer_size"] == 17 for r in rows)
    assert all(4.9 < r["t_offset_s"] < 7 for r in rows)
    assert threading.active_count() < 50
