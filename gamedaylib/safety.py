"""Safety mechanisms that do not depend on the target: one gameday at a time, the production guard,
stop conditions, and finding runs whose runner died.

The fault's own deadline (the lab proxy's, Chaos Mesh ``duration``) is the last line of defence and
lives in the targets; everything here runs before or beside the partition.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import GamedayAborted, GamedayInProgress, ProductionGuard
from gamedaylib.journal import JOURNAL_FILE, Journal

LOCK_FILE = "gameday.lock"


def pid_alive(pid: int | None) -> bool:
    """True when a process with this PID exists (zombies count as dead)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class GamedayLock:
    """An exclusive lock file naming the run that holds a target.

    A lock whose holder process is dead is stale and is taken over (``stale_holder`` tells whose).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.stale_holder: dict[str, Any] | None = None
        self._held = False

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def acquire(self, run_id: str, *, pid: int | None = None, what: str = "") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pid = pid or os.getpid()
        record = {
            "run_id": run_id,
            "pid": pid,
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(),
            "what": what,
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.stale_holder = self._refuse_live_holder(pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return
        raise GamedayInProgress(f"could not take the gameday lock {self.path}")

    def check_free(self) -> None:
        """Raise ``GamedayInProgress`` naming the holder when a live process holds the lock (changes
        nothing: the run that asks has not started yet)."""
        self._refuse_live_holder(os.getpid())

    def _refuse_live_holder(self, pid: int) -> dict[str, Any] | None:
        """The current holder; ``GamedayInProgress`` naming it when it is a live process other than ``pid``."""
        current = self.holder()
        if current and pid_alive(current.get("pid")) and current.get("pid") != pid:
            raise GamedayInProgress(
                f"another gameday is in progress on this target: run {current.get('run_id')} "
                f"(pid {current.get('pid')}, since {current.get('since')}); "
                f"wait for it to end or remove {self.path} if you are sure it is gone",
                holder=str(current.get("run_id")),
            ) from None  # raised while acquire handles FileExistsError: not a consequence of it
        return current

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> GamedayLock:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


DEFAULT_PRODUCTION_PATTERNS = ("*-prod", "prod*")


def is_production(namespace: str, patterns: Iterable[str] = DEFAULT_PRODUCTION_PATTERNS) -> bool:
    return any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


def guard_production(namespace: str, patterns: Iterable[str], confirm_production: bool) -> None:
    """Refuse a production-looking namespace unless the run says so explicitly."""
    patterns = tuple(patterns)
    if is_production(namespace, patterns) and not confirm_production:
        raise ProductionGuard(
            f"namespace {namespace!r} matches a production pattern {list(patterns)}; "
            "set confirm_production=True to run a gameday there"
        )


@dataclass(frozen=True)
class StopConditions:
    """Limits that heal the partition at once when crossed during the gameday."""

    error_rate: float = 0.5  # fraction of non-2xx answers among the requests seen so far
    lag_limit: float = 100_000  # consumer lag, messages
    buffer_fraction: float = 0.9  # gateway buffer, fraction of its capacity
    min_requests: int = 10  # the error rate is judged only past this many requests

    def check(self, sample: Mapping[str, Any]) -> tuple[str, float, float] | None:
        """Return (condition, value, limit) of the first limit crossed, or None."""
        sent = _num(sample.get("requests_total"))
        failed = _num(sample.get("requests_failed"))
        if sent is not None and failed is not None and sent >= self.min_requests:
            rate = failed / sent
            if rate > self.error_rate:
                return ("stop_error_rate", rate, self.error_rate)
        lag = _num(sample.get("lag_pending"))
        if lag is not None and lag > self.lag_limit:
            return ("stop_lag_limit", lag, self.lag_limit)
        size, cap = _num(sample.get("buffer_size")), _num(sample.get("buffer_capacity"))
        if size is not None and cap:
            fraction = size / cap
            if fraction > self.buffer_fraction:
                return ("stop_buffer_fraction", fraction, self.buffer_fraction)
        return None


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------ rehearsed faults


def raise_rehearsed_fault(params: Mapping[str, Any], phase_id: str) -> None:
    """Rehearse the rollback in the phase named by ``fault_phase`` (empty = never): ``<phase>`` makes
    it raise; ``<phase>:hang`` makes it hang past ``cell_timeout_seconds`` (the per-cell timeout then
    interrupts it)."""
    fault = str(params.get("fault_phase") or "")
    phase, _, mode = fault.partition(":")
    if not fault or phase != phase_id:
        return
    if mode == "hang":
        time.sleep(float(params.get("cell_timeout_seconds") or 60) * 2 + 60)
    raise GamedayAborted(f"rehearsed fault: fault_phase={fault!r} made this phase {mode or 'raise'}")


# ------------------------------------------------------------------ before a run


def check_before_run(params: Mapping[str, Any]) -> None:
    """Refusals that need no side effect: a production namespace without ``confirm_production``, and
    a target another live gameday holds (lab: its ``gameday.lock``). Dry runs are never refused for
    the lock (they change nothing)."""
    if params.get("target") == "kubernetes":
        guard_production(
            str(params.get("namespace") or ""),
            params.get("production_namespace_patterns") or DEFAULT_PRODUCTION_PATTERNS,
            bool(params.get("confirm_production")),
        )
    if params.get("target") == "lab" and not params.get("dry_run") and params.get("lab_dir"):
        GamedayLock(Path(str(params["lab_dir"])) / LOCK_FILE).check_free()


def requested_partition(entries: Iterable[Mapping[str, Any]]) -> bool:
    """True when this run's journal shows it asked for a partition (only then may it heal from outside:
    a run refused because another holds the target must not heal the other's fault)."""
    return any(e.get("kind") in ("partition.requested", "partition.active") for e in entries)


