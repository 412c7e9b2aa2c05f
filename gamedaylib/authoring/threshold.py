"""A success metric's target as a written playbook states it (``≤60m``, ``< 2 minutes``, ``0``, ``100%``),
read as a comparison, a value and a unit: ``≤60m`` is ``<= 3600 s``, ``0`` in an events column is
``== 0 events``.

- Durations are kept in seconds (``ms``, ``s``/``sec``/``second(s)``, ``m``/``min``/``minute(s)``,
  ``h``/``hr``/``hour(s)``); ``%`` is a percentage; any other word is a count's unit (``0 events``).
- A target with no unit takes the unit of the table's Result column (``___ s``, ``___ events``), if any.
- A target with no comparison is exact (``==``), except a duration, which is a ceiling (``<=``): an RPO
  of ``0`` means no more than 0 s of data lost.
Pure: a text that is not a target raises ``ValueError`` saying why (the reader names the heading).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["COMPARISONS", "Threshold", "parse_threshold"]

# the written forms of each comparison, the canonical one first
COMPARISONS: dict[str, tuple[str, ...]] = {
    "<=": ("<=", "≤", "=<"),
    ">=": (">=", "≥", "=>"),
    "<": ("<",),
    ">": (">",),
    "==": ("==", "="),
}
_SYMBOLS = sorted(((w, c) for c, ws in COMPARISONS.items() for w in ws), key=lambda p: -len(p[0]))

# a duration's unit -> seconds
SECONDS_PER: dict[str, float] = {
    **dict.fromkeys(("ms", "msec", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
}
SECONDS = "s"
PERCENT = "%"

_NUMBER = re.compile(r"(\d+(?:\.\d+)?|\.\d+)")
_UNIT = re.compile(r"(%|[A-Za-z][A-Za-z_-]*)")


@dataclass(frozen=True)
class Threshold:
    """``comparison value unit``: what a measured value must satisfy to pass."""

    comparison: str  # one of COMPARISONS
    value: float  # in seconds for a duration
    unit: str = ""  # "s", "%", a count's unit ("events") or ""

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison {self.comparison!r} is not one of {', '.join(COMPARISONS)}")
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"target {self.value!r} is not a finite number >= 0")

    @property
    def is_duration(self) -> bool:
        return self.unit == SECONDS

    def holds(self, measured: float) -> bool:
        """Whether ``measured`` (in this threshold's unit) meets the target."""
        return {
            "<=": measured <= self.value,
            ">=": measured >= self.value,
            "<": measured < self.value,
            ">": measured > self.value,
            "==": measured == self.value,
        }[self.comparison]

    def __str__(self) -> str:
        return f"{self.comparison} {_plain(self.value)}" + (f" {self.unit}" if self.unit else "")


def _plain(value: float) -> str:
    """A number as written by a person (no exponent), exact: ``3600``, ``0.25``."""
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _unit(word: str) -> tuple[str, float]:
    """(canonical unit, factor to it) for a written unit word."""
    lowered = word.lower()
    if lowered in SECONDS_PER:
        return SECONDS, SECONDS_PER[lowered]
    if word == PERCENT:
        return PERCENT, 1.0
    return lowered, 1.0


def parse_threshold(text: str, unit_hint: str = "") -> Threshold:
    """The target written as ``text`` (``≤60m``, ``< 2 minutes``, ``0``, ``100%``); ``unit_hint`` is the
    unit a target without one takes (the Result column's). ``ValueError`` saying why for anything else."""
    rest = text.strip()
    if not rest:
        raise ValueError("the target is empty")
    comparison = ""
    for written, canonical in _SYMBOLS:
        if rest.startswith(written):
            comparison, rest = canonical, rest[len(written):].lstrip()
            break
    number = _NUMBER.match(rest)
    if number is None:
        raise ValueError(f"target {text.strip()!r} has no number (write it as e.g. '≤60m', '< 2 minutes', '0')")
    value = float(number.group(1))
    rest = rest[number.end():].strip()
    word = unit_hint.strip()
    if rest:
        unit_match = _UNIT.fullmatch(rest)
        if unit_match is None:
            raise ValueError(f"target {text.strip()!r}: {rest!r} is not a unit (s, m, h, %, or a count's word)")
        word = unit_match.group(1)
    unit, factor = _unit(word) if word else ("", 1.0)
    if not comparison:
        comparison = "<=" if unit == SECONDS else "=="
    return Threshold(comparison, value * factor, unit)
