"""The Python that runs Patroni. PostgreSQL refuses to run as root, so when the lab is started by root,
Patroni (which starts PostgreSQL) runs as the lab's unprivileged user ``gameday``, and needs an
interpreter and packages that user can read.

``patroni_runtime(user, stage_dir) -> PythonRuntime`` tries, in order, each checked by running
Patroni's imports *as that user* (``probe_runtime``):

1. this interpreter (``sys.executable``): always when no user switch is needed (not root), and when the
   user can execute it (a venv made from a system Python);
2. a system Python of the same major.minor (compiled extensions are built for it) with this
   environment's site-packages on PYTHONPATH: a venv whose interpreter lives under an unreadable home
   (pyenv under /root, mode 700, as on the CI machine);
3. the same with a copy of Patroni and the distributions it needs (``stage_patroni``) in ``stage_dir``:
   site-packages itself unreadable (a checkout under /root).

LabError lists every attempt when none works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import LabError
from gamedaylib.lab import processes as proc

__all__ = [
    "PythonRuntime",
    "patroni_runtime",
    "probe_runtime",
    "stage_patroni",
    "system_pythons",
]

# what Patroni imports: checked by running it as the user Patroni will run as
PATRONI_IMPORTS = "import patroni.__main__, patroni.dcs.etcd3, psycopg, yaml, psutil, urllib3, etcd"
PATRONI_DISTRIBUTION = "patroni"
PATRONI_EXTRAS = ("etcd3", "psycopg3")


@dataclass(frozen=True)
class PythonRuntime:
    """How Patroni is started: the interpreter, what goes on PYTHONPATH, and why this one."""

    executable: str
    pythonpath: tuple[str, ...] = ()
    how: str = "this interpreter"


def _site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(p for p in (paths["purelib"], paths["platlib"]) if os.path.isdir(p)))


def system_pythons() -> list[str]:
    """Interpreters of this Python's major.minor (compiled extensions are built for it) other than
    this one, system ones first."""
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
    systems = system_pythons()
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