# ------------------------------------------------------------------ orphaned runs

RUNNER_NOTE = "runner"


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (tells a reused PID apart), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def record_runner(journal: Journal, pid: int | None = None) -> None:
    """Journal which process runs this gameday (``gameday run``), so a dead runner can be told."""
    pid = pid or os.getpid()
    journal.record("note", note=RUNNER_NOTE, runner_pid=pid, runner_start=process_start_ticks(pid),
                   host=socket.gethostname())


def _runner_alive(entry: Mapping[str, Any]) -> bool:
    pid = entry.get("runner_pid") or entry.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    start = entry.get("runner_start")
    return start is None or process_start_ticks(pid) == start


@dataclass(frozen=True)
class OrphanedRun:
    """An archive whose runner died before it finished."""

    path: Path
    run_id: str
    reason: str


def find_orphaned_runs(output_dir: str | os.PathLike[str], *, min_age_seconds: float = 30.0) -> list[OrphanedRun]:
    """Archives under ``output_dir`` (``<gameday_id>/<run_id>/journal.jsonl``) whose journal has no
    ``run.finished`` and whose every recorded runner (``gameday run``, the kernel) is dead. A journal
    naming no runner counts only once it has been quiet for ``min_age_seconds``."""
    found = []
    host = socket.gethostname()
    for path in sorted(Path(output_dir).glob("*/*/" + JOURNAL_FILE)):
        entries = list(Journal.read(path))
        if not entries or any(e.get("kind") == "run.finished" for e in entries):
            continue
        runners = [e for e in entries if e.get("runner_pid") or (e.get("kind") == "run.started" and e.get("pid"))]
        if any(e.get("host", host) != host for e in runners):
            continue  # a runner on another machine: we cannot tell whether it lives
        if any(_runner_alive(e) for e in runners):
            continue
        if not runners:
            try:
                quiet = time.time() - path.stat().st_mtime
            except OSError:
                continue
            if quiet < min_age_seconds:
                continue
        pids = sorted({int(e.get("runner_pid") or e.get("pid") or 0) for e in runners})
        last = entries[-1]
        reason = (f"orphaned: the runner ({', '.join(f'pid {p}' for p in pids) or 'unknown'}) died before the "
                  f"run finished; last journal entry #{last.get('seq')} {last.get('kind')} "
                  f"at {last.get('ts')}")
        requested = next((e for e in entries if e.get("kind") == "partition.requested"), None)
        if requested is not None and not requested.get("dry_run"):
            reason += (f"; its partition had a deadline of {requested.get('deadline_seconds')}s after "
                       f"{requested.get('ts')} (the target heals it by itself)")
        run_id = next((str(e.get("run_id")) for e in entries if e.get("run_id")), path.parent.name)
        found.append(OrphanedRun(path.parent, run_id, reason))
    return found


def mark_orphaned(run_dir: str | os.PathLike[str], reason: str) -> dict[str, Any]:
    """Complete an orphaned archive: verdict ``aborted`` with ``reason`` (journal, scorecard, incident
    report, notebook and HTML as far as they can be made). Returns the scorecard."""
    from gamedaylib import archive

    run_dir = Path(run_dir)
    params = _archived_params(run_dir)
    card = archive.finalize(run_dir, params, archive.Execution(completed=False, reason=reason))
    archive.render_archive_html(run_dir)
    return card


def mark_orphaned_runs(output_dir: str | os.PathLike[str], *, exclude: Path | None = None) -> list[OrphanedRun]:
    """Find and mark every orphaned run under ``output_dir``; returns what was marked."""
    marked = []
    for orphan in find_orphaned_runs(output_dir):
        if exclude is not None and orphan.path.resolve() == Path(exclude).resolve():
            continue
        mark_orphaned(orphan.path, orphan.reason)
        marked.append(orphan)
    return marked


