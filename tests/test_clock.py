"""The gameday clock: T+0 is the confirmed injection, set once; before it, offsets say so."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gamedaylib.clock import Clock, format_offset, parse_time


def test_format_offset() -> None:
    assert format_offset(-12) == "T-00:12"
    assert format_offset(65) == "T+01:05"
    assert format_offset(0) == "T+00:00"
    assert format_offset(59.6) == "T+01:00"
    assert format_offset(3723) == "T+1:02:03"
    assert format_offset(-900) == "T-15:00"


def test_t0_is_the_confirmed_injection_and_is_set_once() -> None:
    base = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    now = [base]
    clock = Clock(now=lambda: now[0])
    assert clock.started_at == base and clock.t0 is None
    assert clock.seconds_since_t0() is None
    now[0] = base + timedelta(seconds=12)
    assert clock.offset() == "before T+0, run +00:12"
    clock.set_t0(base + timedelta(seconds=20))
    clock.set_t0(base + timedelta(seconds=99))  # ignored: T+0 is fixed once
    assert clock.offset() == "T-00:08"
    now[0] = base + timedelta(seconds=85)
    assert clock.offset() == "T+01:05"
    assert clock.offset(base + timedelta(seconds=21)) == "T+00:01"
    assert clock.seconds_since_t0() == 65


def test_times_are_aware_utc() -> None:
    assert parse_time("2026-01-01T12:00:00") == datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert parse_time("2026-01-01T13:00:00+01:00") == datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    naive = datetime(2026, 1, 1, 12)
    assert parse_time(naive).tzinfo is not None
    clock = Clock(now=lambda: datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc))
    clock.set_t0(naive)  # a naive T+0 is taken as UTC, never as local time
    assert clock.offset() == "T+00:30"
