"""Starting and stopping the PostgreSQL failover cluster's processes outside the lab supervisor (tests,
benchmarks).

- ``PgClusterRunner(plan)``: a context manager. ``start()`` wipes the folder's data, writes the
  configuration, spawns the ``cluster_specs(plan)`` processes in their own sessions stage by stage,
  waiting for each stage to be ready, then for the cluster to be healthy, and returns a ``PgClusterClient``;
  ``stop()`` (also on
  leaving the ``with`` block, whatever happened) stops everything. It is the client's ``Launcher``
  (``restart_killed`` spawns Patroni again through it). A watchdog process (``python -m
  gamedaylib.lab.pgrunner --reap``) stops the cluster if the process that started it dies, even by
  SIGKILL.
- ``Spawner``: the ``Launcher`` the runner is; usable alone by another process that must start Patroni
  again (``PgClusterClient(plan, launcher=Spawner())``).
- ``spawn(spec)`` and ``wait_ready(spec, popen)``: what the runner does for each process spec.
- ``python -m gamedaylib.lab.pgrunner --start DIR [--knobs JSON] [--plan-file F]``: a cluster that stays
  up until SIGTERM (its plan written to ``F`` once healthy).
Finding and stopping a cluster's processes whoever started them is ``gamedaylib.lab.pgprocesses``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from gamedaylib.exceptions import LabError
from gamedaylib.lab import processes as proc
from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.lab.pgcluster import PgClusterPlan, plan_cluster
from gamedaylib.lab.pgprocesses import stop_cluster
from gamedaylib.lab.pgspecs import ProcessSpec, cluster_specs, prepare_cluster
from gamedaylib.lab.processes import ProcessRef

__all__ = [
    "PgClusterRunner",
    "Spawner",
    "main",
    "reap",
    "run",
    "spawn",
    "wait_ready",
]

log = logging.getLogger("gamedaylib.lab.pgrunner")

HEALTHY_TIMEOUT_SECONDS = 60.0


# ------------------------------------------------------------------------------------------------ runner
def spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    """Start ``spec`` in its own session, output appended to its log file."""
    kwargs: dict[str, Any] = {}
    if spec.user is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(spec.user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    Path(spec.log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_file, "ab") as out:
        try:
            return subprocess.Popen(
                list(spec.argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=spec.cwd, env=spec.env, close_fds=True, start_new_session=True, **kwargs,
            )
        except OSError as exc:
            raise LabError(f"could not start {spec.name} ({spec.argv[0]}): {exc}") from exc


def wait_ready(spec: ProcessSpec, popen: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``spec.ready_url`` answers 2xx; LabError (with its log's tail) at the timeout or as
    soon as the process exits."""

    def ok() -> bool:
        try:
            status, _ = proc.http_get(spec.ready_url, timeout=1.0)
        except LabError:
            return False
        return 200 <= status < 300

    def died() -> str | None:
        if popen is None or popen.poll() is None:
            return None
        return (f"exited with status {popen.returncode}; last lines of {spec.log_file}:\n"
                f"{proc.tail(Path(spec.log_file))}")

    try:
        proc.wait_for(ok, timeout=spec.ready_timeout, what=f"{spec.name} ready at {spec.ready_url}",
                      interval=0.1, abort=died)
    except LabError as exc:
        if popen is not None and popen.poll() is None:
            raise LabError(f"{exc}; last lines of {spec.log_file}:\n{proc.tail(Path(spec.log_file))}") from None
        raise


class Spawner:
    """A ``Launcher``: spawns specs in their own sessions and reaps them when they end. What it
    started is found again by ``stop_cluster`` (their command lines name the cluster folder)."""

    def __init__(self) -> None:
        self.children: dict[str, list[subprocess.Popen[bytes]]] = {}
        self._lock = threading.Lock()

    def launch(self, spec: ProcessSpec) -> ProcessRef:
        popen = spawn(spec)
        with self._lock:
            self.children.setdefault(spec.name, []).append(popen)
        threading.Thread(target=popen.wait, name=f"reap-{spec.name}", daemon=True).start()
        return ProcessRef.of(spec.name, popen.pid)

    def last(self, name: str) -> subprocess.Popen[bytes]:
        return self.children[name][-1]


