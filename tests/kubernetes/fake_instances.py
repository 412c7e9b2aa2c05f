"""The PostgreSQL instances behind the fake API server's CloudNativePG stand-in, and their metrics endpoints.

On a real cluster each CloudNativePG instance pod runs PostgreSQL and the instance manager, whose
``:9187/metrics`` answers CloudNativePG's default monitoring queries. Here:

- ``Instances`` is what the stand-in drives: the state of each node (primary, replica streaming, down),
  and kill / restart / promote;
- ``LabPair`` is the lab's Patroni pair (``gamedaylib.lab.pgclient.PgClusterClient``): real processes,
  a real failover (Patroni's ttl bounds it at about 20 s), metrics read with SQL from each node as the
  instance manager reads them;
- ``ScriptedPair`` is a pair in memory with chosen timings (a failover after ``failover_after`` seconds,
  a rejoin ``rejoin_after`` seconds after the restart; or none, to exercise the manual promotion), for
  the tests of the API side, which need no PostgreSQL;
- ``PodNetwork`` serves every instance pod's metrics over HTTP (``/<namespace>/<pod>/metrics``), as the
  pods' IPs would: a pod that does not run answers nothing Prometheus can use (503), so its series go
  stale at the next scrape, as they do when a pod is killed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import psycopg

from gamedaylib.exceptions import LabError
from gamedaylib.lab.pgclient import LEADER_ROLES, PgClusterClient

__all__ = [
    "Instances",
    "LabPair",
    "NodeState",
    "PodNetwork",
    "ScriptedPair",
    "render_metrics",
]


@dataclass(frozen=True)
class NodeState:
    """One node as the operator sees it."""

    role: str  # primary | replica | down
    timeline: int | None = None
    streaming: bool = False  # a replica streaming from the primary


class Instances(Protocol):
    """The database nodes behind a Cluster."""

    nodes: tuple[str, ...]

    def states(self) -> dict[str, NodeState]: ...

    def kill(self, node: str) -> datetime:
        """SIGKILL the node as a pod kill does; the moment it died."""
        ...

    def restart(self, node: str) -> None:
        """Start the killed node again (its pod was recreated): it rejoins as a replica."""
        ...

    def promote(self, node: str) -> None:
        """Make ``node`` the primary (``targetPrimary`` patched by ``kubectl cnpg promote``)."""
        ...

    def metrics(self, node: str, pod_of: Mapping[str, str], cluster: str) -> str:
        """The instance manager's ``/metrics`` text for ``node`` (standbys named by their pods)."""
        ...


def _now() -> datetime:
    return datetime.now(timezone.utc)


def render_metrics(
    cluster: str,
    *,
    up: bool,
    in_recovery: bool = False,
    wal_receiver_up: bool = False,
    lag_seconds: float = 0.0,
    streaming_replicas: int = 0,
    standbys: Mapping[str, float] | None = None,
) -> str:
    """CloudNativePG's exposition of one instance: the collector's ``cnpg_collector_up{cluster}`` and, when
    PostgreSQL answered, the default queries' ``cnpg_pg_replication_*`` and (primary) the
    ``cnpg_pg_stat_replication_replay_diff_bytes`` of each standby (``application_name`` = its pod)."""
    lines = [
        "# HELP cnpg_collector_up 1 if PostgreSQL is up, 0 otherwise.",
        "# TYPE cnpg_collector_up gauge",
        f'cnpg_collector_up{{cluster="{cluster}"}} {1 if up else 0}',
    ]
    if not up:
        return "\n".join(lines) + "\n"
    for name, value in (
        ("lag", lag_seconds),
        ("in_recovery", 1 if in_recovery else 0),
        ("is_wal_receiver_up", 1 if wal_receiver_up else 0),
        ("streaming_replicas", streaming_replicas),
    ):
        lines += [f"# TYPE cnpg_pg_replication_{name} gauge", f"cnpg_pg_replication_{name} {value}"]
    if standbys:
        lines.append("# TYPE cnpg_pg_stat_replication_replay_diff_bytes gauge")
        lines += [
            "cnpg_pg_stat_replication_replay_diff_bytes{usename=\"streaming_replica\","
            f'application_name="{pod}",client_addr="10.0.0.{i + 10}",client_port="5432"}} {lag}'
            for i, (pod, lag) in enumerate(sorted(standbys.items()))
        ]
    return "\n".join(lines) + "\n"


