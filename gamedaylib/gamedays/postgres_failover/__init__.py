"""GAMEDAY-002: PostgreSQL primary failover (``playbook.md``), on the framework.

Files beside this module: ``playbook.md`` (the written playbook), ``postgres_failover_gameday.ipynb``
(the runbook: one cell per phase), ``playbook.py`` (phases, questions, metrics as data), ``params.py``
(its parameters and profiles), ``phases.py`` (failover, replay, rejoin, RTO; the rest is the event
pipeline's), ``database.py`` (the cluster as the readings see it), ``fault.py`` (the kill on the lab),
``postgres-primary-kill.yaml`` (the Chaos Mesh PodChaos template) and ``monitoring/`` (alert rules,
their lab overrides and promtool tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gamedaylib.gamedays.postgres_failover.database import FailoverReader, FailoverReading, LabDatabase
from gamedaylib.gamedays.postgres_failover.fault import LabPrimaryKill
from gamedaylib.gamedays.postgres_failover.params import FailoverParams
from gamedaylib.gamedays.postgres_failover.phases import PHASES, FailoverState
from gamedaylib.gamedays.postgres_failover.playbook import PLAYBOOK
from gamedaylib.lab.knobs import FailoverLabKnobs
from gamedaylib.readings import Reading
from gamedaylib.scenario import Scenario, Tile
from gamedaylib.targets import cnpg  # the cluster's side (CloudNativePG); a module: it imports database.py
from gamedaylib.targets.base import Fault, Target
from gamedaylib.targets.lab import LabTarget

if TYPE_CHECKING:
    from gamedaylib.run import Run

__all__ = ["SCENARIO"]


def make_fault(target: Target, params: Any) -> Fault:
    if isinstance(target, LabTarget):
        return LabPrimaryKill(target.pg_client(launcher=True), kill=params.kill,
                              stall_seconds=params.replication_stall_seconds)
    return cnpg.cnpg_primary_kill(target, params)


def make_reader(run: Run) -> FailoverReader:
    if isinstance(run.target, LabTarget):
        database: Any = LabDatabase(run.target.pg_client())
    else:
        database = cnpg.cnpg_database(run.target, run.params)
    run.state.database = database
    return FailoverReader(run.target.endpoints, canaries=run.canaries, fault_status=run.fault.status,
                          alerts=run.alert_probe_if_any(), alert_names=SCENARIO.alerts, t0=lambda: run.clock.t0,
                          database=database)


def tiles(run: Run, reading: Reading | None) -> list[Tile]:
    """The primary, whether writes are acknowledged, consumer lag, canaries lost."""
    r = reading if isinstance(reading, FailoverReading) else None
    primary = r.db_primary if r is not None else None
    two = r is not None and (r.writable_primaries or 0) > 1
    writes = None if r is None or r.db_writable is None else r.db_writable == 1
    lag = reading.lag_pending if reading is not None else None
    lost = run.canaries_lost_so_far()
    return [
        Tile("primary", "TWO (split brain)" if two else (primary or ("NONE" if r is not None else "—")),
             "alarm" if two or (r is not None and primary is None) else ("ok" if primary else "unknown")),
        Tile("writes", "—" if writes is None else ("ACKNOWLEDGED" if writes else "FAILING"),
             "unknown" if writes is None else ("ok" if writes else "alarm")),
        Tile("consumer lag", "—" if lag is None else f"{lag:,.0f}", "unknown" if lag is None else "info"),
        Tile("canaries lost", "—" if lost is None else f"{lost:,}",
             "unknown" if lost is None else ("alarm" if lost else "ok")),
    ]


SCENARIO = Scenario(
    playbook=PLAYBOOK,
    params=FailoverParams,
    phases=PHASES,
    package_dir=Path(__file__).resolve().parent,
    notebook_name="postgres_failover_gameday.ipynb",
    make_state=FailoverState,
    make_reader=make_reader,
    make_fault=make_fault,
    tiles=tiles,
    fault_word="primary kill",
    alerts=("PostgreSQLPrimaryDown", "PostgreSQLReplicationBroken", "PostgreSQLTwoPrimaries", "ReportingNotStoring",
            "EventBufferGrowing"),
    knobs=FailoverLabKnobs,
)