class PgClusterRunner(Spawner):
    """Spawns the cluster's processes for a test or a benchmark and always stops them."""

    def __init__(self, plan: PgClusterPlan) -> None:
        super().__init__()
        self.plan = plan
        self._reaper: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    def start(self, *, healthy_timeout: float = HEALTHY_TIMEOUT_SECONDS) -> PgClusterClient:
        """Start every process in order and wait until the cluster is healthy (one primary, a
        streaming replica, synchronous when planned so, a write through the endpoint); everything is
        stopped again when it fails."""
        started = time.monotonic()
        stop_cluster(self.plan.root)  # leftovers of an earlier run in this folder
        prepare_cluster(self.plan)
        self._start_reaper()
        client = PgClusterClient(self.plan, launcher=self)
        try:
            specs = cluster_specs(self.plan)
            for stage in sorted({s.stage for s in specs}):
                group = [s for s in specs if s.stage == stage]
                for spec in group:
                    self.launch(spec)
                for spec in group:
                    wait_ready(spec, self.last(spec.name))
            client.wait_healthy(timeout=healthy_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return client

    def _start_reaper(self) -> None:
        me = ProcessRef.of("owner", os.getpid())
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "gamedaylib.lab.pgrunner", "--reap", self.plan.root,
             "--owner", str(me.pid), "--owner-start", str(me.start_ticks or 0)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(Path(self.plan.log_dir) / "reaper.log", "ab"),  # noqa: SIM115 (the child owns it)
            close_fds=True, start_new_session=True,
        )

    def stop(self) -> list[int]:
        """Stop everything of the cluster (also what others started in its folder); returns the PIDs
        that had to be SIGKILLed."""
        killed = stop_cluster(self.plan.root)
        for popens in self.children.values():
            for popen in popens:
                popen.poll()
        if self._reaper is not None:
            self._reaper.terminate()
            try:
                self._reaper.wait(5.0)
            except subprocess.TimeoutExpired:
                self._reaper.kill()
                self._reaper.wait()
            self._reaper = None
        return killed

    def __enter__(self) -> PgClusterRunner:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def reap(root: str, owner: ProcessRef) -> int:
    """The watchdog: when ``owner`` is gone, stop the cluster in ``root``; SIGTERM ends it quietly."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    while not stopping.is_set():
        if not proc.is_alive(owner):
            log.warning("owner %d is gone: stopping the cluster in %s", owner.pid, root)
            stop_cluster(root)
            return 0
        stopping.wait(0.5)
    return 0


def run(root: str, knobs: dict[str, Any], plan_file: Path | None) -> int:
    """Start a cluster in ``root``, write its plan (JSON, with ``startup_seconds``) to ``plan_file``
    once healthy, and keep it up until SIGTERM/SIGINT; then stop everything."""
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    plan = plan_cluster(root, knobs)
    with PgClusterRunner(plan) as runner:
        runner.start()
        data = {**plan.to_json(), "startup_seconds": runner.startup_seconds, "runner_pid": os.getpid()}
        if plan_file is not None:
            proc.write_json_atomic(plan_file, data)
        log.info("cluster up in %.1fs; read-write endpoint %s", runner.startup_seconds, plan.rw_dsn)
        stopping.wait()
        log.info("stopping the cluster")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gamedaylib.lab.pgrunner",
        description="Run a PostgreSQL failover cluster in a folder until SIGTERM (--start), or watch an "
        "owner process and stop the cluster when it dies (--reap).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--start", metavar="CLUSTER_DIR", help="start a cluster in CLUSTER_DIR and keep it up")
    what.add_argument("--reap", metavar="CLUSTER_DIR",
                      help="stop the cluster in CLUSTER_DIR when the owner process is gone")
    parser.add_argument("--knobs", default="{}", help="lab_pg_replication / lab_pg_endpoint as JSON")
    parser.add_argument("--plan-file", type=Path, help="where --start writes the plan once the cluster is up")
    parser.add_argument("--owner", type=int)
    parser.add_argument("--owner-start", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s pgrunner %(message)s")
    if args.start:
        return run(args.start, json.loads(args.knobs), args.plan_file)
    if args.owner is None:
        parser.error("--reap needs --owner")
    return reap(args.reap, ProcessRef("owner", args.owner, args.owner_start or None))


if __name__ == "__main__":
    sys.exit(main())
