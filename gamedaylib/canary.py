"""Canaries: sequence-numbered events the runbook sends through the users' ingest path, then finds.

``CanarySender`` posts ``canary-<run_id>-<seq:06d>`` at a steady rate from a background thread (a
slow answer never delays the next canary: posts run on a small pool, each at its planned time) and
records what each post was answered. ``account`` then looks every key up in the events table in one
set-based call and says, per canary: stored once, stored twice or more, lost (accepted but never
stored), or rejected (not accepted: a user-facing error), with the end-to-end latency.

RPO from canaries: each canary samples the write path once per interval (1 / rate), so a lost canary
stands for one interval of lost writes. A loss window is a run of consecutive lost canaries (rejected
ones in between neither extend nor break it: they were never accepted); its span is
``last.sent_at - first.sent_at + interval``, so a single lost canary is a window of one interval, not
zero. ``rpo_seconds`` is the longest span (0.0 when nothing was lost). The upper bound (from the last
stored canary before the window to the first stored after it) is reported beside it.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any, Protocol

from gamedaylib.exceptions import InvalidParameters

__all__ = [
    "CANARY_TYPE",
    "CanaryOutcome",
    "CanaryReport",
    "CanaryResult",
    "CanarySender",
    "KeyInfoLike",
    "account",
    "canary_key",
]

CANARY_TYPE = "gameday.canary"


def canary_key(run_id: str, seq: int) -> str:
    return f"canary-{run_id}-{seq:06d}"


@dataclass(frozen=True)
class CanaryResult:
    """What one canary post was answered."""

    seq: int
    key: str
    sent_at: datetime
    status: int | None  # HTTP status; None = no answer (timeout, connection refused or reset)
    error: str | None
    latency_ms: float  # time to the HTTP answer (or to giving up)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


log = logging.getLogger(__name__)


def _log_failure(future: Future[None]) -> None:
    """A post that raised something unexpected (a bug, not a network failure) is logged, not lost."""
    exc = future.exception()
    if exc is not None:
        log.error("canary post failed unexpectedly: %r", exc)


class CanarySender:
    """Posts canaries to ``ingest_url`` at ``rate_per_second`` until ``stop``."""

    def __init__(
        self, ingest_url: str, run_id: str, rate_per_second: float = 2.0, timeout: float = 2.0
    ) -> None:
        if rate_per_second <= 0:
            raise InvalidParameters(f"must be positive, not {rate_per_second}", parameter="canary_rate")
        if urllib.parse.urlsplit(ingest_url or "").scheme not in ("http", "https"):
            raise InvalidParameters(f"not an http(s) URL: {ingest_url!r}", parameter="ingest_url")
        self.ingest_url = ingest_url
        self.run_id = run_id
        self.rate_per_second = float(rate_per_second)
        self.timeout = float(timeout)
        self._results: list[CanaryResult] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._next_seq = 1  # only the sending thread numbers canaries
        self._failed = 0

    @property
    def interval_seconds(self) -> float:
        return 1.0 / self.rate_per_second

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> CanarySender:
        if self._thread is not None:
            return self
        workers = max(2, math.ceil(self.rate_per_second * self.timeout) + 2)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="canary-post")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"canary-{self.run_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait for the posts in flight (at most one timeout)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> CanarySender:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._pool is not None
        began = time.monotonic()
        planned = 0
        while not self._stopping.is_set():
            due = began + planned * self.interval_seconds
            delay = due - time.monotonic()
            if delay > 0 and self._stopping.wait(delay):
                break
            if time.monotonic() - due > self.interval_seconds:
                # Far behind (a suspended laptop): re-anchor instead of sending a burst.
                began, planned = time.monotonic(), 0
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            planned += 1
            self._pool.submit(self._post, seq).add_done_callback(_log_failure)

    # -- one post ---------------------------------------------------------------------------------
    def _post(self, seq: int) -> None:
        key = canary_key(self.run_id, seq)
        sent_at = datetime.now(timezone.utc)
        body = json.dumps(
            {
                "type": CANARY_TYPE,
                "idempotency_key": key,
                "payload": {"run_id": self.run_id, "seq": seq, "sent_at": sent_at.isoformat()},
            }
        ).encode()
        request = urllib.request.Request(
            self.ingest_url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        status: int | None = None
        error: str | None = None
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status = answer.status
                answer.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                error = exc.read()[:200].decode("utf-8", errors="replace") or exc.reason
            finally:
                exc.close()
        except urllib.error.URLError as exc:
            error = f"no answer: {exc.reason}"
        except (OSError, http.client.HTTPException) as exc:  # timeout, reset, broken answer
            error = f"no answer: {exc!r}"
        latency_ms = (time.perf_counter() - started) * 1000.0
        result = CanaryResult(seq, key, sent_at, status, error, round(latency_ms, 3))
        with self._lock:
            self._results.append(result)
            if not result.accepted:
                self._failed += 1

    # -- what happened ----------------------------------------------------------------------------
    def results(self) -> list[CanaryResult]:
        """Every answered (or given-up) canary so far, by sequence number."""
        with self._lock:
            return sorted(self._results, key=lambda r: r.seq)

    def counts(self) -> dict[str, int]:
        """``sent`` (answered or given up), ``accepted`` (2xx), ``failed`` (not 2xx or no answer)."""
        with self._lock:
            sent = len(self._results)
            return {"sent": sent, "accepted": sent - self._failed, "failed": self._failed}


# -- accounting -------------------------------------------------------------------------------------


class KeyInfoLike(Protocol):
    """What the events table says about one idempotency key (``probes.events.KeyInfo``)."""

    count: int
    first_created_at: datetime | None
    last_created_at: datetime | None


Lookup = Callable[[list[str]], Mapping[str, KeyInfoLike]]

OUTCOMES = ("stored", "duplicated", "lost", "rejected")


@dataclass(frozen=True)
class CanaryOutcome:
    seq: int
    key: str
    sent_at: datetime
    outcome: str  # stored | duplicated | lost | rejected
    status: int | None
    stored_count: int
    latency_s: float | None  # end to end: first stored created_at - sent_at


@dataclass(frozen=True)
class CanaryReport:
    sent: int
    accepted: int
    stored: int  # accepted and stored exactly once
    lost: int  # accepted (2xx) and never stored
    duplicated: int  # accepted and stored more than once
    rejected: int  # not 2xx, or no answer: user-facing errors
    rejected_but_stored: int  # not accepted, yet found in the table (e.g. answer lost in a timeout)
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    loss_windows: list[tuple[datetime, datetime]]
    rpo_seconds: float
    rpo_upper_bound_seconds: float
    interval_seconds: float
    evidence: str
    outcomes: list[CanaryOutcome] = field(default_factory=list, repr=False)

    @property
    def error_rate(self) -> float:
        return self.rejected / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "stored": self.stored,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "rejected": self.rejected,
            "rejected_but_stored": self.rejected_but_stored,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "latency_max_s": self.latency_max_s,
            "loss_windows": [[a.isoformat(), b.isoformat()] for a, b in self.loss_windows],
            "rpo_seconds": self.rpo_seconds,
            "rpo_upper_bound_seconds": self.rpo_upper_bound_seconds,
            "interval_seconds": self.interval_seconds,
            "evidence": self.evidence,
        }


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _infer_interval(results: Sequence[CanaryResult]) -> float:
    times = sorted(r.sent_at for r in results)
    gaps = sorted((b - a).total_seconds() for a, b in pairwise(times))
    return gaps[len(gaps) // 2] if gaps else 0.0


def account(
    results: Iterable[CanaryResult], lookup: Lookup, interval_seconds: float | None = None
) -> CanaryReport:
    """Classify every canary against the events table (one ``lookup`` call with all keys)."""
    ordered = sorted(results, key=lambda r: r.seq)
    interval = _infer_interval(ordered) if interval_seconds is None else float(interval_seconds)
    keys = [r.key for r in ordered]
    found = lookup(keys) if keys else {}

    outcomes: list[CanaryOutcome] = []
    latencies: list[float] = []
    rejected_but_stored = 0
    for r in ordered:
        info = found.get(r.key)
        count = int(info.count) if info is not None else 0
        latency = None
        if count and info is not None and info.first_created_at is not None:
            latency = (info.first_created_at - r.sent_at).total_seconds()
        if not r.accepted:
            outcome = "rejected"
            rejected_but_stored += 1 if count else 0
        elif count == 0:
            outcome = "lost"
        elif count == 1:
            outcome = "stored"
        else:
            outcome = "duplicated"
        if outcome in ("stored", "duplicated") and latency is not None:
            latencies.append(latency)
        outcomes.append(CanaryOutcome(r.seq, r.key, r.sent_at, outcome, r.status, count, latency))

    # Loss windows over the accepted canaries in sequence order.
    accepted = [o for o in outcomes if o.outcome != "rejected"]
    windows: list[tuple[datetime, datetime]] = []
    upper_bounds: list[float] = []
    run: list[CanaryOutcome] = []
    for i, o in enumerate(accepted + [None]):  # type: ignore[list-item]
        if o is not None and o.outcome == "lost":
            run.append(o)
            continue
        if run:
            windows.append((run[0].sent_at, run[-1].sent_at))
            start_index = i - len(run)
            before = (
                accepted[start_index - 1].sent_at
                if start_index > 0
                else run[0].sent_at - timedelta(seconds=interval)
            )
            after = o.sent_at if o is not None else run[-1].sent_at + timedelta(seconds=interval)
            upper_bounds.append((after - before).total_seconds())
            run = []
    spans = [(b - a).total_seconds() + interval for a, b in windows]
    rpo = max(spans, default=0.0)
    upper = max(upper_bounds, default=0.0)

    counts = {name: sum(1 for o in outcomes if o.outcome == name) for name in OUTCOMES}
    evidence = (
        f"{len(ordered)} canaries sent every {interval:.3g} s through the ingest path and looked up by "
        f"idempotency key in the events table: {counts['stored']} stored once, {counts['duplicated']} "
        f"stored more than once, {counts['lost']} accepted but never stored, {counts['rejected']} not "
        f"accepted (non-2xx or no answer). "
        + (
            f"{len(windows)} loss window(s); RPO = longest window = last lost - first lost + one canary "
            f"interval = {rpo:.3g} s (upper bound, last stored before to first stored after: {upper:.3g} s)."
            if windows
            else "No accepted canary was lost: RPO 0 s."
        )
    )
    return CanaryReport(
        sent=len(ordered),
        accepted=len(accepted),
        stored=counts["stored"],
        lost=counts["lost"],
        duplicated=counts["duplicated"],
        rejected=counts["rejected"],
        rejected_but_stored=rejected_but_stored,
        latency_p50_s=_percentile(latencies, 50),
        latency_p95_s=_percentile(latencies, 95),
        latency_max_s=max(latencies, default=None),
        loss_windows=windows,
        rpo_seconds=round(rpo, 3),
        rpo_upper_bound_seconds=round(upper, 3),
        interval_seconds=interval,
        evidence=evidence,
        outcomes=outcomes,
    )
