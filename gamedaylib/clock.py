"""The gameday clock: T+0 is the moment the partition was confirmed active (``Target.inject``'s
return), not the moment it was asked for. Before T+0 is known, offsets count from the run's start.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_offset(seconds: float) -> str:
    """``T-00:12``, ``T+01:05``, ``T+1:02:03`` (minutes:seconds, hours when needed)."""
    sign = "-" if seconds < 0 else "+"
    total = int(abs(seconds) + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"T{sign}{hours}:{minutes:02d}:{secs:02d}"
    return f"T{sign}{minutes:02d}:{secs:02d}"


def parse_time(value: str | datetime) -> datetime:
    """An ISO-8601 time as an aware UTC datetime (naive times are taken as UTC)."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


class Clock:
    """Wall-clock times of a run, with T+0 set once from the confirmed injection."""

    def __init__(self, now: Callable[[], datetime] = utcnow) -> None:
        self._now = now
        self.started_at = now()
        self.t0: datetime | None = None

    def now(self) -> datetime:
        return self._now()

    def set_t0(self, at: datetime) -> None:
        """Fix T+0 (the confirmed injection). Later calls keep the first value."""
        if self.t0 is None:
            self.t0 = parse_time(at)

    def seconds_since_t0(self, at: datetime | None = None) -> float | None:
        if self.t0 is None:
            return None
        return ((at or self._now()) - self.t0).total_seconds()

    def offset(self, at: datetime | None = None) -> str:
        """The T-offset of ``at`` (default: now). Before the injection, T+0 is unknown: the offset
        says so and counts from the run's start instead (``before T+0, run +00:12``)."""
        at = at or self._now()
        if self.t0 is None:
            since_start = format_offset((at - self.started_at).total_seconds())[1:]
            return f"before T+0, run {since_start}"
        return format_offset((at - self.t0).total_seconds())
