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
from gamedaylib.probes import get_json
from gamedaylib.probes.nats import NatsMonitor, ServerAnswer

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


def _publish(nats_url: str, count: int, fetch: int, ack: int = 0) -> None:
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
                delivered = await sub.fetch(fetch, timeout=5)  # delivered; the first ``ack`` acknowledged
                for msg in delivered[:ack]:
                    await msg.ack_sync()
        finally:
            await nc.close()

    asyncio.run(main())


def test_lag_probe_reads_what_was_published(nats_server: tuple[str, str]) -> None:
    nats_url, monitor_url = nats_server
    _publish(nats_url, count=25, fetch=7, ack=2)

    lag = NatsMonitor(monitor_url).consumer_lag("EVENTS", "reporting")

    assert lag.num_pending == 18
    assert lag.num_ack_pending == 5, "delivered but unacknowledged: reported beside the lag"
    assert (lag.ack_floor_stream_seq, lag.stream_last_seq) == (2, 25), "2 of 25 processed: the ack floor"
    assert lag.lag == 18, "the lag is num_pending alone, never num_pending + num_ack_pending"
    assert not hasattr(lag, "total")
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


def _make_replicated_consumer(nats_url: str, messages: int) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    async def main() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream(timeout=10)
            await js.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"], num_replicas=3))
            await js.add_consumer("EVENTS", ConsumerConfig(durable_name="reporting", num_replicas=3))
            for _ in range(messages):
                await js.publish("events.x", b"x")
        finally:
            await nc.close()

    asyncio.run(main())


def _step_down(nats_url: str) -> None:
    """Ask the consumer's leader to step down (``$JS.API.CONSUMER.LEADER.STEPDOWN``): another replica
    is elected, as when a pod restarts."""
    import nats

    async def main() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.request("$JS.API.CONSUMER.LEADER.STEPDOWN.EVENTS.reporting", b"", timeout=5)
        finally:
            await nc.close()

    asyncio.run(main())


def _readings(urls: list[str]) -> list[ServerAnswer]:
    monitor = NatsMonitor(urls)
    return [monitor.ask(u, "EVENTS", "reporting") for u in urls]