def _archived_params(run_dir: Path) -> dict[str, Any]:
    import yaml

    from gamedaylib.archive import PARAMS_FILE
    from gamedaylib.playbook import GAMEDAY_ID

    params: dict[str, Any] = {}
    try:
        loaded = yaml.safe_load((run_dir / PARAMS_FILE).read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            params = loaded
    except (OSError, yaml.YAMLError):
        params = {}
    params.setdefault("gameday_id", run_dir.parent.name or GAMEDAY_ID)
    params.setdefault("run_id", run_dir.name)
    return params


# ------------------------------------------------------------------ parameter limits

DAY = 86_400.0
LAB_MAX_PARTITION_SECONDS = 3600.0  # the lab proxy refuses longer cuts (config.json max_partition_seconds)

# (lowest, highest) accepted, on top of the type checks of ``gamedaylib.parameters``
LIMITS: dict[str, tuple[float, float]] = {
    "partition_seconds": (1.0, DAY),
    "partition_safety_margin_seconds": (1.0, DAY),
    "heal_confirm_seconds": (1.0, DAY),
    "lag_recovery_deadline_seconds": (1.0, 7 * DAY),
    "rto_target_seconds": (1.0, 7 * DAY),
    "rpo_target_seconds": (0.0, 7 * DAY),
    "alert_fire_target_seconds": (1.0, DAY),
    "team_response_target_seconds": (1.0, 7 * DAY),
    "sample_interval_seconds": (0.05, 3600.0),
    "cell_timeout_seconds": (1.0, 7 * DAY),
    "canary_rate": (0.01, 1000.0),
    "lag_threshold": (1.0, 1e9),
    "stop_lag_limit": (1.0, 1e12),
    "lab_event_rate": (0.01, 10_000.0),
    "lab_buffer_capacity": (1.0, 10_000_000.0),
}
URL_PARAMETERS = ("nats_monitor_url", "prometheus_url", "alertmanager_url", "ingest_url", "stream_url")


def limit_problems(params: Mapping[str, Any]) -> dict[str, str]:
    """Values that pass the type checks but no gameday should run with: out-of-range numbers (a
    partition of a billion seconds, a sampling interval of a nanosecond), URLs whose host or port is
    malformed, a lab partition longer than the lab proxy allows. Returns {parameter: why}."""
    problems: dict[str, str] = {}
    for name, (low, high) in LIMITS.items():
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
            problems[name] = f"must be between {low:g} and {high:g}, got {value!r}"
    for name in URL_PARAMETERS:
        why = url_problem(params.get(name))
        if why:
            problems[name] = why
    for name, url in (params.get("dashboards") or {}).items() if isinstance(params.get("dashboards"), Mapping) else ():
        why = url_problem(url)
        if why:
            problems["dashboards"] = f"{name!r}: {why}"
    if params.get("target") == "lab" and "partition_seconds" not in problems:
        total = _num(params.get("partition_seconds")), _num(params.get("partition_safety_margin_seconds"))
        if total[0] is not None and total[1] is not None and total[0] + total[1] > LAB_MAX_PARTITION_SECONDS:
            problems["partition_seconds"] = (
                f"partition_seconds + partition_safety_margin_seconds = {total[0] + total[1]:g}s exceeds the lab "
                f"proxy's maximum of {LAB_MAX_PARTITION_SECONDS:g}s")
    return problems


def url_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable http(s) URL (None when it is, or when it is empty)."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or value == "":
        return None
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return f"must be a URL without spaces or control characters, got {value!r}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"malformed URL {value!r}: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL with a host, got {value!r}"
    if port == 0:
        return f"port 0 is not a port, got {value!r}"
    return None


# ------------------------------------------------------------------ secrets from the environment

SECRET_ENV_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE_?KEY|DSN|WEBHOOK|HOOK)", re.IGNORECASE)
MASK = "***"
MIN_SECRET_LENGTH = 6
_secret_env_names: set[str] = {"GAMEDAY_EVENTS_DSN"}


def register_secret_envs(params: Mapping[str, Any]) -> None:
    """Remember the environment variables the ``*_env`` parameters name: their values are secrets."""
    for name, value in params.items():
        if isinstance(name, str) and name.endswith("_env") and isinstance(value, str) and value:
            _secret_env_names.add(value)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values to mask wherever they turn up: every variable named by a ``*_env`` parameter or whose
    name looks secret, and the password and path of such a value when it is a URL. Longest first."""
    from urllib.parse import urlsplit

    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if not value or not (name in _secret_env_names or SECRET_ENV_NAME.search(name)):
            continue
        found.add(value)
        try:
            parts = urlsplit(value)
            if parts.password:
                found.add(parts.password)
            if parts.netloc and len(parts.path) >= 8:
                found.add(parts.path)
        except ValueError:
            continue
    return sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """``text`` with every secret value from the environment replaced by ``***``."""
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return text