# --- a pair in memory -----------------------------------------------------------------------------


class ScriptedPair:
    """Two nodes whose failover and rejoin take the times given; ``failover_after=None``: no automatic
    failover (only ``promote`` makes a primary)."""

    def __init__(
        self,
        nodes: tuple[str, ...] = ("pg1", "pg2"),
        *,
        failover_after: float | None = 0.5,
        rejoin_after: float = 0.5,
        timeline: int = 1,
    ) -> None:
        self.nodes = nodes
        self.failover_after = failover_after
        self.rejoin_after = rejoin_after
        self.primary: str | None = nodes[0]
        self.timeline = timeline
        self.down: dict[str, float] = {}  # node -> killed at (monotonic)
        self.rejoining: dict[str, float] = {}  # node -> streaming from (monotonic)
        self.kills: list[tuple[str, datetime]] = []
        self.promotions: list[str] = []
        self._lock = threading.Lock()

    def _advance(self) -> None:
        now = time.monotonic()
        if (
            self.primary in self.down
            and self.failover_after is not None
            and now >= self.down[self.primary] + self.failover_after
        ):
            survivors = [n for n in self.nodes if n not in self.down]
            if survivors:
                self.primary, self.timeline = survivors[0], self.timeline + 1

    def states(self) -> dict[str, NodeState]:
        with self._lock:
            self._advance()
            now = time.monotonic()
            out = {}
            for node in self.nodes:
                if node in self.down:
                    out[node] = NodeState("down")
                elif node == self.primary:
                    out[node] = NodeState("primary", self.timeline)
                else:
                    streaming = self.primary not in self.down and now >= self.rejoining.get(node, 0.0)
                    out[node] = NodeState("replica", self.timeline, streaming)
            return out

    def kill(self, node: str) -> datetime:
        with self._lock:
            self.down[node] = time.monotonic()
            at = _now()
            self.kills.append((node, at))
            return at

    def restart(self, node: str) -> None:
        with self._lock:
            self._advance()
            self.down.pop(node, None)
            self.rejoining[node] = time.monotonic() + self.rejoin_after

    def promote(self, node: str) -> None:
        with self._lock:
            if node in self.down:
                raise LabError(f"{node} is down: it cannot be promoted")
            if self.primary != node:
                self.primary, self.timeline = node, self.timeline + 1
            self.promotions.append(node)

    def metrics(self, node: str, pod_of: Mapping[str, str], cluster: str) -> str:
        states = self.states()
        state = states[node]
        if state.role == "down":
            return render_metrics(cluster, up=False)
        standbys = {pod_of[n]: 0.0 for n, s in states.items() if s.role == "replica" and s.streaming}
        if state.role == "primary":
            return render_metrics(cluster, up=True, streaming_replicas=len(standbys), standbys=standbys)
        return render_metrics(cluster, up=True, in_recovery=True, wal_receiver_up=state.streaming)


# --- the lab's Patroni pair -----------------------------------------------------------------------

# CloudNativePG's default query ``pg_replication`` (cnpg-default-monitoring), the columns it exports
_REPLICATION_SQL = """
SELECT CASE WHEN (NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()) THEN 0
            ELSE GREATEST(0, EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))) END AS lag,
       pg_is_in_recovery() AS in_recovery,
       EXISTS (TABLE pg_stat_wal_receiver) AS is_wal_receiver_up,
       (SELECT count(*) FROM pg_stat_replication) AS streaming_replicas
"""
_STANDBYS_SQL = (
    "SELECT application_name, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) "
    "FROM pg_stat_replication"
)


