"""Controlling and observing the PostgreSQL failover cluster: what the lab, GAMEDAY-002's fault and its
probes call.

``PgClusterClient(plan, launcher=None)``:

- status: ``members()`` (Patroni's REST ``/cluster``: name, role, state, timeline, lag), ``primary()``,
  ``probe_nodes()``/``writable_nodes()`` (connect to EACH node directly: not in recovery and a write
  commits: two names = split brain), ``replica_streaming(node)`` (``pg_stat_wal_receiver``),
  ``sync_standbys()`` (``pg_stat_replication`` on the primary), ``proxy_servers_up()`` (HAProxy's view),
  ``status()`` (all of it, for ``lab status --json``);
- waits: ``wait_writable(dsn=None, timeout)`` (failover time is measured by WRITING through the
  endpoint), ``wait_streaming(node, timeout)``, ``wait_healthy(timeout)``;
- faults and healing: ``kill(node, agent_only=False)`` (SIGKILL of the node as a pod kill does it, or of
  Patroni alone: the split-brain flaw), ``stall_replication(seconds)``/``resume_replication()`` (the
  relays drop replication traffic: lag becomes real), ``promote(node)`` (manual promotion through
  Patroni, the rollback), ``restart_killed(node)`` (Patroni again, through the ``Launcher``: the old
  primary rejoins as a replica, with pg_rewind).

Every failure is a ``LabError`` naming what failed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import psycopg

from gamedaylib.exceptions import InvalidParameters, LabError
from gamedaylib.lab import processes as proc
from gamedaylib.lab.pgcluster import MAX_STALL_SECONDS, PgClusterPlan, PgNodePlan
from gamedaylib.lab.pgprocesses import descendants, exporter_pid, patroni_pid, postmaster_pid
from gamedaylib.lab.pgspecs import ProcessSpec, exporter_spec, patroni_spec
from gamedaylib.lab.processes import ProcessRef

__all__ = [
    "ClusterStatus",
    "Launcher",
    "Member",
    "NodeProbe",
    "PgClusterClient",
    "cancel",
    "cancel_after",
]

PROBE_TABLE = "gameday_pg_probe"
LEADER_ROLES = ("leader", "master", "primary")
SYNC_WAIT_CANCELLED = "synchronous replication"  # PostgreSQL's warning when a commit's sync wait is cut


def now() -> datetime:
    return datetime.now(timezone.utc)


class Launcher(Protocol):
    """Spawns a process spec and tracks it (the standalone runner; the lab supervisor)."""

    def launch(self, spec: ProcessSpec) -> ProcessRef: ...


@dataclass(frozen=True)
class Member:
    """One node as Patroni reports it."""

    name: str
    role: str  # leader | sync_standby | replica | ...
    state: str  # running | streaming | stopped | starting | ...
    timeline: int | None
    lag: int | None  # bytes behind the leader (None: unknown or the leader)
    host: str | None
    port: int | None
    api_url: str | None


@dataclass(frozen=True)
class NodeProbe:
    """One node, asked directly: reachable, in recovery, and whether a write commits there."""

    name: str
    reachable: bool
    in_recovery: bool | None
    writable: bool
    detail: str = ""


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster for ``lab status --json``."""

    replication: str
    endpoint: str
    rw_dsn: str
    primary: str | None
    members: list[Member]
    nodes: list[dict[str, Any]]
    replication_stalled: bool | None
    proxy_servers_up: list[str] | None
    haproxy_stats_url: str | None
    etcd_url: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Kill:
    at: datetime
    agent_only: bool
    pids: list[int] = field(default_factory=list)