def _leader_of(urls: list[str], timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        leaders = [a.url for a in _readings(urls) if a.leads]
        if len(leaders) == 1:
            return leaders[0]
        assert time.monotonic() < deadline, f"no single consumer leader within {timeout}s: {leaders}"
        time.sleep(0.2)


def test_cluster_reads_the_consumer_leader_not_a_stale_follower(nats_cluster: tuple[str, list[str]]) -> None:
    nats_url, urls = nats_cluster
    _make_replicated_consumer(nats_url, messages=9)
    leader = _leader_of(urls)
    followers = [u for u in urls if u != leader]

    def settled() -> dict[str, ServerAnswer] | None:
        """Every server has heard of the election (a loaded machine takes a moment)."""
        answers = {a.url: a for a in _readings(urls)}
        lead = answers[leader]
        named = all(answers[f].leader == lead.server and not answers[f].leads for f in followers)
        return answers if lead.leads and lead.lag is not None and lead.lag.num_pending == 9 and named else None

    deadline = time.monotonic() + 15
    while (answers := settled()) is None:
        assert time.monotonic() < deadline, [a.describe() for a in _readings(urls)]
        time.sleep(0.2)

    # Given every server (a follower first), the probe reads the leader's numbers.
    lag = NatsMonitor([*followers, leader]).consumer_lag("EVENTS", "reporting")
    assert lag.from_leader and lag.num_pending == 9 and lag.url == leader
    assert lag.server == answers[leader].server == lag.leader
    # The older spelling (one URL plus peer_urls) finds it too.
    via_peers = NatsMonitor(followers[0], peer_urls=urls).consumer_lag("EVENTS", "reporting")
    assert via_peers.from_leader and via_peers.num_pending == 9
    # Only a follower's URL: its numbers are refused rather than passed off as the lag, and the error
    # says what it answered and what to do.
    with pytest.raises(ProbeError) as err:
        NatsMonitor(followers[0]).consumer_lag("EVENTS", "reporting")
    assert f"follower, leader is {answers[leader].server}" in err.value.reason
    assert "nats_monitor_urls" in err.value.reason


def test_leader_moving_between_two_reads_is_still_found(nats_cluster: tuple[str, list[str]]) -> None:
    """The leader is asked last; right after the first server answers, the leader steps down. The
    server that led no longer does when it is read: the probe asks again and finds the new leader."""
    nats_url, urls = nats_cluster
    _make_replicated_consumer(nats_url, messages=7)
    old_leader = _leader_of(urls)
    followers = [u for u in urls if u != old_leader]
    jsz_reads: list[str] = []

    def fetch(url: str) -> object:
        answer = get_json(url, probe="nats", timeout=2.0)
        if "/jsz?" in url:
            jsz_reads.append(url)
            if len(jsz_reads) == 1:
                _step_down(nats_url)
                deadline = time.monotonic() + 15
                while _leader_of(urls) == old_leader:
                    assert time.monotonic() < deadline, "the leader did not move"
                    time.sleep(0.1)
        return answer

    monitor = NatsMonitor([followers[0], old_leader, followers[1]], fetch=fetch)
    lag = monitor.consumer_lag("EVENTS", "reporting")
    new_leader = _leader_of(urls)
    assert new_leader != old_leader
    assert lag.from_leader and lag.url == new_leader and lag.num_pending == 7
    assert any(u.startswith(old_leader + "/jsz") for u in jsz_reads[1:]), "the old leader was read after"
    said = {a.url: a for a in monitor.last_answers}
    assert not said[old_leader].leads, "the old leader answered as a follower"


def test_unreachable_and_missing_servers_are_each_named(nats_cluster: tuple[str, list[str]]) -> None:
    nats_url, urls = nats_cluster
    _make_replicated_consumer(nats_url, messages=1)
    leader = _leader_of(urls)
    followers = [u for u in urls if u != leader]
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ProbeError) as err:
        NatsMonitor([followers[0], dead], timeout=0.5, rounds=2).consumer_lag("EVENTS", "reporting")
    reason = err.value.reason
    assert f"{dead}: {dead}" in reason and "unreachable" in reason
    assert followers[0] in reason and "follower, leader is" in reason
    with pytest.raises(ProbeError, match="consumer 'nope' not found on stream 'EVENTS' here"):
        NatsMonitor(urls).consumer_lag("EVENTS", "nope")


@pytest.fixture()
def named_account_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """One nats-server whose JetStream lives in a named account (TEEI), as a chart with accounts has it."""
    port, monitor = _free_port(), _free_port()
    conf = tmp_path / "accounts.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f"jetstream {{ store_dir: '{tmp_path / 'js'}' }}\n"
        "accounts { TEEI: { jetstream: enabled, users: [{user: teei, password: s3cret}] } }\n"
    )
    proc = subprocess.Popen(
        [_nats_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        monitor_url = f"http://127.0.0.1:{monitor}"
        deadline = time.monotonic() + 10
        while not NatsMonitor(monitor_url, timeout=0.5).healthz():
            assert proc.poll() is None and time.monotonic() < deadline, "nats-server not healthy"
            time.sleep(0.05)
        yield f"nats://teei:s3cret@127.0.0.1:{port}", monitor_url
    finally:
        proc.terminate()
        proc.wait(5)


def test_named_account_is_read_with_nats_account(named_account_server: tuple[str, str]) -> None:
    nats_url, monitor_url = named_account_server
    _publish(nats_url, count=4, fetch=1)
    with pytest.raises(ProbeError) as err:
        NatsMonitor(monitor_url).consumer_lag("EVENTS", "reporting")
    assert "account '$G' has no JetStream here" in err.value.reason and "TEEI" in err.value.reason
    assert "nats_account" in err.value.reason
    lag = NatsMonitor(monitor_url, account="TEEI").consumer_lag("EVENTS", "reporting")
    assert (lag.num_pending, lag.num_ack_pending) == (3, 1)
