"""The sampler: a background time series of the whole gameday, written to ``samples.csv`` as it goes.

Every ``interval_seconds`` a thread calls ``sample_fn() -> {column: number | None}``, adds ``ts``
(UTC ISO-8601), ``t_offset_s`` (seconds after T+0, once the clock has a T+0) and the current
``phase``, and appends the row to the CSV (header first; flushed per row, so a crash keeps every
earlier row). The columns are fixed at start from the declared list; a value the sample did not give
is left empty. A sample that raises is recorded as a row of empty values with the error in the
``sample_error`` column and counted in ``errors``: the sampler is an observer and never stops the run.
Ticks are scheduled on a fixed grid (start + n * interval); a tick that overruns skips the missed grid
points rather than bursting.

In memory each column is an ``array('d')`` (NaN = empty): 8 bytes per value, about 150 bytes per row
for the lab's 15 columns, so 2 h at 1 Hz is about 1 MB. On ``stop`` the CSV is rewritten once
(atomically) with the T-offsets of the rows sampled before T+0 filled in, negative.

``lab_sample_fn`` builds the standard sample from the probes (NATS ``/jsz``, the services' ``/metrics``,
the canary sender and the target's partition state).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from gamedaylib.clock import parse_time
from gamedaylib.exceptions import GamedayError, InvalidParameters, ProbeError
from gamedaylib.targets.base import Endpoints

__all__ = ["LAB_COLUMNS", "LabSampleFn", "Sampler", "lab_sample_fn", "read_samples"]

log = logging.getLogger(__name__)

BASE_COLUMNS = ("ts", "t_offset_s", "phase")
ERROR_COLUMN = "sample_error"

LAB_COLUMNS: tuple[str, ...] = (
    "lag_pending",
    "lag_ack_pending",
    "buffer_size",
    "buffer_capacity",
    "retry_total",
    "publish_errors_total",
    "http_5xx_total",
    "events_published_total",
    "events_stored_total",
    "circuit_breaker_state",
    "gateway_nats_connected",
    "reporting_nats_connected",
    "canaries_sent",
    "canaries_failed",
    "partition_active",
)


class ClockLike(Protocol):
    t0: datetime | None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)


def _cell(value: float) -> str:
    if math.isnan(value):
        return ""
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class Sampler:
    """Calls ``sample_fn`` every ``interval_seconds`` in a thread and records the rows."""

    def __init__(
        self,
        sample_fn: Callable[[], Mapping[str, Any]],
        interval_seconds: float,
        csv_path: str | os.PathLike[str],
        clock: ClockLike | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        if interval_seconds <= 0:
            raise InvalidParameters(
                f"must be positive, not {interval_seconds}", parameter="sample_interval_seconds"
            )
        declared = columns if columns is not None else getattr(sample_fn, "columns", None)
        if not declared:
            raise TypeError("declare the columns (columns=... or sample_fn.columns)")
        self.columns: tuple[str, ...] = tuple(declared)
        clash = set(self.columns) & {*BASE_COLUMNS, ERROR_COLUMN}
        if clash:
            raise TypeError(f"reserved column names: {sorted(clash)}")
        self.sample_fn = sample_fn
        self.interval_seconds = float(interval_seconds)
        self.csv_path = Path(csv_path)
        self.clock = clock
        self.errors = 0
        self.last_error: str | None = None
        self.tick_seconds: array[float] = array("d")  # how long each sample took (for the benchmark)
        self._ts: array[float] = array("d")
        self._phase_idx: array[int] = array("h")
        self._values: list[array[float]] = [array("d") for _ in self.columns]
        self._phase_names: list[str] = []
        self._phases: list[tuple[str, datetime, datetime | None]] = []
        self._current_phase: str = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh: Any = None
        self._writer: Any = None

    @classmethod
    def from_gameday(cls, gd: Any) -> Sampler:
        """The lab/cluster sampler of a ``runbook.Gameday`` (its endpoints, canaries, target, clock)."""
        path = Path(gd.archive_dir) / "samples.csv"
        fn = lab_sample_fn(gd.endpoints, canary_sender=gd.canaries, target=gd.target)
        return cls(fn, float(gd.params["sample_interval_seconds"]), path, clock=getattr(gd, "clock", None))

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
        """Open the CSV and start ticking in a background thread."""
        if self._thread is not None:
            return self
        self.open()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (after the tick in progress), close the CSV, fill in early T-offsets."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._writer = None
            self._rewrite_offsets()
        with self._lock:
            if self._phases and self._phases[-1][2] is None:
                name, start, _ = self._phases[-1]
                self._phases[-1] = (name, start, datetime.now(timezone.utc))
        closer = getattr(self.sample_fn, "close", None)
        if callable(closer):
            closer()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ticks(self) -> int:
        """Samples taken so far."""
        return len(self._ts)

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        began = time.monotonic()
        n = 0
        while not self._stopping.is_set():
            self.tick()
            n += 1
            now = time.monotonic()
            due = began + n * self.interval_seconds
            if due < now:  # overran: skip the grid points already missed
                n = math.ceil((now - began) / self.interval_seconds)
                due = began + n * self.interval_seconds
            if self._stopping.wait(due - now):
                break

    # -- one tick ---------------------------------------------------------------------------------
    def _t0_ts(self) -> float | None:
        t0 = getattr(self.clock, "t0", None)
        return parse_time(t0).timestamp() if isinstance(t0, datetime) else None

    def tick(self) -> dict[str, Any]:
        """Take one sample now and record it (the thread calls this; tests and benchmarks may too)."""
        ts = time.time()
        started = time.perf_counter()
        error: str | None = None
        try:
            sample = dict(self.sample_fn())
            values = [_number(sample.get(c)) for c in self.columns]
            error = sample.get(ERROR_COLUMN) or None
        except Exception as exc:  # noqa: BLE001 (an observer: a failed sample is a row of blanks, logged)
            values = [math.nan] * len(self.columns)
            error = f"{type(exc).__name__}: {exc}"
            self.errors += 1
            self.last_error = error
            log.warning("sample failed: %s", error)
        self.tick_seconds.append(time.perf_counter() - started)
        t0 = self._t0_ts()
        offset = ts - t0 if t0 is not None else math.nan
        with self._lock:
            phase = self._current_phase
            if phase not in self._phase_names:
                self._phase_names.append(phase)
            self._ts.append(ts)
            self._phase_idx.append(self._phase_names.index(phase))
            for column, value in zip(self._values, values):
                column.append(value)
        if self._writer is not None:
            self._writer.writerow(
                [
                    _iso(ts),
                    "" if math.isnan(offset) else f"{offset:.3f}",
                    phase,
                    *map(_cell, values),
                    error or "",
                ]
            )
            self._fh.flush()
        return self._row(len(self._ts) - 1, t0)

    def _rewrite_offsets(self) -> None:
        """Rewrite the CSV once with every row's T-offset (rows before T+0 get negative offsets)."""
        t0 = self._t0_ts()
        if t0 is None or not self.csv_path.exists():
            return
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with (
            open(self.csv_path, newline="", encoding="utf-8") as src,
            open(tmp, "w", newline="", encoding="utf-8") as dst,
        ):
            reader, writer = csv.reader(src), csv.writer(dst)
            writer.writerow(next(reader))
            for line in reader:
                if line and not line[1]:
                    line[1] = f"{datetime.fromisoformat(line[0]).timestamp() - t0:.3f}"
                writer.writerow(line)
        os.replace(tmp, self.csv_path)

    # -- phases -----------------------------------------------------------------------------------
    def mark_phase(self, phase_id: str, at: datetime | None = None) -> None:
        """From now on, rows belong to ``phase_id``; the previous phase ends now."""
        moment = at or datetime.now(timezone.utc)
        with self._lock:
            if self._phases and self._phases[-1][2] is None:
                name, start, _ = self._phases[-1]
                if name == phase_id:
                    return
                self._phases[-1] = (name, start, moment)
            self._phases.append((phase_id, moment, None))
            self._current_phase = phase_id

    def phases(self) -> list[tuple[str, datetime, datetime | None]]:
        """``(phase, start, end)`` in order; the current phase has ``end`` None."""
        with self._lock:
            return list(self._phases)

    # -- reading ----------------------------------------------------------------------------------
    def _row(self, i: int, t0: float | None) -> dict[str, Any]:
        ts = self._ts[i]
        row: dict[str, Any] = {
            "ts": ts,
            "t_offset_s": (ts - t0) if t0 is not None else None,
            "phase": self._phase_names[self._phase_idx[i]],
        }
        for name, column in zip(self.columns, self._values):
            value = column[i]
            row[name] = None if math.isnan(value) else value
        return row

    def latest(self) -> dict[str, Any] | None:
        """The last row (``ts`` as unix seconds; empty values None), or None before the first tick."""
        with self._lock:
            if not self._ts:
                return None
            return self._row(len(self._ts) - 1, self._t0_ts())

    def rows(self) -> list[dict[str, Any]]:
        """Every row so far (built on demand from the compact columns)."""
        t0 = self._t0_ts()
        with self._lock:
            return [self._row(i, t0) for i in range(len(self._ts))]

    def memory_bytes(self) -> int:
        """Bytes held by the in-memory series (arrays' buffers)."""
        arrays: list[array[Any]] = [self._ts, self._phase_idx, *self._values]
        return sum(a.buffer_info()[1] * a.itemsize for a in arrays)


