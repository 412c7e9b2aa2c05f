"""GAMEDAY-001: the NATS message broker network partition (``playbook.md``), on the framework.

Files beside this module: ``playbook.md`` (the written playbook), ``nats_partition_gameday.ipynb``
(the runbook: one cell per phase), ``playbook.py`` (phases, questions, metrics as data),
``params.py`` (its parameters and profiles), ``phases.py`` (one function per phase),
``nats-partition.yaml`` (the Chaos Mesh NetworkChaos template) and ``monitoring/`` (alert rules,
their lab overrides and promtool tests).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.gamedays.nats_partition.phases import PHASES, PartitionState
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.readings import PipelineReader, Reading
from gamedaylib.scenario import Scenario, Tile
from gamedaylib.targets.base import Check, Fault, FaultStatus, Target
from gamedaylib.targets.lab import LabPartition, LabTarget

if TYPE_CHECKING:
    from gamedaylib.run import Run

__all__ = ["SCENARIO"]


class ClusterPartition:
    """The partition on a cluster: the target's Chaos Mesh NetworkChaos (create, confirm, delete)."""

    description = "the services cut off from every NATS server (Chaos Mesh NetworkChaos, action partition)"

    def __init__(self, target: Any) -> None:
        self.target = target

    def preflight(self) -> list[Check]:
        return []  # the target's pre-flight already sends the NetworkChaos through a server-side dry run

    def manifest(self) -> str:
        import yaml

        return yaml.safe_dump(self.target.manifest(), sort_keys=False)

    def inject(self, *, deadline_seconds: float) -> datetime:
        t0: datetime = self.target.inject(duration_seconds=deadline_seconds)
        return t0

    def heal(self) -> datetime | None:
        healed: datetime | None = self.target.heal()
        return healed

    def status(self) -> FaultStatus:
        status: FaultStatus = self.target.fault_status()
        return status


def make_fault(target: Target, params: Any) -> Fault:
    if isinstance(target, LabTarget):
        return LabPartition(target)
    return ClusterPartition(target)


def make_reader(run: Run) -> PipelineReader:
    return PipelineReader(run.target.endpoints, canaries=run.canaries, fault_status=run.fault.status,
                          alerts=run.alert_probe_if_any(), alert_names=SCENARIO.alerts, t0=lambda: run.clock.t0)


def tiles(run: Run, reading: Reading | None) -> list[Tile]:
    """Partition, consumer lag, gateway buffer, canaries lost: what the room watches."""
    if run.fault_in_force:
        partition = Tile("partition", "ACTIVE", "alarm")
    elif run.healed_at is not None:
        partition = Tile("partition", "HEALED", "ok")
    elif reading is not None and reading.fault_active:
        partition = Tile("partition", "ACTIVE", "alarm")
    else:
        partition = Tile("partition", "OFF", "ok" if reading is not None else "unknown")
    lag = reading.lag_pending if reading is not None else None
    buffer = reading.buffer_size if reading is not None else None
    full = reading is not None and (reading.buffer_fraction_max or 0) >= 0.999
    buffer_text = "—" if buffer is None else f"{buffer:,.0f}" + (" FULL" if full else "")
    lost = run.canaries_lost_so_far()
    return [
        partition,
        Tile("consumer lag", "—" if lag is None else f"{lag:,.0f}", "unknown" if lag is None else "info"),
        Tile("gateway buffer", buffer_text,
             "unknown" if buffer is None else ("alarm" if full else "warn" if buffer else "info")),
        Tile("canaries lost", "—" if lost is None else f"{lost:,}",
             "unknown" if lost is None else ("alarm" if lost else "ok")),
    ]


SCENARIO = Scenario(
    playbook=PLAYBOOK,
    params=NatsPartitionParams,
    phases=PHASES,
    package_dir=Path(__file__).resolve().parent,
    notebook_name="nats_partition_gameday.ipynb",
    make_state=PartitionState,
    make_reader=make_reader,
    make_fault=make_fault,
    tiles=tiles,
    fault_word="partition",
    alerts=("NATSUnreachable", "NATSConsumerLagHigh", "EventBufferGrowing", "NATSCircuitBreakerOpen"),
)
