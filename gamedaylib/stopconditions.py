"""Stop conditions: limits that end the fault at once when the system crosses them.

Each condition names the parameter that sets it, the reading inputs it judges, and says in words
what happened ("a gateway replica's buffer 100 % full at T+00:04; limit 90 %"). A condition fired
by what the system did makes the run *fail* (the system missed a target: exit 1, ``stopped_by`` in
the scorecard); the verification phases still run so the post-mortem has data.

A condition that cannot see its input cannot stop anything: :func:`blind_inputs` lists the inputs
of the enabled conditions that a (baseline) reading could not read, and pre-flight refuses to inject
then, naming them. Losing sight of the consumer lag during the fault (NATS monitoring down on
``BLIND_POLLS`` readings in a row) ends the fault too, but that run could not be judged: ``blind``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gamedaylib.readings import Reading

__all__ = ["BLIND_POLLS", "BufferFraction", "ErrorRate", "LagLimit", "StopCondition", "StopReason",
           "blind_inputs", "conditions_of", "first_fired"]

# consumer lag unreadable on this many readings in a row while the fault is in force: the lag limit
# can no longer be judged, so the fault is ended at once (one or two failed polls are a blip)
BLIND_POLLS = 3


@dataclass(frozen=True)
class StopReason:
    """Why the fault was ended early: the scorecard's ``stopped_by``."""

    condition: str  # the parameter (stop_buffer_fraction, ...) or "lag_unreadable"
    value: float
    threshold: float
    at: datetime
    words: str  # what happened, in words with units (the report's sentence)
    blind: bool = False  # True: the run lost sight of its input (could not judge), not a system failure

    def as_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "value": self.value, "threshold": self.threshold,
                "at": self.at.isoformat(timespec="seconds"), "words": self.words, "blind": self.blind}

    def __str__(self) -> str:
        return self.words


class StopCondition(Protocol):
    @property
    def parameter(self) -> str: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...  # Reading fields it needs

    def judge(self, reading: Reading, baseline: Reading | None, offset: str) -> StopReason | None: ...


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


@dataclass(frozen=True)
class BufferFraction:
    """The fullest gateway replica's buffer above ``limit`` of its capacity."""

    limit: float
    parameter: str = "stop_buffer_fraction"
    inputs: tuple[str, ...] = ("buffer_fraction_max",)

    def judge(self, reading: Reading, baseline: Reading | None, offset: str) -> StopReason | None:
        fraction = reading.buffer_fraction_max
        if fraction is None or fraction <= self.limit:
            return None
        held = "" if reading.buffer_size is None or reading.buffer_capacity is None else (
            f" ({reading.buffer_size:.0f} events held of {reading.buffer_capacity:.0f} over every replica)")
        return StopReason(self.parameter, round(fraction, 4), self.limit, reading.at,
                          f"gateway buffer {_pct(fraction)} full in its fullest replica{held} at {offset}; "
                          f"limit {_pct(self.limit)}")


@dataclass(frozen=True)
class ErrorRate:
    """More than ``limit`` of the gateway's answers since the baseline were 5xx (once ``min_requests``
    answers were seen)."""

    limit: float
    min_requests: int = 10
    parameter: str = "stop_error_rate"
    inputs: tuple[str, ...] = ("requests_total", "requests_5xx")

    def judge(self, reading: Reading, baseline: Reading | None, offset: str) -> StopReason | None:
        if reading.requests_total is None or reading.requests_5xx is None:
            return None
        sent = max(0.0, reading.requests_total - ((baseline.requests_total or 0.0) if baseline else 0.0))
        failed = max(0.0, reading.requests_5xx - ((baseline.requests_5xx or 0.0) if baseline else 0.0))
        if sent < self.min_requests or failed / sent <= self.limit:
            return None
        rate = failed / sent
        return StopReason(self.parameter, round(rate, 4), self.limit, reading.at,
                          f"{_pct(rate)} of the gateway's answers were errors (5xx: {failed:.0f} of {sent:.0f} "
                          f"since pre-flight) at {offset}; limit {_pct(self.limit)}")


@dataclass(frozen=True)
class LagLimit:
    """The consumer's unprocessed messages above ``limit``."""

    limit: float
    parameter: str = "stop_lag_limit"
    inputs: tuple[str, ...] = ("lag_pending",)

    def judge(self, reading: Reading, baseline: Reading | None, offset: str) -> StopReason | None:
        lag = reading.lag_pending
        if lag is None or lag <= self.limit:
            return None
        return StopReason(self.parameter, lag, self.limit, reading.at,
                          f"consumer lag {lag:,.0f} messages at {offset}; limit {self.limit:,.0f}")


def conditions_of(params: Any) -> list[StopCondition]:
    """The stop conditions a run's parameters enable."""
    return [BufferFraction(params.stop_buffer_fraction), ErrorRate(params.stop_error_rate),
            LagLimit(params.stop_lag_limit)]


def first_fired(conditions: Sequence[StopCondition], reading: Reading, baseline: Reading | None,
                offset: str) -> StopReason | None:
    for condition in conditions:
        reason = condition.judge(reading, baseline, offset)
        if reason is not None:
            return reason
    return None


def blind_inputs(conditions: Sequence[StopCondition], reading: Reading) -> dict[str, str]:
    """``{"<parameter> needs <input>": why}`` for every input an enabled condition cannot read."""
    blind = {}
    for condition in conditions:
        for name in condition.inputs:
            if getattr(reading, name, None) is None:
                blind[f"{condition.parameter} needs {name}"] = reading.errors.get(name, "not read")
    return blind


def lag_blindness(readings: Sequence[Reading], since: datetime, offset: str) -> StopReason | None:
    """The fault must end when the lag was readable before (pre-flight read it) and the last
    ``BLIND_POLLS`` readings, all taken since ``since`` (the fault in force), could not read it
    (NATS monitoring down): the lag limit is blind."""
    last = list(readings[-BLIND_POLLS:])
    if len(last) < BLIND_POLLS or last[0].at < since:
        return None
    if any(r.lag_pending is not None for r in last) or all(r.lag_pending is None for r in readings):
        return None
    why = last[-1].errors.get("lag_pending", "unreadable")
    return StopReason("lag_unreadable", float(BLIND_POLLS), float(BLIND_POLLS - 1), last[-1].at,
                      f"consumer lag unreadable on {BLIND_POLLS} readings in a row at {offset} ({why}); "
                      "stop_lag_limit cannot be judged blind", blind=True)