def read_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``samples.csv`` as the sampler's ``rows()`` gives them (for the analyst and history)."""
    rows: list[dict[str, Any]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if key == "ts":
                    row[key] = datetime.fromisoformat(text).timestamp() if text else None
                elif key in ("phase", ERROR_COLUMN):
                    row[key] = text
                else:
                    row[key] = float(text) if text not in ("", None) else None
            rows.append(row)
    return rows


# -- the standard sample ------------------------------------------------------------------------------


class _CanaryCounts(Protocol):
    def counts(self) -> dict[str, int]: ...


class _PartitionState(Protocol):
    def partition_active(self) -> bool: ...


class LabSampleFn:
    """One sample of the system from the probes; a failing probe blanks only its own columns."""

    columns = LAB_COLUMNS

    def __init__(
        self,
        endpoints: Endpoints,
        canary_sender: _CanaryCounts | None = None,
        target: _PartitionState | None = None,
        timeout: float = 1.0,
    ) -> None:
        from gamedaylib.probes.metrics import ServiceMetrics
        from gamedaylib.probes.nats import NatsMonitor

        self.endpoints = endpoints
        self.canary_sender = canary_sender
        self.target = target
        self.nats = (
            NatsMonitor(endpoints.nats_monitor_url, timeout=timeout) if endpoints.nats_monitor_url else None
        )
        self.metrics = ServiceMetrics(endpoints.service_metrics, timeout=timeout)

    def close(self) -> None:
        self.metrics.close()

    def __call__(self) -> dict[str, Any]:
        from gamedaylib.probes.metrics import MetricsSnapshot

        ep = self.endpoints
        row: dict[str, Any] = {}
        problems: list[str] = []
        snaps = self.metrics.sample()
        for name, snap in snaps.items():
            if isinstance(snap, ProbeError):
                problems.append(f"{name}: {snap.reason}")
        gateway = snaps.get("api-gateway")
        reporting = snaps.get("reporting")
        exporter = snaps.get("nats-exporter")

        if self.nats is not None:
            try:
                lag = self.nats.consumer_lag(ep.stream_name, ep.consumer_name)
                row["lag_pending"], row["lag_ack_pending"] = lag.num_pending, lag.num_ack_pending
            except ProbeError as exc:
                problems.append(f"nats: {exc.reason}")
        if "lag_pending" not in row and isinstance(exporter, MetricsSnapshot):
            labels = {"stream_name": ep.stream_name, "consumer_name": ep.consumer_name}
            row["lag_pending"] = exporter.value("jetstream_consumer_num_pending", **labels)
            row["lag_ack_pending"] = exporter.value("jetstream_consumer_num_ack_pending", **labels)

        if isinstance(gateway, MetricsSnapshot):
            row["buffer_size"] = gateway.value("event_buffer_size")
            row["buffer_capacity"] = gateway.value("event_buffer_capacity")
            row["publish_errors_total"] = gateway.value("nats_publish_errors_total")
            row["http_5xx_total"] = gateway.sum("http_requests_total", code="5xx") or 0.0
            row["events_published_total"] = gateway.value("events_published_total")
            row["circuit_breaker_state"] = gateway.value("circuit_breaker_state")
            row["gateway_nats_connected"] = gateway.value("nats_connected")
        if isinstance(reporting, MetricsSnapshot):
            row["events_stored_total"] = reporting.value("events_stored_total")
            row["reporting_nats_connected"] = reporting.value("nats_connected")
        retries = [
            s.value("nats_retry_total") for s in (gateway, reporting) if isinstance(s, MetricsSnapshot)
        ]
        known = [r for r in retries if r is not None]
        if known:
            row["retry_total"] = sum(known)

        if self.canary_sender is not None:
            counts = self.canary_sender.counts()
            row["canaries_sent"], row["canaries_failed"] = counts.get("sent"), counts.get("failed")
        if self.target is not None:
            try:
                row["partition_active"] = bool(self.target.partition_active())
            except GamedayError as exc:  # ProbeError, TargetError, LabError: the column stays empty
                problems.append(f"partition: {exc}")
        if problems:
            row[ERROR_COLUMN] = "; ".join(problems)[:300]
        return row


def lab_sample_fn(
    endpoints: Endpoints,
    canary_sender: _CanaryCounts | None = None,
    target: _PartitionState | None = None,
) -> LabSampleFn:
    """The standard sample (``LAB_COLUMNS``) from direct probes: fresh each tick, even where Prometheus
    exists (the runbook uses Prometheus for range queries)."""
    return LabSampleFn(endpoints, canary_sender, target)
