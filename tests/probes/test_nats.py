"""The NATS lag probe against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gamedaylib.exceptions import ProbeError
from gamedaylib.probes.nats import NatsMonitor

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nats_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if not found:
        pytest.skip("nats-server binary not installed")
    return found


@pytest.fixture()
def nats_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    port, monitor = _free_port(), _free_port()
    proc = subprocess.Popen(
        [_nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-sd", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        monitor_url = f"http://127.0.0.1:{monitor}"
        deadline = time.monotonic() + 10
        while not NatsMonitor(monitor_url, timeout=0.5).healthz():
            assert proc.poll() is None, "nats-server exited"
            assert time.monotonic() < deadline, "nats-server not healthy within 10 s"
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}", monitor_url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _publish(nats_url: str, count: int, fetch: int) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    async def main() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="EVENTS", subjects=["events.>"])
            await js.add_consumer("EVENTS", ConsumerConfig(durable_name="reporting", ack_policy=AckPolicy.EXPLICIT))
            for i in range(count):
                await js.publish("events.test", f"event {i}".encode())
            if fetch:
                sub = await js.pull_subscribe("events.>", durable="reporting", stream="EVENTS")
                await sub.fetch(fetch, timeout=5)  # delivered, deliberately not acknowledged
        finally:
            await nc.close()

    asyncio.run(main())


def test_lag_probe_reads_what_was_published(nats_server: tuple[str, str]) -> None:
    nats_url, monitor_url = nats_server
    _publish(nats_url, count=25, fetch=5)

    lag = NatsMonitor(monitor_url).consumer_lag("EVENTS", "reporting")

    assert lag.num_pending == 20
    assert lag.num_ack_pending == 5
    assert lag.total == 25
    assert lag.stream == "EVENTS" and lag.consumer == "reporting"
    assert lag.leader  # a single server leads its own streams
    assert lag.from_leader


def test_health_and_server_identity(nats_server: tuple[str, str]) -> None:
    _, monitor_url = nats_server
    monitor = NatsMonitor(monitor_url)
    assert monitor.healthz() is True
    info = monitor.server_ok()
    assert info["jetstream"] is True and info["healthy"] is True and info["version"]


def test_missing_consumer_and_stream_are_readable_errors(nats_server: tuple[str, str]) -> None:
    nats_url, monitor_url = nats_server
    _publish(nats_url, count=1, fetch=0)
    monitor = NatsMonitor(monitor_url)
    with pytest.raises(ProbeError, match="consumer 'nope' not found"):
        monitor.consumer_lag("EVENTS", "nope")
    with pytest.raises(ProbeError, match="stream 'NOPE' not found"):
        monitor.consumer_lag("NOPE", "reporting")


def test_unreachable_monitor_raises_probe_error() -> None:
    monitor = NatsMonitor(f"http://127.0.0.1:{_free_port()}", timeout=0.5)
    assert monitor.healthz() is False
    with pytest.raises(ProbeError, match="unreachable"):
        monitor.consumer_lag("EVENTS", "reporting")
