"""Finding the processes of a PostgreSQL failover cluster folder, whoever started them, and stopping them.

- ``cluster_processes(root)``: every live process of the cluster in ``root``: those whose command line
  names a path in it (etcd, relays, Patroni, HAProxy, a postmaster's ``-D``), the postmasters found
  through ``postmaster.pid``, and their descendants (PostgreSQL backends). Never this process or its
  parents.
- ``postmaster_pid(data_dir)``, ``patroni_pid(config_file)``, ``exporter_pid(root, node)``,
  ``descendants(pids)``; ``node_pids(plan)``: each node's Patroni and exporter as they run now
  (a node restarted after a kill runs under new PIDs, started by whoever healed it).
- ``stop_cluster(root, grace, immediate=False)``: SIGTERM Patroni (it stops its PostgreSQL), then
  everything else, then SIGKILL whatever is left; returns the PIDs that had to be killed. Safe to run
  twice or on nothing. ``immediate``: a disposable cluster's fast stop (Patroni SIGKILLed, PostgreSQL's
  immediate shutdown).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from dataclasses import dataclass
from pathlib import Path

from gamedaylib.lab import processes as proc
from gamedaylib.lab.pgcluster import PgClusterPlan

__all__ = [
    "cluster_processes",
    "descendants",
    "exporter_pid",
    "node_pids",
    "patroni_pid",
    "postmaster_pid",
    "stop_cluster",
]

STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    uid: int
    argv: tuple[str, ...]


def _proc_info(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return None
    uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), -1)
    return ProcInfo(pid, int(rest[1]), uid, tuple(a.decode("utf-8", "replace") for a in argv if a))


def _all_processes() -> list[ProcInfo]:
    infos = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc_info(int(entry))
            if info is not None:
                infos.append(info)
    return infos


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        info = _proc_info(pid)
        if info is None:
            break
        pid = info.ppid
    return pids


def _names_root(argv: tuple[str, ...], root: str) -> bool:
    prefix = root.rstrip("/") + "/"
    return any(a == root or a.startswith(prefix) or ("=" + prefix) in a for a in argv)


def postmaster_pid(data_dir: str | os.PathLike[str]) -> int | None:
    """The live postmaster of ``data_dir`` (its ``postmaster.pid``, checked against /proc), or None."""
    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        return None
    info = _proc_info(pid)
    if info is None or not info.argv or "postgres" not in os.path.basename(info.argv[0]):
        return None
    return pid


def descendants(pids: set[int], infos: list[ProcInfo] | None = None) -> set[int]:
    """``pids`` and every live descendant of them."""
    infos = infos if infos is not None else _all_processes()
    found = set(pids)
    changed = True
    while changed:
        changed = False
        for info in infos:
            if info.ppid in found and info.pid not in found:
                found.add(info.pid)
                changed = True
    return found


def cluster_processes(root: str | os.PathLike[str]) -> dict[int, tuple[str, ...]]:
    """PID -> argv of every live process of the cluster in ``root`` (not this process nor its parents)."""
    root_s = str(Path(root).resolve())
    infos = _all_processes()
    skip = _ancestors()
    owners = {os.getuid()}
    with contextlib.suppress(KeyError):
        owners.add(pwd.getpwnam(proc.LAB_USER).pw_uid)
    mine = {i.pid for i in infos if i.uid in owners and _names_root(i.argv, root_s)}
    for data_dir in Path(root_s).glob("*/data"):
        pid = postmaster_pid(data_dir)
        if pid is not None:
            mine.add(pid)
    mine = descendants(mine, infos) - skip
    by_pid = {i.pid: i.argv for i in infos}
    return {pid: by_pid.get(pid, ()) for pid in sorted(mine)}


def _is_patroni(argv: tuple[str, ...]) -> bool:
    return any(a == "patroni" or a.endswith("/patroni") for a in argv[:3])


def stop_cluster(root: str | os.PathLike[str], *, grace: float = STOP_GRACE_SECONDS,
                 immediate: bool = False) -> list[int]:
    """Stop every process of the cluster in ``root``: Patroni first (SIGTERM: it stops PostgreSQL), then
    the rest, SIGKILL after ``grace`` seconds. Returns the PIDs that had to be killed.

    ``immediate`` is for a cluster that is thrown away (the lab's: the next start wipes its data):
    Patroni is SIGKILLed (it must not start PostgreSQL again) and each postmaster gets PostgreSQL's
    immediate shutdown (SIGQUIT: no checkpoint), which takes well under a second instead of Patroni's
    clean stop (a checkpoint, the leader key released in the DCS: seconds, more when etcd is stopping
    too)."""
    found = cluster_processes(root)
    patronis = [pid for pid, argv in found.items() if _is_patroni(argv)]
    if immediate:
        for pid in patronis:
            proc.send_signal(pid, signal.SIGKILL)
        proc.wait_gone(patronis, grace)
        masters = [pid for pid in (postmaster_pid(d) for d in Path(root).resolve().glob("*/data")) if pid]
        for pid in masters:
            proc.send_signal(pid, signal.SIGQUIT)
        proc.wait_gone(masters, grace)
    else:
        for pid in patronis:
            proc.send_signal(pid, signal.SIGTERM)
        proc.wait_gone(patronis, grace)
    found = cluster_processes(root)
    for pid in found:
        proc.send_signal(pid, signal.SIGTERM)
    left = proc.wait_gone(list(found), min(grace, 5.0))
    killed = list(left)
    for _ in range(3):  # SIGKILL until nothing is left (a backend may outlive its postmaster briefly)
        left = list(cluster_processes(root))
        if not left:
            break
        killed += [p for p in left if p not in killed]
        for pid in left:
            proc.send_signal(pid, signal.SIGKILL)
        proc.wait_gone(left, 5.0)
    return killed


def patroni_pid(config_file: str | os.PathLike[str]) -> int | None:
    """The live Patroni started with ``config_file``, or None."""
    config = str(config_file)
    for info in _all_processes():
        if _is_patroni(info.argv) and config in info.argv:
            return info.pid
    return None


def exporter_pid(root: str | os.PathLike[str], node: str) -> int | None:
    """The live exporter (``gamedaylib.lab.pgexporter``) of ``node`` in the cluster folder ``root``, or None."""
    root_s = str(Path(root).resolve())
    for info in _all_processes():
        argv = info.argv
        if "gamedaylib.lab.pgexporter" in argv and root_s in argv and _option(argv, "--node") == node:
            return info.pid
    return None


def _option(argv: tuple[str, ...], name: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[i + 1]
    return None


def node_pids(plan: PgClusterPlan) -> dict[str, int | None]:
    """Process name -> live PID (None: not running) of each node's Patroni (``<node>``) and exporter
    (``pgexporter-<node>``), found by their command lines."""
    found: dict[str, int | None] = {}
    for node in plan.nodes:
        found[node.name] = patroni_pid(node.config_file)
        found[f"pgexporter-{node.name}"] = exporter_pid(plan.root, node.name)
    return found
