"""The sampler: the one poller of a run. Every ``interval_seconds`` a background thread takes one
``Reading`` from the reader and

- appends it to ``samples.csv`` as it goes (header first, flushed per row: a crash keeps every
  earlier row), with ``ts`` (UTC), ``t_offset_s`` (seconds after T+0, once known; rows before T+0 get
  negative offsets when the file is rewritten once at the end), the ``phase`` and the reading's
  numeric inputs (empty = unreadable; the reasons go to ``sample_error``);
- keeps the series in compact columns (``array('d')``, NaN = unreadable: about 8 bytes a value) for
  :meth:`Sampler.frame`, a pandas DataFrame (charts, per-phase statistics, resampling);
- keeps the last readings whole, and wakes whoever waits for the next one (:meth:`Sampler.next_reading`):
  the run's waits and stop conditions consume these readings instead of polling on their own.

Ticks are scheduled on a fixed grid (start + n * interval); a tick that overruns skips the missed grid
points rather than bursting. A reader that raises gives a row of blanks with the error: the sampler
is an observer and never stops the run.
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gamedaylib.clock import utcnow
from gamedaylib.exceptions import InvalidParameters
from gamedaylib.readings import Reader, Reading

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SAMPLES_FILE", "Sampler", "read_samples"]

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.csv"
BASE_COLUMNS = ("ts", "t_offset_s", "phase")
ERROR_COLUMN = "sample_error"
RECENT = 256  # whole readings kept for waits and stop conditions


class ClockLike(Protocol):
    t0: datetime | None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def _cell(value: float) -> str:
    if math.isnan(value):
        return ""
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class Sampler:
    """Takes one reading per interval in a thread; records and hands them out."""

    def __init__(self, reader: Reader, interval_seconds: float, csv_path: str | os.PathLike[str],
                 clock: ClockLike | None = None, on_reading: Callable[[Reading], None] | None = None) -> None:
        if interval_seconds <= 0:
            raise InvalidParameters(f"must be positive, not {interval_seconds}", parameter="sample_interval_seconds")
        self.reader = reader
        self.columns: tuple[str, ...] = reader.reading_type.columns()
        self.interval_seconds = float(interval_seconds)
        self.csv_path = Path(csv_path)
        self.clock = clock
        self.on_reading = on_reading  # told of every reading, in the sampler's thread (must not raise)
        self.errors = 0
        self.last_error: str | None = None
        self.tick_seconds: array[float] = array("d")  # how long each reading took (for the benchmark)
        self._ts: array[float] = array("d")
        self._phase_idx: array[int] = array("h")
        self._values: list[array[float]] = [array("d") for _ in self.columns]
        self._phase_names: list[str] = []
        self._phases: list[tuple[str, datetime, datetime | None]] = []
        self._current_phase = ""
        self._recent: collections.deque[Reading] = collections.deque(maxlen=RECENT)
        self._count = 0
        self._tick = threading.Condition()
        self._stopping = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._fh: Any = None
        self._writer: Any = None

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def header(self) -> list[str]:
        return [*BASE_COLUMNS, *self.columns, ERROR_COLUMN]

    def open(self) -> Sampler:
        """Create the CSV and write its header (``start`` does this; ``tick`` by hand needs it too)."""
        if self._fh is None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.csv_path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed in stop)
            self._writer = csv.writer(self._fh)
            self._writer.writerow(self.header)
            self._fh.flush()
        return self

    def start(self) -> Sampler:
        if self._thread is not None:
            return self
        self.open()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (after the reading in progress), close the CSV, fill in early T-offsets.
        Safe twice."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        with self._tick:
            self._tick.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._writer = None
            self._rewrite_offsets()
        with self._tick:
            if self._phases and self._phases[-1][2] is None:
                name, start, _ = self._phases[-1]
                self._phases[-1] = (name, start, utcnow())
        self.reader.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ticks(self) -> int:
        return self._count

    def _run(self) -> None:
        began = time.monotonic()
        n = 0
        while not self._stopping.is_set():
            self.tick()
            n += 1
            now = time.monotonic()
            due = began + n * self.interval_seconds
            if due < now:
                n = math.ceil((now - began) / self.interval_seconds)
                due = began + n * self.interval_seconds
            if self._stopping.wait(due - now):
                break

    # -- one tick ---------------------------------------------------------------------------------
    def _t0_ts(self) -> float | None:
        t0 = getattr(self.clock, "t0", None)
        return t0.timestamp() if isinstance(t0, datetime) else None

    def tick(self) -> Reading:
        """Take one reading now and record it (the thread calls this; tests and benchmarks may too)."""
        started = time.perf_counter()
        try:
            reading = self.reader.read()
            error = "; ".join(f"{k}: {v}" for k, v in reading.errors.items())[:300]
        except Exception as exc:  # noqa: BLE001 (an observer: a failed reading is a row of blanks, logged)
            reading = self.reader.reading_type(at=utcnow(), errors={"reading": f"{type(exc).__name__}: {exc}"})
            error = reading.errors["reading"]
            self.errors += 1
            self.last_error = error
            log.warning("reading failed: %s", error)
        self.tick_seconds.append(time.perf_counter() - started)
        values = reading.values()
        row = [math.nan if values[c] is None else float(values[c]) for c in self.columns]  # type: ignore[arg-type]
        ts = reading.at.timestamp()
        t0 = self._t0_ts()
        with self._tick:
            phase = self._current_phase
            if phase not in self._phase_names:
                self._phase_names.append(phase)
            self._ts.append(ts)
            self._phase_idx.append(self._phase_names.index(phase))
            for column, value in zip(self._values, row, strict=False):
                column.append(value)
            self._recent.append(reading)
            self._count += 1
            if self._writer is not None:
                self._writer.writerow([_iso(ts), "" if t0 is None else f"{ts - t0:.3f}", phase,
                                       *map(_cell, row), error])
                self._fh.flush()
            self._tick.notify_all()
        if self.on_reading is not None:
            self.on_reading(reading)
        return reading

    def _rewrite_offsets(self) -> None:
        """Rewrite the CSV once with every row's T-offset (rows before T+0 get negative offsets)."""
        t0 = self._t0_ts()
        if t0 is None or not self.csv_path.exists():
            return
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with (open(self.csv_path, newline="", encoding="utf-8") as src,
              open(tmp, "w", newline="", encoding="utf-8") as dst):
            reader, writer = csv.reader(src), csv.writer(dst)
            writer.writerow(next(reader))
            for line in reader:
                if line and not line[1]:
                    line[1] = f"{datetime.fromisoformat(line[0]).timestamp() - t0:.3f}"
                writer.writerow(line)
        os.replace(tmp, self.csv_path)

    # -- consuming readings -----------------------------------------------------------------------
    def latest(self) -> Reading | None:
        with self._tick:
            return self._recent[-1] if self._recent else None

    def recent(self, n: int = RECENT) -> list[Reading]:
        """The last ``n`` readings, oldest first."""
        with self._tick:
            return list(self._recent)[-n:]

    def next_reading(self, after: int, timeout: float) -> tuple[int, Reading | None]:
        """Block until a reading newer than tick number ``after`` exists (or ``timeout`` passes);
        return the current tick count and that newest reading (None on timeout or stop)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._tick:
            while self._count <= after and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._count, None
                self._tick.wait(left)
            if self._count <= after:
                return self._count, None
            return self._count, self._recent[-1]

    def readings_since(self, since: datetime) -> Iterator[Reading]:
        for reading in self.recent():
            if reading.at >= since:
                yield reading

    # -- phases -----------------------------------------------------------------------------------
    def mark_phase(self, phase_id: str, at: datetime | None = None) -> None:
        """From now on, rows belong to ``phase_id``; the previous phase ends now."""
        moment = at or utcnow()
        with self._tick:
            if self._phases and self._phases[-1][2] is None:
                name, start, _ = self._phases[-1]
                if name == phase_id:
                    return
                self._phases[-1] = (name, start, moment)
            self._phases.append((phase_id, moment, None))
            self._current_phase = phase_id

    def phases(self) -> list[tuple[str, datetime, datetime | None]]:
        with self._tick:
            return list(self._phases)

    # -- the series -------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """Every reading so far as a DataFrame: ``ts`` (UTC), ``t_offset_s``, ``phase`` and one column
        per input (NaN = unreadable)."""
        import numpy as np
        import pandas as pd

        with self._tick:
            ts = np.frombuffer(self._ts, dtype="d").copy() if len(self._ts) else np.array([], dtype="d")
            phases = [self._phase_names[i] for i in self._phase_idx]
            data = {c: np.frombuffer(col, dtype="d").copy() if len(col) else np.array([], dtype="d")
                    for c, col in zip(self.columns, self._values, strict=False)}
        t0 = self._t0_ts()
        frame = pd.DataFrame(data)
        frame.insert(0, "phase", phases)
        frame.insert(0, "t_offset_s", ts - t0 if t0 is not None else np.full(len(ts), np.nan))
        frame.insert(0, "ts", pd.to_datetime(ts, unit="s", utc=True))
        return frame

    def memory_bytes(self) -> int:
        """Bytes held by the in-memory series (arrays' buffers)."""
        arrays: list[array[Any]] = [self._ts, self._phase_idx, *self._values]
        return sum(a.buffer_info()[1] * a.itemsize for a in arrays)


def read_samples(path: str | os.PathLike[str]) -> pd.DataFrame:
    """An archived ``samples.csv`` as the DataFrame :meth:`Sampler.frame` gives (for the analyst)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"phase": str})  # all-empty phases would otherwise read as float NaN
    if "ts" in frame:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    if "phase" in frame:
        frame["phase"] = frame["phase"].fillna("").astype(str)
    return frame