class LabPair:
    """The lab's Patroni pair: Patroni's view for the operator's, SQL on each node for the metrics."""

    def __init__(self, client: PgClusterClient) -> None:
        self.client = client
        self.nodes = tuple(n.name for n in client.plan.nodes)
        self.kills: list[tuple[str, datetime]] = []
        self.killed: set[str] = set()
        self.promotions: list[str] = []

    def states(self) -> dict[str, NodeState]:
        try:
            members = {m.name: m for m in self.client.members()}
        except LabError:
            members = {}
        out = {}
        for node in self.nodes:
            m = members.get(node)
            if node in self.killed or m is None:
                out[node] = NodeState("down")
            elif m.role in LEADER_ROLES and m.state == "running":
                out[node] = NodeState("primary", m.timeline)
            elif m.state in ("streaming", "running"):
                out[node] = NodeState("replica", m.timeline, m.state == "streaming")
            else:
                out[node] = NodeState("down", m.timeline)
        return out

    def kill(self, node: str) -> datetime:
        at = self.client.kill(node)
        self.killed.add(node)
        self.kills.append((node, at))
        return at

    def restart(self, node: str) -> None:
        self.client.restart_killed(node)
        self.killed.discard(node)

    def promote(self, node: str) -> None:
        self.promotions.append(node)
        self.client.promote(node, timeout=60.0)

    def metrics(self, node: str, pod_of: Mapping[str, str], cluster: str) -> str:
        if node in self.killed:
            return render_metrics(cluster, up=False)
        dsn = self.client.node(node).dsn(self.client.plan.database)
        try:
            with psycopg.connect(
                dsn,
                autocommit=True,
                connect_timeout=2,
                application_name="cnpg_metrics_exporter",
                options="-c statement_timeout=900",
            ) as conn:
                row = conn.execute(_REPLICATION_SQL).fetchone()
                standbys = conn.execute(_STANDBYS_SQL).fetchall() if row and not row[1] else []
        except psycopg.Error:
            return render_metrics(cluster, up=False)
        assert row is not None
        return render_metrics(
            cluster,
            up=True,
            lag_seconds=float(row[0]),
            in_recovery=bool(row[1]),
            wal_receiver_up=bool(row[2]),
            streaming_replicas=int(row[3]),
            standbys={pod_of.get(str(name), str(name)): float(lag) for name, lag in standbys},
        )


# --- the pods' network ----------------------------------------------------------------------------


class PodNetwork:
    """Every registered pod's metrics endpoint on one HTTP server (``/<namespace>/<pod>/metrics``)."""

    def __init__(self) -> None:
        self._providers: dict[tuple[str, str], Callable[[], str | None]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.scrapes: dict[tuple[str, str], int] = {}

    @property
    def address(self) -> str:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    @staticmethod
    def path(namespace: str, pod: str) -> str:
        return f"/{namespace}/{pod}/metrics"

    def url(self, namespace: str, pod: str) -> str:
        return f"http://{self.address}{self.path(namespace, pod)}"

    def register(self, namespace: str, pod: str, provider: Callable[[], str | None]) -> None:
        """``provider()`` answers the pod's metrics, None when the pod does not run."""
        with self._lock:
            self._providers[(namespace, pod)] = provider

    def unregister(self, namespace: str, pod: str) -> None:
        with self._lock:
            self._providers.pop((namespace, pod), None)

    def start(self) -> PodNetwork:
        network = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = [p for p in self.path.split("?", 1)[0].split("/") if p]
                key = (parts[0], parts[1]) if len(parts) == 3 and parts[2] == "metrics" else None
                with network._lock:
                    provider = network._providers.get(key) if key else None
                    if key:
                        network.scrapes[key] = network.scrapes.get(key, 0) + 1
                text = provider() if provider is not None else None
                if text is None:
                    self.send_error(503, "the pod does not run")
                    return
                data = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> PodNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
