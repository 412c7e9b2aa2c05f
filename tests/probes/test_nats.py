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
            await js.add_consumer(
                "EVENTS", ConsumerConfig(durable_name="reporting", ack_policy=AckPolicy.EXPLICIT)
            )
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


@pytest.fixture()
def nats_cluster(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Three nats-servers in one JetStream cluster."""
    binary = _nats_binary()
    client = [_free_port() for _ in range(3)]
    monitor = [_free_port() for _ in range(3)]
    route = [_free_port() for _ in range(3)]
    routes = ", ".join(f"nats://127.0.0.1:{p}" for p in route)
    procs = []
    try:
        for i in range(3):
            conf = tmp_path / f"n{i}.conf"
            conf.write_text(
                f"server_name: n{i}\nlisten: 127.0.0.1:{client[i]}\nhttp: 127.0.0.1:{monitor[i]}\n"
                f"jetstream {{ store_dir: '{tmp_path / f'js{i}'}' }}\n"
                f"cluster {{ name: C, listen: 127.0.0.1:{route[i]}, routes: [{routes}] }}\n"
            )
            procs.append(
                subprocess.Popen(
                    [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        urls = [f"http://127.0.0.1:{p}" for p in monitor]
        deadline = time.monotonic() + 20
        while not all(NatsMonitor(u, timeout=0.5).healthz() for u in urls):
            assert time.monotonic() < deadline, "cluster not healthy within 20 s"
            time.sleep(0.2)
        yield f"nats://127.0.0.1:{client[0]}", urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_cluster_reads_the_consumer_leader_not_a_stale_follower(nats_cluster: tuple[str, list[str]]) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nats_url, urls = nats_cluster

    async def main() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream(timeout=10)
            await js.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"], num_replicas=3))
            await js.add_consumer("EVENTS", ConsumerConfig(durable_name="reporting", num_replicas=3))
            for _ in range(9):
                await js.publish("events.x", b"x")
        finally:
            await nc.close()

    asyncio.run(main())
    time.sleep(0.5)
    readings = [NatsMonitor(u, allow_replica=True).consumer_lag("EVENTS", "reporting") for u in urls]
    leaders = [u for u, r in zip(urls, readings, strict=True) if r.from_leader]
    followers = [u for u, r in zip(urls, readings, strict=True) if not r.from_leader]
    assert len(leaders) == 1 and len(followers) == 2
    assert readings[urls.index(leaders[0])].num_pending == 9

    # Asked through a follower with the peers known, the probe finds the leader's numbers.
    via_peers = NatsMonitor(followers[0], peer_urls=urls).consumer_lag("EVENTS", "reporting")
    assert via_peers.from_leader and via_peers.num_pending == 9
    assert via_peers.leader == readings[urls.index(leaders[0])].leader
    # Without peers, a follower's numbers are refused rather than passed off as the lag.
    with pytest.raises(ProbeError, match="not the leader"):
        NatsMonitor(followers[0]).consumer_lag("EVENTS", "reporting")
