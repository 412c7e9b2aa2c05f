"""The sampler, the run's one poller: ticks on a fixed grid, writes samples.csv as it goes, survives a
failing reader, marks phases, hands the same readings to the waits, and gives the series as a pandas
DataFrame (the same one ``read_samples`` reads back from the archive)."""

from __future__ import annotations

import csv
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gamedaylib.clock import utcnow
from gamedaylib.exceptions import InvalidParameters
from gamedaylib.readings import Reading
from gamedaylib.sampler import Sampler, read_samples

pytestmark = pytest.mark.timeout(60)


@dataclass
class FakeClock:
    t0: datetime | None = None


class ScriptedReader:
    """A ``Reader`` whose n-th reading (from 1) is ``script(n)``: a mapping of inputs, or an exception."""

    reading_type = Reading

    def __init__(self, script: Callable[[int], dict[str, Any]], cost: Callable[[int], float] = lambda n: 0.0) -> None:
        self.script = script
        self.cost = cost
        self.calls: list[float] = []
        self.closed = False

    def read(self) -> Reading:
        self.calls.append(time.monotonic())
        n = len(self.calls)
        time.sleep(self.cost(n))
        return Reading(at=utcnow(), **self.script(n))

    def close(self) -> None:
        self.closed = True


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_ticks_on_a_fixed_grid_and_writes_each_row_at_once(tmp_path: Path) -> None:
    # Each reading costs 60 ms: a sampler that slept an interval *after* reading would tick every 160 ms;
    # one on a fixed grid stays at 100 ms. Reading 4 overruns two grid points.
    reader = ScriptedReader(lambda n: {"lag_pending": n, "buffer_size": 0.5},
                            cost=lambda n: 0.25 if n == 4 else 0.06)
    path = tmp_path / "samples.csv"
    sampler = Sampler(reader, 0.1, path).start()
    try:
        wait_for(lambda: sampler.ticks >= 4)
        seen_live = csv_rows(path)  # read while the sampler runs: rows are already on disk
        wait_for(lambda: sampler.ticks >= 14)
    finally:
        sampler.stop()
    assert not sampler.running and reader.closed
    assert len(seen_live) >= 3
    assert list(seen_live[0]) == ["ts", "t_offset_s", "phase", *Reading.columns(), "sample_error"]
    gaps = [b - a for a, b in itertools.pairwise(reader.calls)]
    normal = [g for i, g in enumerate(gaps) if i != 3]
    assert sum(normal) / len(normal) < 0.13, normal  # on the grid: no drift by the reading's cost
    # the overrun resumes on the next grid point (0.3 s after it began): no burst of missed ticks
    assert 0.25 <= gaps[3] < 0.5
    assert min(gaps[4:]) > 0.04
    rows = csv_rows(path)
    assert len(rows) == sampler.ticks == len(reader.calls)
    assert rows[0]["lag_pending"] == "1" and rows[0]["buffer_size"] == "0.5" and rows[0]["t_offset_s"] == ""
    assert sampler.tick_seconds[0] == pytest.approx(0.06, abs=0.05)


def test_a_failing_reader_gives_a_blank_row_and_the_thread_goes_on(tmp_path: Path) -> None:
    def script(n: int) -> dict[str, Any]:
        if n % 2 == 0:
            raise RuntimeError("probe exploded")
        return {"lag_pending": n}

    path = tmp_path / "samples.csv"
    sampler = Sampler(ScriptedReader(script), 0.02, path).start()
    try:
        wait_for(lambda: sampler.ticks >= 6)
    finally:
        sampler.stop()
    rows = csv_rows(path)
    assert sampler.errors == sum(1 for r in rows if r["lag_pending"] == "") >= 3
    assert rows[1]["lag_pending"] == "" and "RuntimeError: probe exploded" in rows[1]["sample_error"]
    assert rows[2]["lag_pending"] == "3" and rows[2]["sample_error"] == ""
    assert "probe exploded" in (sampler.last_error or "")


def test_unreadable_inputs_are_blank_cells_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    sampler = Sampler(ScriptedReader(lambda n: {"buffer_size": 3, "errors": {"lag_pending": "NATS: down"}}), 1,
                      path).open()
    sampler.tick()
    sampler.stop()
    (row,) = csv_rows(path)
    assert row["lag_pending"] == "" and row["buffer_size"] == "3" and row["sample_error"] == "lag_pending: NATS: down"
    frame = sampler.frame()
    assert pd.isna(frame.loc[0, "lag_pending"]) and frame.loc[0, "buffer_size"] == 3


