"""Stop conditions: limits judged on each reading that end the fault at once, said in words with units;
a condition that cannot see its input cannot stop (pre-flight names it). A system-fired stop makes the
run ``fail``, a blind one ``aborted``. (Losing sight of the lag mid-fault is judged by the run over its
readings: tests/gamedays/test_nats_partition.py.)"""

from __future__ import annotations

from datetime import datetime, timezone

from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.parameters import validate
from gamedaylib.readings import Reading
from gamedaylib.scorecard import Metric, Scorecard
from gamedaylib.stopconditions import (
    BufferFraction,
    ErrorRate,
    LagLimit,
    StopReason,
    blind_inputs,
    conditions_of,
    first_fired,
)

AT = datetime(2026, 11, 28, 4, 0, 4, tzinfo=timezone.utc)


def reading(**values: object) -> Reading:
    return Reading(at=AT, **values)  # type: ignore[arg-type]


def test_buffer_fraction_judges_the_fullest_replica_and_says_it_in_words() -> None:
    condition = BufferFraction(0.9)
    assert condition.judge(reading(buffer_fraction_max=0.9, buffer_size=36, buffer_capacity=40), None, "T+00:04") is None
    assert condition.judge(reading(), None, "T+00:04") is None  # unreadable: not judged (pre-flight's job)
    reason = condition.judge(reading(buffer_fraction_max=1.0, buffer_size=25, buffer_capacity=40), None, "T+00:04")
    assert reason is not None
    assert (reason.condition, reason.value, reason.threshold, reason.at, reason.blind) == (
        "stop_buffer_fraction", 1.0, 0.9, AT, False)
    assert reason.words == ("gateway buffer 100 % full in its fullest replica (25 events held of 40 over every "
                            "replica) at T+00:04; limit 90 %")
    assert str(reason) == reason.words


def test_error_rate_counts_answers_since_the_baseline_once_there_are_enough() -> None:
    condition = ErrorRate(0.5, min_requests=10)
    base = reading(requests_total=1000, requests_5xx=7)
    assert condition.judge(reading(requests_total=1100, requests_5xx=37), base, "T+00:05") is None  # 30 %
    assert condition.judge(reading(requests_total=1004, requests_5xx=11), base, "T+00:05") is None  # 4 answers
    reason = condition.judge(reading(requests_total=1100, requests_5xx=67), base, "T+00:05")
    assert reason is not None and reason.condition == "stop_error_rate" and reason.value == 0.6
    assert "60 % of the gateway's answers were errors (5xx: 60 of 100 since pre-flight) at T+00:05" in reason.words
    assert condition.judge(reading(requests_total=20, requests_5xx=20), None, "T+00:01") is not None  # no baseline
    assert condition.judge(reading(requests_total=None, requests_5xx=5), base, "T+00:01") is None


def test_lag_limit() -> None:
    condition = LagLimit(100_000)
    assert condition.judge(reading(lag_pending=100_000), None, "T+00:01") is None
    reason = condition.judge(reading(lag_pending=123_456, lag_ack_pending=9_999_999), None, "T+00:09")
    assert reason is not None and reason.value == 123_456
    assert reason.words == "consumer lag 123,456 messages at T+00:09; limit 100,000"


def test_the_parameters_enable_the_conditions_and_the_first_crossed_fires() -> None:
    params = validate(NatsPartitionParams, {"stop_buffer_fraction": 0.5, "stop_error_rate": 0.2,
                                            "stop_lag_limit": 50})
    conditions = conditions_of(params)
    assert [c.parameter for c in conditions] == ["stop_buffer_fraction", "stop_error_rate", "stop_lag_limit"]
    assert first_fired(conditions, reading(buffer_fraction_max=0.1, lag_pending=3), None, "T+00:01") is None
    fired = first_fired(conditions, reading(buffer_fraction_max=0.6, lag_pending=70), None, "T+00:01")
    assert fired is not None and fired.condition == "stop_buffer_fraction"
    fired = first_fired(conditions, reading(buffer_fraction_max=0.1, lag_pending=70), None, "T+00:01")
    assert fired is not None and fired.condition == "stop_lag_limit" and fired.threshold == 50


def test_blind_inputs_name_each_input_an_enabled_condition_cannot_read() -> None:
    conditions = conditions_of(validate(NatsPartitionParams, {}))
    blind = blind_inputs(conditions, reading(lag_pending=0, requests_total=5, requests_5xx=0,
                                             errors={"buffer_fraction_max": "Prometheus: connection refused"}))
    assert blind == {"stop_buffer_fraction needs buffer_fraction_max": "Prometheus: connection refused"}
    seeing = reading(lag_pending=0, requests_total=5, requests_5xx=0, buffer_fraction_max=0.0)
    assert blind_inputs(conditions, seeing) == {}
    everything = blind_inputs(conditions, reading(errors={"lag_pending": "NATS monitoring: unreachable"}))
    assert set(everything) == {"stop_buffer_fraction needs buffer_fraction_max", "stop_error_rate needs requests_total",
                               "stop_error_rate needs requests_5xx", "stop_lag_limit needs lag_pending"}
    assert everything["stop_lag_limit needs lag_pending"] == "NATS monitoring: unreachable"


def test_a_stop_fired_by_the_system_fails_the_run_a_blind_one_aborts_it() -> None:
    system = BufferFraction(0.9).judge(reading(buffer_fraction_max=1.0), None, "T+00:04")
    blind = StopReason("lag_unreadable", 3.0, 2.0, AT, "consumer lag unreadable", blind=True)
    assert system is not None
    for reason, expected in ((system, "fail"), (blind, "aborted")):
        card = Scorecard("GAMEDAY-001", "r", "lab", "rehearsal", AT.isoformat(), completed=True)
        card.set_metric(Metric.judged("rto_seconds", 10, 120, "met"))
        card.stopped_by = reason.as_dict()
        data = card.as_dict()
        assert data["verdict"] == expected
        assert data["stopped_by"]["condition"] == reason.condition and data["stopped_by"]["words"] == reason.words
