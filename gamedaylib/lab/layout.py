"""Where things are in a lab folder, shared by the supervisor that writes them (``supervisor.py``) and
the client that reads them (``client.py``); docs/ARCHITECTURE.md "The lab" describes each file.

- ``LabLayout(lab_dir)``: the paths (``config``, ``state``, ``pids``, ``supervisor_pid``,
  ``supervisor_lock``, ``logs``, ``supervisor_log``, ``log(name)``).
- ``DEFAULT_LAB_DIR``, ``MAX_PARTITION_SECONDS``, ``EXIT_ALREADY_RUNNING``.
- ``URL_FIELDS`` / ``LIST_FIELDS``: the fields of ``state.json`` that ``gameday lab status --json``
  always has (null, or an empty list, when no lab is up or a part is not installed).
- ``process_names(knobs)``: the names the lab's replicated processes get for these knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
# replicated processes: name prefix -> the knob that counts them
REPLICATED = {"nats": "lab_nats_nodes", "gateway": "lab_service_replicas", "reporting": "lab_service_replicas"}


def replica_names(name: str, count: int) -> list[str]:
    """``nats-0``, ``nats-1``, ...: the pod names a StatefulSet would give."""
    return [f"{name}-{i}" for i in range(count)]


def process_names(knobs: dict[str, Any]) -> dict[str, list[str]]:
    """The names of the replicated processes for these (validated) knobs, by kind."""
    return {kind: replica_names(kind, int(knobs[knob])) for kind, knob in REPLICATED.items()}


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