def test_phases_offsets_and_the_frame_read_back(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "samples.csv"
    sampler = Sampler(ScriptedReader(lambda n: {"lag_pending": n}), 1, path, clock=clock).open()
    assert sampler.latest() is None
    sampler.mark_phase("preflight")
    for _ in range(3):
        sampler.tick()
    time.sleep(0.01)
    sampler.mark_phase("injection")
    clock.t0 = utcnow()
    sampler.mark_phase("injection")  # the same phase again: not a new one
    for _ in range(2):
        sampler.tick()
    latest = sampler.latest()
    assert latest is not None and latest.lag_pending == 5
    live = csv_rows(path)
    assert live[0]["t_offset_s"] == "" and float(live[-1]["t_offset_s"]) >= 0  # known once T+0 is
    sampler.stop()
    sampler.stop()  # safe twice
    phases = sampler.phases()
    assert [p for p, _, _ in phases] == ["preflight", "injection"]
    assert phases[0][2] == phases[1][1] and phases[1][2] is not None  # closed at stop
    frame = sampler.frame()
    assert list(frame.columns[:3]) == ["ts", "t_offset_s", "phase"] and list(frame.columns[3:]) == list(
        Reading.columns())
    assert list(frame["phase"]) == ["preflight"] * 3 + ["injection"] * 2
    assert (frame["t_offset_s"][:3] < 0).all() and (frame["t_offset_s"][3:] >= 0).all()
    # after stop the CSV carries the negative offsets of the rows read before T+0
    archived = read_samples(path)
    assert archived["t_offset_s"].notna().all()
    assert archived["t_offset_s"].tolist() == pytest.approx(frame["t_offset_s"].tolist(), abs=0.002)
    assert archived["phase"].tolist() == frame["phase"].tolist()
    assert archived["lag_pending"].tolist() == [1, 2, 3, 4, 5]
    assert str(archived["ts"].dt.tz) == "UTC"
    assert archived["ts"].tolist() == pytest.approx(frame["ts"].tolist(), abs=timedelta(milliseconds=1))


def test_waits_get_the_next_reading_or_none_at_the_deadline(tmp_path: Path) -> None:
    sampler = Sampler(ScriptedReader(lambda n: {"lag_pending": n}), 0.05, tmp_path / "s.csv")
    started = time.monotonic()
    assert sampler.next_reading(0, 0.1) == (0, None)  # not started: nothing comes
    assert 0.09 <= time.monotonic() - started < 2
    sampler.start()
    try:
        count, reading = sampler.next_reading(0, 5)
        assert count >= 1 and reading is not None and reading.lag_pending == count
        later, newer = sampler.next_reading(count, 5)
        assert later > count and newer is not None and newer.lag_pending == later
        assert [r.lag_pending for r in sampler.recent(2)] == [later - 1, later] or sampler.ticks > later
        assert next(iter(sampler.readings_since(newer.at))).at >= newer.at
    finally:
        sampler.stop()
    waited = time.monotonic()
    assert sampler.next_reading(sampler.ticks, 5)[1] is None  # stopped: no reading will come
    assert time.monotonic() - waited < 1


def test_a_waiter_is_woken_by_the_tick(tmp_path: Path) -> None:
    sampler = Sampler(ScriptedReader(lambda n: {"lag_pending": n}), 60, tmp_path / "s.csv").open()
    got: list[Reading | None] = []
    waiter = threading.Thread(target=lambda: got.append(sampler.next_reading(0, 10)[1]))
    waiter.start()
    time.sleep(0.05)
    sampler.tick()
    waiter.join(5)
    sampler.stop()
    assert got and got[0] is not None and got[0].lag_pending == 1


def test_an_invalid_interval_names_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameters) as info:
        Sampler(ScriptedReader(dict), 0, tmp_path / "s.csv")
    assert "sample_interval_seconds" in info.value.problems
    assert not (tmp_path / "s.csv").exists()


def test_memory_stays_small_for_two_hours_at_1hz(tmp_path: Path) -> None:
    values = dict.fromkeys(("lag_pending", "buffer_size", "buffer_capacity", "requests_total", "stored_total"), 1.0)
    sampler = Sampler(ScriptedReader(lambda n: values), 1.0, tmp_path / "s.csv")
    for _ in range(7200):
        sampler.tick()
    assert sampler.memory_bytes() < 2 * 1024 * 1024
    assert len(sampler.frame()) == 7200 and len(sampler.recent()) < 7200  # whole readings: only the last few
    sampler.stop()


def test_rows_before_t0_get_negative_offsets_only_once_t0_is_known(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "samples.csv"
    sampler = Sampler(ScriptedReader(lambda n: {"lag_pending": n}), 1, path, clock=clock).open()
    sampler.tick()
    sampler.stop()  # T+0 never came (pre-flight failed): offsets stay empty, not invented
    assert [r["t_offset_s"] for r in csv_rows(path)] == [""]
    assert read_samples(path)["t_offset_s"].isna().all()
    clock.t0 = datetime.now(timezone.utc)
    assert sampler.frame()["t_offset_s"].iloc[0] < 0
