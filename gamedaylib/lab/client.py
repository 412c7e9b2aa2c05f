"""The lab's Python API: ``Lab(lab_dir)`` with ``up``, ``down``, ``status``, ``is_up``, ``partition``.

The CLI (``gameday lab ...``), the runbook's lab target, the benchmarks and the tests use it; every
method is safe to call from any process. ``up`` spawns the supervisor (``gamedaylib.lab.supervisor``)
as a detached process (its own session) and waits until it has written ``state.json``; ``down``
signals it and then kills, by PID and by session, anything of the lab still alive, so nothing is left
behind even after ``kill -9`` of the supervisor or of the process that ran ``up``.

``status()`` is ``state.json`` (docs/ARCHITECTURE.md "The lab") plus ``up``, ``partition_active``,
``partition`` and ``processes: {name: {"pid", "alive"}}``; when no lab is up, the fields of
``layout.URL_FIELDS`` are null and those of ``layout.LIST_FIELDS`` empty.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import InvalidParameters, LabAlreadyRunning, LabError
from gamedaylib.lab import processes as proc
from gamedaylib.lab.knobs import validate_knobs
from gamedaylib.lab.layout import (
    DEFAULT_LAB_DIR,
    EXIT_ALREADY_RUNNING,
    LIST_FIELDS,
    MAX_PARTITION_SECONDS,
    URL_FIELDS,
    LabLayout,
)
from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.lab.pgcluster import PgClusterPlan
from gamedaylib.lab.pgprocesses import node_pids, stop_cluster
from gamedaylib.lab.processes import ProcessRef

log = logging.getLogger("gamedaylib.lab.client")

DEFAULT_PARTITION_SECONDS = 60.0  # `partition(True)` without a duration: the proxy needs a deadline
STARTUP_TIMEOUT_SECONDS = 90.0
SERVICE_LOG_NAMES = {"api-gateway": "gateway", "gateway": "gateway", "reporting": "reporting", "nats": "nats"}


class Lab:
    """One lab folder and the processes it holds. Every method is safe to call from any process."""

    def __init__(self, lab_dir: str | os.PathLike[str] = DEFAULT_LAB_DIR) -> None:
        self.lab_dir = Path(lab_dir).expanduser().resolve()
        self.layout = LabLayout(self.lab_dir)

    # paths
    @property
    def config_path(self) -> Path:
        return self.layout.config

    @property
    def state_path(self) -> Path:
        return self.layout.state

    @property
    def pids_path(self) -> Path:
        return self.layout.pids

    @property
    def supervisor_log(self) -> Path:
        return self.layout.supervisor_log

    def service_log_files(self, service: str) -> list[Path]:
        """The log files of every replica of ``service`` (``api-gateway`` or ``gateway``,
        ``reporting``, ``nats``) in replica order, or of the single process ``service`` (``users``,
        ``proxy``, ...); only those that exist."""
        kind = SERVICE_LOG_NAMES.get(service)
        if kind is None:
            path = self.layout.log(service)
            return [path] if path.exists() else []
        found = sorted(self.layout.logs.glob(f"{kind}-*.log"), key=lambda p: _replica_index(p.stem))
        return [p for p in found if _replica_index(p.stem) >= 0]

    def _supervisor_ref(self) -> ProcessRef | None:
        pids = proc.read_json(self.pids_path)
        if pids and pids.get("supervisor"):
            return ProcessRef.from_json(pids["supervisor"])
        try:
            return ProcessRef("supervisor", int(self.layout.supervisor_pid.read_text().strip()), None)
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
        self.layout.logs.mkdir(parents=True, exist_ok=True)
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
        config = proc.read_json(self.config_path) or {}
        if config.get("pg_plan"):  # GAMEDAY-002's pair: Patroni detaches its postgres from the session
            stop_cluster(PgClusterPlan.from_json(config["pg_plan"]).root)
        for path in (self.state_path, self.pids_path, self.layout.supervisor_pid):
            path.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """The state (config, ports, URLs, pids) plus ``up``, ``partition_active`` and, per process,
        ``processes: {name: {"pid", "alive"}}``. When no lab is up, the URL fields are null."""
        state = proc.read_json(self.state_path)
        up = state is not None and self._supervisor_alive()
        result: dict[str, Any] = {name: None for name in URL_FIELDS}
        result.update({name: [] for name in LIST_FIELDS})
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
        if up and state.get("pg_plan"):
            plan = PgClusterPlan.from_json(state["pg_plan"])
            result["pg"] = PgClusterClient(plan).status().to_json()
            # a node killed and started again (GAMEDAY-002's fault and heal) runs under a new PID
            for name, pid in node_pids(plan).items():
                if name in result["processes"] and pid is not None:
                    result["processes"][name] = {"pid": pid, "alive": True}
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


def _replica_index(stem: str) -> int:
    """``gateway-1`` -> 1; -1 when the name has no replica index."""
    _, _, index = stem.rpartition("-")
    return int(index) if index.isdigit() else -1
