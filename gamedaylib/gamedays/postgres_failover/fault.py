"""GAMEDAY-002's fault on the lab: the PostgreSQL primary killed, the way a pod kill does it.

``LabPrimaryKill`` SIGKILLs the primary's Patroni and every PostgreSQL process (``kill=node``), or its
Patroni alone (``kill=agent``: the postgres it leaves keeps running as an orphan primary). With
asynchronous replication the lab first stalls the replication link (``replication_stall_seconds``), so
that commits the primary acknowledges meanwhile exist nowhere else: the lag is real, not assumed.
T+0 is the moment every killed process was frozen. ``heal`` brings the killed node back (the lab's
counterpart of Kubernetes restarting the pod): its Patroni rejoins as a replica, rewinding with
pg_rewind what it wrote alone. ``promote`` is the rollback's manual promotion.
"""

from __future__ import annotations

import time
from datetime import datetime

from gamedaylib.clock import utcnow
from gamedaylib.exceptions import HealFailed, InjectionFailed, LabError
from gamedaylib.gamedays.postgres_failover.database import LabDatabase
from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.targets.base import Check, FaultStatus

__all__ = ["LabPrimaryKill"]


class LabPrimaryKill:
    def __init__(self, client: PgClusterClient, *, kill: str, stall_seconds: float) -> None:
        self.client = client
        self.agent_only = kill == "agent"
        self.stall_seconds = stall_seconds if client.plan.replication == "async" else 0.0
        self.description = ("the PostgreSQL primary's failover agent (Patroni) killed, its postgres left running"
                            if self.agent_only else "the PostgreSQL primary killed (Patroni and every postgres "
                            "process, as a pod kill)")
        self.killed: str | None = None
        self.killed_at: datetime | None = None
        self.restarted_at: datetime | None = None

    def preflight(self) -> list[Check]:
        return LabDatabase(self.client).preflight()

    def manifest(self) -> str:
        stall = (f"stall the replication link {self.stall_seconds:g} s, then " if self.stall_seconds else "")
        return f"{stall}SIGKILL {'Patroni' if self.agent_only else 'Patroni and postgres'} of the current primary"

    def inject(self, *, deadline_seconds: float) -> datetime:
        primary = self.client.primary()
        if primary is None:
            raise InjectionFailed("no primary to kill: Patroni holds none right now")
        try:
            if self.stall_seconds:
                # the link heals by itself a moment after the kill; commits acknowledged meanwhile exist
                # on the primary alone
                self.client.stall_replication(self.stall_seconds + 1.0)
                time.sleep(self.stall_seconds)
            at = self.client.kill(primary, agent_only=self.agent_only)
        except LabError as exc:
            raise InjectionFailed(f"could not kill {primary}: {exc}") from exc
        self.killed, self.killed_at = primary, at
        return at

    def heal(self) -> datetime | None:
        """The killed node comes back (and a stalled link flows again); safe twice."""
        try:
            if self.stall_seconds:
                self.client.resume_replication()
            if self.killed is None or self.restarted_at is not None:
                return None
            self.restarted_at = self.client.restart_killed(self.killed)
        except LabError as exc:
            raise HealFailed(f"could not bring {self.killed} back: {exc}") from exc
        return self.restarted_at

    def status(self) -> FaultStatus:
        active = self.killed is not None and self.restarted_at is None
        return FaultStatus(active, detail=f"{self.killed} killed at {self.killed_at}" if active else "")

    def promote(self, timeout: float) -> tuple[str, datetime]:
        """The rollback's manual promotion of the surviving node; its name and when it took writes."""
        survivor = next(n.name for n in self.client.plan.nodes if n.name != self.killed)
        try:
            return survivor, self.client.promote(survivor, timeout=timeout)
        except LabError as exc:
            raise HealFailed(f"manual promotion of {survivor} failed: {exc}") from exc

    def since_kill(self) -> float | None:
        return None if self.killed_at is None else (utcnow() - self.killed_at).total_seconds()