class PgClusterClient:
    """Status and control of one planned cluster, from any process on the machine."""

    def __init__(self, plan: PgClusterPlan, launcher: Launcher | None = None) -> None:
        self.plan = plan
        self.launcher = launcher
        self.kills: dict[str, _Kill] = {}

    @property
    def rw_dsn(self) -> str:
        return self.plan.rw_dsn

    def node(self, name: str) -> PgNodePlan:
        return self.plan.node(name)

    # -------------------------------------------------------------------------------------------- Patroni
    def members(self) -> list[Member]:
        """Patroni's ``GET /cluster`` from the first node whose REST API answers."""
        errors = []
        for node in self.plan.nodes:
            try:
                data = proc.http_json(f"{node.rest_url}/cluster", timeout=2.0)
            except LabError as exc:
                errors.append(str(exc))
                continue
            return [_member(m) for m in data.get("members", [])]
        raise LabError("no Patroni REST API answers /cluster: " + "; ".join(errors))

    def primary(self) -> str | None:
        """The node Patroni holds as leader and running, or None (during a failover)."""
        try:
            members = self.members()
        except LabError:
            return None
        leaders = [m.name for m in members if m.role in LEADER_ROLES and m.state == "running"]
        return leaders[0] if leaders else None

    # -------------------------------------------------------------------------------------------- PostgreSQL
    def _connect(self, dsn: str, timeout: float, notices: list[str] | None = None) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(2, int(timeout)),
            options=f"-c statement_timeout={int(timeout * 1000)}",
        )
        if notices is not None:
            conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        return conn

    def write(self, dsn: str, key: str, timeout: float) -> tuple[str, int | None]:
        """Commit one probe write through ``dsn``: ('', the answering server's port) when acknowledged,
        else (why not, None). The write is cancelled after ``timeout`` seconds: ``statement_timeout``
        does not cover a commit's wait for a synchronous standby, which on an orphaned primary lasts
        forever."""
        notices: list[str] = []
        try:
            with self._connect(dsn, timeout, notices) as conn, cancel_after(conn, timeout):
                row = conn.execute(
                    f"INSERT INTO {PROBE_TABLE} (probe, at) VALUES (%s, now()) "
                    "ON CONFLICT (probe) DO UPDATE SET at = excluded.at RETURNING inet_server_port()",
                    (key,),
                ).fetchone()
        except psycopg.Error as exc:
            return _first_line(exc), None
        if any(SYNC_WAIT_CANCELLED in n for n in notices):
            return "the commit waited for a synchronous standby until cancelled (committed locally only)", None
        return "", int(row[0]) if row and row[0] is not None else None

    def probe_nodes(self, timeout: float = 2.0) -> list[NodeProbe]:
        """Ask each node directly: is it out of recovery, and does a write commit there (without its
        commit waiting for a synchronous standby that never answers)?"""
        probes = []
        for node in self.plan.nodes:
            try:
                with self._connect(node.dsn(self.plan.database), timeout) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                in_recovery = bool(row and row[0])
            except psycopg.Error as exc:
                probes.append(NodeProbe(node.name, False, None, False, _first_line(exc)))
                continue
            if in_recovery:
                probes.append(NodeProbe(node.name, True, True, False, "in recovery (a replica)"))
                continue
            why, _ = self.write(node.dsn(self.plan.database), f"node:{node.name}", timeout)
            probes.append(NodeProbe(node.name, True, False, not why, why or "write committed"))
        return probes

    def writable_nodes(self, timeout: float = 2.0) -> list[str]:
        """Nodes that accept a write when asked directly; more than one is a split brain."""
        return [p.name for p in self.probe_nodes(timeout) if p.writable]

    def replica_streaming(self, node: str) -> bool:
        """True when ``node`` is a replica streaming the current primary's timeline and the primary
        lists it as streaming (a diverged old primary may connect for a moment before pg_rewind: it
        does not count)."""
        try:
            members = self.members()
        except LabError:
            return False
        leader = next((m for m in members if m.role in LEADER_ROLES and m.state == "running"), None)
        if leader is None or leader.name == node or leader.timeline is None:
            return False
        try:
            with self._connect(self.node(node).dsn(self.plan.database), 2.0) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), status, received_tli FROM pg_stat_wal_receiver "
                    "RIGHT JOIN (SELECT 1) AS one ON true LIMIT 1"
                ).fetchone()
            if not (row and row[0] and row[1] == "streaming" and row[2] == leader.timeline):
                return False
            with self._connect(self.node(leader.name).dsn(self.plan.database), 2.0) as conn:
                seen = conn.execute(
                    "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
                    (node,),
                ).fetchone()
        except psycopg.Error:
            return False
        return seen is not None

    def sync_standbys(self) -> list[str]:
        """Standbys the primary replicates to synchronously (``pg_stat_replication.sync_state``)."""
        primary = self.primary()
        if primary is None:
            return []
        try:
            with self._connect(self.node(primary).dsn(self.plan.database), 2.0) as conn:
                rows = conn.execute(
                    "SELECT application_name FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')"
                ).fetchall()
        except psycopg.Error as exc:
            raise LabError(f"could not read pg_stat_replication on {primary}: {_first_line(exc)}") from exc
        return [r[0] for r in rows]

    def proxy_servers_up(self) -> list[str] | None:
        """The nodes HAProxy sends connections to (None without HAProxy)."""
        if self.plan.haproxy_stats_url is None:
            return None
        status, body = proc.http_get(f"{self.plan.haproxy_stats_url}/;csv", timeout=2.0)
        if status != 200:
            raise LabError(f"HAProxy stats answered {status}")
        rows = csv.DictReader(io.StringIO(body.decode().lstrip("# ")))
        return [r["svname"] for r in rows if r.get("pxname") == "primary" and r.get("status") == "UP"
                and r["svname"] not in ("FRONTEND", "BACKEND")]

    # -------------------------------------------------------------------------------------------- waits
    def wait_writable(
        self, dsn: str | None = None, timeout: float = 60.0, *, avoid: str | None = None, interval: float = 0.05
    ) -> datetime:
        """Write through ``dsn`` (default: the read-write endpoint) until a commit is acknowledged;
        returns when. With ``avoid`` (a node name) a commit acknowledged by that node does not count:
        after an agent-only kill the endpoint may still reach the orphan for a moment, which is not a
        failover. LabError with the last error at the timeout."""
        dsn = dsn or self.rw_dsn
        avoid_port = self.node(avoid).pg_port if avoid else None
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while True:
            why, port = self.write(dsn, "endpoint", min(2.0, max(0.5, deadline - time.monotonic())))
            if not why and (avoid_port is None or port != avoid_port):
                return now()
            last = why or f"acknowledged by {avoid}, the node to avoid"
            if time.monotonic() >= deadline:
                raise LabError(f"no write through {dsn} was acknowledged within {timeout:g}s: {last}")
            time.sleep(interval)

    def wait_streaming(self, node: str, timeout: float = 60.0) -> datetime:
        """Wait until ``node`` streams as a replica; returns when."""
        _wait(lambda: self.replica_streaming(node), timeout, f"{node} streaming as a replica",
              lambda: self._patroni_log_tail(node))
        return now()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """One primary, every other node streaming (with ``sync``: synchronously, and recorded so in the
        DCS), the probe table in place and a write acknowledged through the endpoint."""
        deadline = time.monotonic() + timeout
        _wait(lambda: self.primary() is not None, timeout, "a primary")
        primary = self.primary()
        for node in self.plan.nodes:
            if node.name != primary:
                self.wait_streaming(node.name, max(1.0, deadline - time.monotonic()))
        if self.plan.replication == "sync":
            # PostgreSQL replicates synchronously a moment before Patroni records the standby in the
            # DCS; until then Patroni would not fail over to it
            _wait(lambda: len(self.sync_standbys()) >= 1 and any(m.role == "sync_standby" for m in self.members()),
                  max(1.0, deadline - time.monotonic()), "a synchronous standby recorded by Patroni")
        try:
            with self._connect(self.node(str(primary)).dsn(self.plan.database), 10.0) as conn:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (probe text PRIMARY KEY, at timestamptz NOT NULL)"
                )
        except psycopg.Error as exc:
            raise LabError(f"could not create {PROBE_TABLE} on {primary}: {_first_line(exc)}") from exc
        self.wait_writable(timeout=max(1.0, deadline - time.monotonic()))

    # -------------------------------------------------------------------------------------------- faults
    def kill(self, node: str, agent_only: bool = False) -> datetime:
        """SIGKILL ``node`` the way a pod kill does: Patroni, the postmaster (from ``postmaster.pid``),
        every PostgreSQL process and the node's exporter, all frozen first (SIGSTOP) so none acts after the
        returned moment. With
        ``agent_only`` only Patroni dies and its PostgreSQL keeps running (the split-brain flaw).
        Returns the moment every target was frozen; LabError when there is nothing to kill or a target
        survives."""
        plan_node = self.node(node)
        patroni = patroni_pid(plan_node.config_file)
        postmaster = postmaster_pid(plan_node.data_dir)
        if patroni is None and (agent_only or postmaster is None):
            raise LabError(f"{node}: no Patroni running (nothing to kill)")
        pg_tree = descendants({postmaster}) if postmaster is not None else set()
        roots = {patroni} if patroni is not None else set()
        if not agent_only:
            exporter = exporter_pid(self.plan.root, node)  # the pod's metrics die with it
            roots |= pg_tree | ({exporter} if exporter is not None else set())
        for pid in roots:
            proc.send_signal(pid, signal.SIGSTOP)
        targets = descendants(roots)
        if agent_only:
            targets -= pg_tree
        for pid in targets:
            proc.send_signal(pid, signal.SIGSTOP)
        at = now()
        for pid in targets:
            proc.send_signal(pid, signal.SIGKILL)
        left = proc.wait_gone(targets, 10.0)
        if left:
            raise LabError(f"{node}: processes {left} survived SIGKILL")
        self.kills[node] = _Kill(at, agent_only, sorted(targets))
        return at

    def stall_replication(self, seconds: float) -> datetime:
        """Stall the replication network for ``seconds`` (it heals by itself then): every relay drops
        bytes both ways, so WAL committed meanwhile reaches no replica. Returns when it started;
        ``InvalidParameters`` (nothing stalled) unless 0 < seconds <= ``MAX_STALL_SECONDS``."""
        if not 0 < seconds <= MAX_STALL_SECONDS:
            raise InvalidParameters(f"must be > 0 and at most {MAX_STALL_SECONDS} seconds, got {seconds!r}",
                                    "seconds")
        for node in self.plan.nodes:
            proc.http_json(f"{node.relay_control_url}/partition",
                           payload={"active": True, "duration_seconds": seconds, "mode": "blackhole"})
        return now()

    def resume_replication(self) -> None:
        """End a stall (idempotent): stalled connections are closed, replicas reconnect."""
        errors = []
        for node in self.plan.nodes:
            try:
                proc.http_json(f"{node.relay_control_url}/partition", payload={"active": False})
            except LabError as exc:
                errors.append(str(exc))
        if errors:
            raise LabError("could not resume replication: " + "; ".join(errors))

    def replication_stalled(self) -> bool:
        return any(
            proc.http_json(f"{node.relay_control_url}/partition", timeout=2.0).get("active")
            for node in self.plan.nodes
        )

    def promote(self, node: str, timeout: float = 60.0) -> datetime:
        """Make ``node`` the primary by hand, through Patroni (``POST /failover`` with it as candidate),
        and return when a write on it directly is acknowledged. No-op when it already is."""
        plan_node = self.node(node)
        if self.primary() != node:
            try:
                answer = _post(f"{plan_node.rest_url}/failover", {"candidate": node})
            except LabError as exc:
                raise LabError(f"promoting {node} through Patroni failed: {exc}") from exc
            if answer[0] >= 300:
                raise LabError(f"Patroni refused to promote {node}: {answer[0]} {answer[1]}")
            _wait(lambda: self.primary() == node, timeout, f"{node} to become the primary",
                  lambda: self._patroni_log_tail(node))
        return self.wait_writable(plan_node.dsn(self.plan.database), timeout)

    def restart_killed(self, node: str) -> datetime:
        """Start ``node``'s Patroni again, and its exporter when a node kill took it (through the
        launcher): it rejoins as a replica, rewinding its data with pg_rewind when it diverged. Returns when it
        was started; ``wait_streaming`` times
        the rejoin."""
        if self.launcher is None:
            raise LabError("restart_killed needs a launcher (the runner or the lab supervisor)")
        plan_node = self.node(node)
        if patroni_pid(plan_node.config_file) is not None:
            raise LabError(f"{node}: Patroni is already running")
        exporter = exporter_spec(self.plan, plan_node)
        if exporter is not None and exporter_pid(self.plan.root, node) is None:
            self.launcher.launch(exporter)
        self.launcher.launch(patroni_spec(self.plan, plan_node))
        return now()

    # -------------------------------------------------------------------------------------------- status
    def status(self) -> ClusterStatus:
        error = None
        try:
            members = self.members()
        except LabError as exc:
            members, error = [], str(exc)
        try:
            stalled: bool | None = self.replication_stalled()
        except LabError:
            stalled = None
        try:
            up = self.proxy_servers_up()
        except LabError:
            up = None
        leaders = [m.name for m in members if m.role in LEADER_ROLES and m.state == "running"]
        return ClusterStatus(
            replication=self.plan.replication,
            endpoint=self.plan.endpoint,
            rw_dsn=self.rw_dsn,
            primary=leaders[0] if leaders else None,
            members=members,
            nodes=[
                {"name": n.name, "dsn": n.dsn(self.plan.database), "rest_url": n.rest_url,
                 "pg_port": n.pg_port, "relay_port": n.relay_port}
                for n in self.plan.nodes
            ],
            replication_stalled=stalled,
            proxy_servers_up=up,
            haproxy_stats_url=self.plan.haproxy_stats_url,
            etcd_url=self.plan.etcd_url,
            error=error,
        )

    def _patroni_log_tail(self, node: str) -> str:
        return proc.tail(Path(self.plan.log_dir) / f"{node}.log", 15)


