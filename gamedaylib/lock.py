"""One gameday at a time per target: an exclusive lock file naming the run that holds it, and the
process facts that tell a live holder from a dead one (a reused PID included)."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gamedaylib.exceptions import GamedayInProgress

__all__ = ["LOCK_FILE", "GamedayLock", "pid_alive", "process_start_ticks"]

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


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (tells a reused PID apart), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
