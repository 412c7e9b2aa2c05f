"""Process plumbing for the lab: free ports, finding binaries, spawning, PID bookkeeping, killing.

Binaries: ``find_binary`` looks in the venv, then on PATH. The environment variable
``GAMEDAY_LAB_WITHOUT`` (comma-separated part names, e.g. ``alertmanager`` or
``prometheus,alertmanager``) makes it answer "not found" for those parts although they are installed,
so that a test, or a user, can run the lab as it runs on a machine without them (the part's name is
the first name ``find_binary`` is asked for: ``prometheus``, ``alertmanager``, ``promtool``,
``nats-server``; ``promtool`` is hidden with ``prometheus``, whose Debian package ships it).
``hidden_parts()`` reads it; ``monitoring_binaries()`` is the optional parts a lab started now runs.

A PID alone is not an identity (PIDs are reused), so the lab records every process as a
``ProcessRef``: its PID plus its start time in clock ticks since boot (``/proc/<pid>/stat`` field
22). A process is only signalled when both still match. Every lab process lives in the supervisor's
session, so ``session_members`` finds them all, even grandchildren (PostgreSQL backends) and even
after the supervisor died.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import LabError

LAB_USER = "gameday"  # the unprivileged user PostgreSQL runs as when the lab is started by root


@dataclass(frozen=True)
class ProcessRef:
    """A process the lab started: name, PID and start time (so a reused PID is never signalled)."""

    name: str
    pid: int
    start_ticks: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRef:
        return cls(name=str(data["name"]), pid=int(data["pid"]), start_ticks=data.get("start_ticks"))

    @classmethod
    def of(cls, name: str, pid: int) -> ProcessRef:
        stat = proc_stat(pid)
        return cls(name=name, pid=pid, start_ticks=stat.start_ticks if stat else None)


@dataclass(frozen=True)
class ProcStat:
    """The few fields of ``/proc/<pid>/stat`` the lab needs."""

    pid: int
    state: str
    pgid: int
    sid: int
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    """Read ``/proc/<pid>/stat``; None when the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    rest = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(pid=pid, state=rest[0], pgid=int(rest[2]), sid=int(rest[3]), start_ticks=int(rest[19]))


def is_alive(ref: ProcessRef | int) -> bool:
    """True when the process exists, is not a zombie and (for a ProcessRef) is the same process."""
    pid = ref if isinstance(ref, int) else ref.pid
    stat = proc_stat(pid)
    if stat is None or stat.state in ("Z", "X"):
        return False
    if isinstance(ref, ProcessRef) and ref.start_ticks is not None:
        return stat.start_ticks == ref.start_ticks
    return True


def _live_processes() -> Iterator[ProcStat]:
    """``/proc/<pid>/stat`` of every live (non-zombie) process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat.state not in ("Z", "X"):
                yield stat


def session_members(sid: int) -> list[int]:
    """PIDs of every live (non-zombie) process whose session id is ``sid``."""
    return [stat.pid for stat in _live_processes() if stat.sid == sid]


def send_signal(pid: int, sig: int) -> None:
    """Signal ``pid``; a process already gone is fine, one we may not signal is a LabError."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise LabError(f"not allowed to signal process {pid}: {exc}") from exc


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if is_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if is_alive(p)]
    return left


def _kill_survivors(pids: Iterable[int], grace: float) -> list[int]:
    """Wait ``grace`` seconds for ``pids`` to end, SIGKILL those still alive; return them."""
    left = wait_gone(pids, grace)
    for pid in left:
        send_signal(pid, signal.SIGKILL)
    wait_gone(left, 5.0)
    return left


def terminate(
    refs: Iterable[ProcessRef],
    *,
    sig: int = signal.SIGTERM,
    grace: float = 5.0,
    signals: Mapping[str, int] | None = None,
) -> list[str]:
    """Send ``sig`` (or ``signals[name]`` for a process of that name) to each live process, all at
    once, wait for them and their process groups' members, and SIGKILL what is left after ``grace``
    seconds. Returns the names of processes that had to be killed."""
    targets: dict[int, str] = {}
    for ref in refs:
        if not is_alive(ref):
            continue
        stat = proc_stat(ref.pid)
        targets[ref.pid] = ref.name
        send_signal(ref.pid, (signals or {}).get(ref.name, sig))
        if stat is not None and stat.pgid == ref.pid:
            for member in group_members(ref.pid):
                targets.setdefault(member, f"{ref.name}[{member}]")
    return [targets[p] for p in _kill_survivors(list(targets), grace)]