@contextlib.contextmanager
def cancel_after(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
    """Cancel whatever ``conn`` runs once ``seconds`` have passed (a client-side deadline: PostgreSQL's
    ``statement_timeout`` is off while a commit waits for a synchronous standby)."""
    timer = threading.Timer(seconds, cancel, args=(conn,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def cancel(conn: psycopg.Connection[Any]) -> None:
    """Ask the server to cancel ``conn``'s current statement (never raises)."""
    with contextlib.suppress(psycopg.Error, OSError):
        conn.cancel_safe(timeout=2.0)


def _member(data: dict[str, Any]) -> Member:
    lag = data.get("lag")
    return Member(
        name=str(data.get("name")),
        role=str(data.get("role")),
        state=str(data.get("state")),
        timeline=data.get("timeline") if isinstance(data.get("timeline"), int) else None,
        lag=lag if isinstance(lag, int) else None,
        host=data.get("host"),
        port=data.get("port"),
        api_url=data.get("api_url"),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _post(url: str, payload: dict[str, Any]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # loopback only
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(f"POST {url}: {exc}") from exc


def _wait(check: Callable[[], bool], timeout: float, what: str, context: Callable[[], str] | None = None) -> None:
    try:
        proc.wait_for(check, timeout=timeout, what=what, interval=0.1)
    except LabError as exc:
        raise LabError(f"{exc}" + (f"; last log lines:\n{context()}" if context else "")) from None
