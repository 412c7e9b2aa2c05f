"""A metric's written target read as comparison, value and unit: the playbooks' own forms, and properties
over every form the grammar allows (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gamedaylib.authoring.threshold import COMPARISONS, SECONDS_PER, Threshold, parse_threshold
from gamedaylib.scorecard import SCHEMA, Metric


@pytest.mark.parametrize(("text", "hint", "expected"), [
    ("≤60m", "min", Threshold("<=", 3600.0, "s")),
    ("≤15m", "", Threshold("<=", 900.0, "s")),
    ("≤60s", "s", Threshold("<=", 60.0, "s")),
    ("< 2 minutes", "", Threshold("<", 120.0, "s")),
    ("≥ 1.5 hours", "", Threshold(">=", 5400.0, "s")),
    ("0", "events", Threshold("==", 0.0, "events")),
    ("0", "", Threshold("==", 0.0, "")),
    ("0", "s", Threshold("<=", 0.0, "s")),  # a duration written bare is a ceiling: RPO 0 = at most 0 s
    ("5", "min", Threshold("<=", 300.0, "s")),
    ("100%", "", Threshold("==", 100.0, "%")),
    (">=99%", "", Threshold(">=", 99.0, "%")),
    ("<= 250 ms", "", Threshold("<=", 0.25, "s")),
    ("= 3 replicas", "", Threshold("==", 3.0, "replicas")),
])
def test_the_written_forms(text: str, hint: str, expected: Threshold) -> None:
    assert parse_threshold(text, unit_hint=hint) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("about an hour", "no number"),
    ("≤", "no number"),
    ("≤60 m s", "not a unit"),
    ("60m or so", "not a unit"),
    ("-5", "no number"),
    ("≤ 5m!", "not a unit"),
])
def test_what_is_not_a_target_says_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_threshold(text)


def test_holds_compares_as_written() -> None:
    assert parse_threshold("≤60m").holds(3600.0)
    assert not parse_threshold("≤60m").holds(3600.5)
    assert not parse_threshold("< 2 minutes").holds(120.0)
    assert parse_threshold("0", "events").holds(0) and not parse_threshold("0", "events").holds(1)
    assert parse_threshold(">=99%").holds(99.0) and not parse_threshold(">=99%").holds(98.9)


_comparisons = st.sampled_from([w for ws in COMPARISONS.values() for w in ws])
_numbers = st.one_of(st.integers(min_value=0, max_value=10**9).map(str),
                     st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False,
                                 allow_infinity=False).map(lambda d: f"{d:f}"))
_time_units = st.sampled_from(sorted(SECONDS_PER))
_count_units = st.from_regex(r"[a-z][a-z_-]{0,12}", fullmatch=True).filter(lambda w: w not in SECONDS_PER)
_spaces = st.sampled_from(["", " ", "  "])


@given(_comparisons, _spaces, _numbers, _spaces, _time_units)
def test_a_duration_is_kept_in_seconds(cmp: str, sp1: str, number: str, sp2: str, unit: str) -> None:
    found = parse_threshold(f"{cmp}{sp1}{number}{sp2 or ' '}{unit}")
    assert found.unit == "s"
    assert math.isclose(found.value, float(number) * SECONDS_PER[unit], rel_tol=1e-12, abs_tol=1e-12)
    assert found.comparison == next(c for c, ws in COMPARISONS.items() if cmp in ws)


@given(_numbers, _count_units)
def test_a_bare_count_is_exact_and_keeps_its_unit(number: str, unit: str) -> None:
    found = parse_threshold(number, unit_hint=unit)
    assert (found.comparison, found.value, found.unit) == ("==", float(number), unit)


@given(_comparisons, _numbers, st.one_of(_time_units, _count_units, st.just("%")))
def test_what_it_prints_reads_back_the_same(cmp: str, number: str, unit: str) -> None:
    found = parse_threshold(f"{cmp} {number} {unit}")
    again = parse_threshold(str(found))
    assert again == found


@given(st.text(max_size=30), st.text(max_size=8))
def test_any_text_is_a_threshold_or_a_value_error(text: str, hint: str) -> None:
    try:
        found = parse_threshold(text, unit_hint=hint)
    except ValueError:
        return
    assert found.comparison in COMPARISONS and found.value >= 0 and math.isfinite(found.value)


def test_the_comparisons_are_the_scorecards() -> None:
    enum = SCHEMA["properties"]["metrics"]["items"]["properties"]["comparison"]["enum"]
    assert sorted(COMPARISONS) == sorted(enum)


@given(st.sampled_from(sorted(COMPARISONS)), st.integers(0, 100).map(float), st.integers(0, 100).map(float))
def test_a_threshold_judges_as_the_scorecard_does(comparison: str, target: float, measured: float) -> None:
    threshold = Threshold(comparison, target, "s")
    judged = Metric.judged("m", measured, threshold.value, "test", comparison=threshold.comparison, unit="s")
    assert threshold.holds(measured) == (judged.status == "pass")
