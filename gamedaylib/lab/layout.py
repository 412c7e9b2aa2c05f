"""Where things are in a lab folder, shared by the supervisor that writes them (``supervisor.py``) and
the client that reads them (``client.py``); docs/ARCHITECTURE.md "The lab" describes each file.

- ``LabLayout(lab_dir)``: the paths (``config``, ``state``, ``pids``, ``supervisor_pid``,
  ``supervisor_lock``, ``logs``, ``supervisor_log``, ``log(name)``).
- ``DEFAULT_LAB_DIR``, ``MAX_PARTITION_SECONDS``, ``EXIT_ALREADY_RUNNING``.
- ``URL_FIELDS`` / ``LIST_FIELDS``: the fields of ``state.json`` that ``gameday lab status --json``
  always has (null, or an empty list, when no lab is up or a part is not installed).
- ``replica_name(name, index)``: ``nats-0``, ``gateway-1``, ... (the naming rule of every node and replica).
- ``indexed_ports(ports, name)``: ``config.json``'s per-node or per-replica ports ``<name>_0``,
  ``<name>_1``, ... in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_LAB_DIR = ".gameday/lab"
MAX_PARTITION_SECONDS = 3600
EXIT_ALREADY_RUNNING = 3  # the supervisor's exit status when another one holds the lab folder

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
# one entry per NATS node (nats_*, exporter_*) or per service replica (gateway_*, reporting_*),
# in node or replica order; the singular URL field above is the first entry
LIST_FIELDS = (
    "nats_urls",
    "nats_monitor_urls",
    "exporter_metrics_urls",
    "gateway_metrics_urls",
    "reporting_metrics_urls",
)


def replica_name(name: str, index: int) -> str:
    """The name of node or replica ``index`` of ``name``: ``nats-0``, ``gateway-1`` (a StatefulSet's pod
    names); its process, its log file (``logs/<name>.log``) and its NATS client are named so."""
    return f"{name}-{index}"


def indexed_ports(ports: dict[str, int], name: str) -> list[int]:
    """``ports["<name>_0"], ports["<name>_1"], ...``: one port per node or replica, in order."""
    found: list[int] = []
    while f"{name}_{len(found)}" in ports:
        found.append(int(ports[f"{name}_{len(found)}"]))
    return found


@dataclass(frozen=True)
class LabLayout:
    """The files of one lab folder."""

    lab_dir: Path

    @property
    def config(self) -> Path:
        return self.lab_dir / "config.json"

    @property
    def state(self) -> Path:
        return self.lab_dir / "state.json"

    @property
    def pids(self) -> Path:
        return self.lab_dir / "pids.json"

    @property
    def supervisor_pid(self) -> Path:
        return self.lab_dir / "supervisor.pid"

    @property
    def supervisor_lock(self) -> Path:
        return self.lab_dir / "supervisor.lock"

    @property
    def logs(self) -> Path:
        return self.lab_dir / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    def log(self, name: str) -> Path:
        """``logs/<name>.log``: the output of process ``name`` (``gateway-0``, ``nats-2``, ``users``)."""
        return self.logs / f"{name}.log"
