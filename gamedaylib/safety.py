"""Safety mechanisms that do not depend on the target: one gameday at a time, the production guard,
stop conditions, and finding runs whose runner died.

The fault's own deadline (the lab proxy's, Chaos Mesh ``duration``) is the last line of defence and
lives in the targets; everything here runs before or beside the partition.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import GamedayInProgress, ProductionGuard


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
        record = {
            "run_id": run_id,
            "pid": pid or os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(),
            "what": what,
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                current = self.holder()
                if current and pid_alive(current.get("pid")) and current.get("pid") != record["pid"]:
                    raise GamedayInProgress(
                        f"another gameday is in progress on this target: run {current.get('run_id')} "
                        f"(pid {current.get('pid')}, since {current.get('since')}); "
                        f"wait for it to end or remove {self.path} if you are sure it is gone",
                        holder=str(current.get("run_id")),
                    ) from None
                self.stale_holder = current
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return
        raise GamedayInProgress(f"could not take the gameday lock {self.path}")

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> GamedayLock:
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
