"""The events database as GAMEDAY-002 sees it: who is primary, which nodes accept writes when asked
directly (two = a split brain), which replicas stream, and whether a write through the read-write
endpoint is acknowledged (failover is measured by writing, not by reading a status).

``Database`` is the small protocol; ``LabDatabase`` reads the lab's Patroni pair
(``lab.pgclient.PgClusterClient``). The cluster's (CloudNativePG) lives with the Kubernetes target.
``FailoverReading`` adds these facts to the pipeline's reading, one per tick; ``FailoverReader`` takes it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from gamedaylib.exceptions import LabError, ProbeError
from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.readings import PipelineReader, Reading
from gamedaylib.targets.base import Check

__all__ = ["ClusterState", "Database", "FailoverReader", "FailoverReading", "LabDatabase"]

PROBE_TIMEOUT_SECONDS = 1.5


@dataclass(frozen=True)
class ClusterState:
    """One look at the database cluster."""

    primary: str | None  # the node the failover manager holds as primary, None during a failover
    writable: tuple[str, ...]  # nodes that acknowledge a write when asked directly
    streaming: tuple[str, ...]  # replicas streaming the primary's timeline
    timeline: int | None
    lag_bytes: float | None  # the largest replica's lag behind the primary
    sync_standbys: tuple[str, ...] = ()
    detail: str = ""


class Database(Protocol):
    description: str

    def state(self) -> ClusterState:
        """The cluster now; ``ProbeError`` when it cannot be seen at all."""
        ...

    def write(self) -> tuple[bool, str]:
        """One write through the read-write endpoint, as ``reporting`` writes: (acknowledged, why not)."""
        ...

    def preflight(self) -> list[Check]: ...

    def close(self) -> None: ...


class LabDatabase:
    """The lab's Patroni pair, read through Patroni's REST API and direct connections to each node."""

    def __init__(self, client: PgClusterClient) -> None:
        self.client = client
        self.description = (f"Patroni pair ({client.plan.replication} replication) behind "
                            f"{'HAProxy' if client.plan.endpoint == 'proxy' else 'a multi-host DSN'}")
        self._lock = threading.Lock()  # the sampler's thread and a phase may both ask

    def state(self) -> ClusterState:
        with self._lock:
            try:
                members = self.client.members()
            except LabError as exc:
                members, detail = [], str(exc)
            else:
                detail = ""
            leader = next((m for m in members if m.role in ("leader", "master", "primary")
                           and m.state == "running"), None)
            writable = tuple(self.client.writable_nodes(timeout=PROBE_TIMEOUT_SECONDS))
            streaming = tuple(m.name for m in members if m.state == "streaming" and m is not leader)
            lags = [float(m.lag) for m in members if m is not leader and isinstance(m.lag, int)]
            sync = tuple(m.name for m in members if m.role == "sync_standby")
            if not members and not writable:
                raise ProbeError("database", f"neither Patroni nor any node answers: {detail}")
            return ClusterState(leader.name if leader else None, writable, streaming,
                                leader.timeline if leader else None, max(lags) if lags else None, sync, detail)

    def write(self) -> tuple[bool, str]:
        why, _port = self.client.write(self.client.rw_dsn, "endpoint", PROBE_TIMEOUT_SECONDS)
        return not why, why

    def preflight(self) -> list[Check]:
        checks = []
        try:
            state = self.state()
        except ProbeError as exc:
            return [Check("database cluster readable", False, exc.reason)]
        others = [n.name for n in self.client.plan.nodes if n.name != state.primary]
        checks.append(Check("one primary", state.primary is not None and len(state.writable) == 1,
                            f"primary {state.primary}; nodes accepting writes directly: {list(state.writable)}"))
        checks.append(Check("every replica streaming", bool(others) and all(n in state.streaming for n in others),
                            f"streaming: {list(state.streaming)} of {others}"))
        if self.client.plan.replication == "sync":
            checks.append(Check("synchronous standby recorded", bool(state.sync_standbys),
                                f"Patroni's synchronous standbys: {list(state.sync_standbys)} (a primary killed "
                                "before one is recorded is not failed over)"))
        else:
            checks.append(Check("replication is asynchronous (noted: confirmed writes may be lost)", True,
                                "lab_pg_replication=async", fatal=False))
        ok, why = self.write()
        checks.append(Check("a write through the read-write endpoint is acknowledged", ok,
                            why or f"{self.client.plan.endpoint} endpoint"))
        return checks

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class FailoverReading(Reading):
    """The pipeline's reading and the database's, one per tick."""

    db_writable: float | None = None  # 1: a write through the read-write endpoint was acknowledged now
    writable_primaries: float | None = None  # nodes acknowledging a write when asked directly
    replicas_streaming: float | None = None
    replication_lag_bytes: float | None = None
    db_timeline: float | None = None
    db_primary: str | None = field(default=None, compare=False)  # not a column: the primary's name
    db_streaming: tuple[str, ...] = field(default=(), compare=False)  # not a column: the replicas streaming

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(c for c in super().columns() if c not in ("db_primary", "db_streaming"))


class FailoverReader(PipelineReader):
    """``PipelineReader`` plus the database cluster (its state and one write through the endpoint)."""

    reading_type = FailoverReading

    def __init__(self, *args: Any, database: Database, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.database = database

    def read_more(self, errors: dict[str, str], sources: dict[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        ok, why = self.database.write()
        values["db_writable"] = 1.0 if ok else 0.0
        if not ok:
            errors["db_writable"] = why
        sources["db_writable"] = "a write through the read-write endpoint"
        try:
            state = self.database.state()
        except ProbeError as exc:
            for name in ("writable_primaries", "replicas_streaming", "replication_lag_bytes", "db_timeline"):
                errors[name] = exc.reason
            return values
        values.update(writable_primaries=float(len(state.writable)), replicas_streaming=float(len(state.streaming)),
                      replication_lag_bytes=state.lag_bytes, db_timeline=state.timeline, db_primary=state.primary,
                      db_streaming=state.streaming)
        sources["writable_primaries"] = "each node asked directly for a write"
        return values