def group_members(pgid: int) -> list[int]:
    """PIDs of every live process in process group ``pgid``."""
    return [stat.pid for stat in _live_processes() if stat.pgid == pgid]


def kill_session(sid: int, *, exclude: Iterable[int] = (), grace: float = 2.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process of session ``sid`` except ``exclude``; return the PIDs."""
    skip = set(exclude)
    pids = [p for p in session_members(sid) if p not in skip]
    for pid in pids:
        send_signal(pid, signal.SIGTERM)
    _kill_survivors(pids, grace)
    return pids


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


WITHOUT_ENV = "GAMEDAY_LAB_WITHOUT"


def hidden_parts() -> frozenset[str]:
    """The part names listed in ``GAMEDAY_LAB_WITHOUT`` (lower-cased; empty when unset)."""
    raw = os.environ.get(WITHOUT_ENV, "")
    return frozenset(name.strip().lower() for name in raw.split(",") if name.strip())


# a binary that comes with a part (Debian's ``prometheus`` package ships ``promtool``): hidden with it
PART_OF = {"promtool": "prometheus"}


def find_binary(*names: str) -> str | None:
    """The first of ``names`` found in the venv's bin dir (next to ``sys.executable``), then on PATH;
    None when not found, or when the part (``names[0]``, or the part it comes with: ``PART_OF``) is
    listed in ``GAMEDAY_LAB_WITHOUT``."""
    if names:
        first = names[0].lower()
        if first in hidden_parts() or PART_OF.get(first) in hidden_parts():
            return None
    venv_bin = str(Path(sys.executable).parent)
    for name in names:
        found = shutil.which(name, path=venv_bin) or shutil.which(name)
        if found:
            return found
    return None


def monitoring_binaries() -> tuple[str | None, str | None]:
    """``(prometheus, alertmanager)``: the optional parts a lab started now runs (None = not found or
    hidden). No Alertmanager without Prometheus: nothing would send it alerts. The one lookup the
    supervisor and the tests that depend on these parts share."""
    prometheus = find_binary("prometheus")
    alertmanager = find_binary("alertmanager", "prometheus-alertmanager") if prometheus else None
    return prometheus, alertmanager


def find_postgres_bin_dir() -> Path | None:
    """A directory holding ``initdb`` and ``postgres``: PATH, then /usr/lib/postgresql/*/bin (newest
    first), then the ``pgserver`` wheel's ``pginstall/bin``."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
        reverse=True,
    )
    try:
        import pgserver  # optional: only when no PostgreSQL is installed

        candidates.append(str(Path(pgserver.__file__).parent / "pginstall" / "bin"))
    except ImportError:
        pass
    for cand in candidates:
        if (Path(cand) / "initdb").exists() and (Path(cand) / "postgres").exists():
            return Path(cand)
    return None


def unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (it refuses to run as root), else None.

    Creates the system user ``gameday`` with ``useradd --system`` if it does not exist."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(LAB_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", LAB_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        # 9 = the user appeared meanwhile (another lab starting at the same moment)
        if result.returncode not in (0, 9):
            raise LabError(
                f"running as root, PostgreSQL needs an unprivileged user; useradd {LAB_USER} failed: "
                f"{result.stderr.strip()}"
            ) from None
        entry = pwd.getpwnam(LAB_USER)
    return entry.pw_uid, entry.pw_gid


def make_traversable(path: Path) -> None:
    """Add the others' execute bit to every ancestor of ``path`` that lacks it, so that an
    unprivileged PostgreSQL can reach its data directory (a ``mktemp -d`` folder is 0700)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` so that readers see the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it does not exist."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise LabError(f"{path} is not valid JSON: {exc}") from exc


def http_get(url: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body). Raises LabError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(f"GET {url}: {exc}") from exc


def http_json(url: str, *, payload: Any | None = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``payload`` as JSON) and decode the JSON answer; LabError on failure or non-2xx."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # loopback only
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise LabError(f"{req.method} {url} answered {exc.code}: {exc.read()[:500]!r}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise LabError(f"{req.method} {url}: {exc}") from exc
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise LabError(f"{req.method} {url} did not answer JSON: {body[:200]!r}") from exc


def wait_for(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``check`` until it is true; LabError naming ``what`` at the timeout, or as soon as
    ``abort`` returns a reason (e.g. the process being waited for has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if abort is not None:
            reason = abort()
            if reason:
                raise LabError(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return ""
        raise
    return "\n".join(text.splitlines()[-lines:])
