"""The success metrics judged from plain facts (pure functions: no probe, no clock, no lab)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from gamedaylib import metrics
from gamedaylib.canary import CanaryReport, CanaryResult, account, canary_key

T0 = datetime(2026, 11, 28, 4, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Row:
    count: int
    first_created_at: datetime | None
    last_created_at: datetime | None


def canary_report(statuses: list[int | None], lost: set[int] = frozenset(), twice: set[int] = frozenset(),
                  interval: float = 0.5) -> CanaryReport:
    """Canaries sent every ``interval`` s from T+0: ``lost`` seqs accepted but never stored."""
    results = [CanaryResult(i, canary_key("R", i), T0 + timedelta(seconds=(i - 1) * interval), s, None, 5.0)
               for i, s in enumerate(statuses, 1)]
    table = {r.key: Row(2 if r.seq in twice else 1, r.sent_at + timedelta(seconds=0.2), None)
             for r in results if r.seq not in lost}
    return account(results, lambda keys: table, interval_seconds=interval)


def test_rto_from_t0_to_full_recovery() -> None:
    m = metrics.rto(t0=T0, recovered_at=T0 + timedelta(seconds=41.25), target=120, blind=None, last_seen=None,
                    recovery="lag < 10, buffers empty")
    assert (m.name, m.value, m.status, m.unit) == ("rto_seconds", 41.2, "pass", "s")
    assert "lag < 10, buffers empty" in m.evidence and "T+0" in m.evidence
    slow = metrics.rto(t0=T0, recovered_at=T0 + timedelta(seconds=130), target=120, blind=None, last_seen=None,
                       recovery="r")
    assert (slow.value, slow.status) == (130.0, "fail")


def test_rto_never_recovered_fails_blind_or_without_t0_is_not_measured() -> None:
    never = metrics.rto(t0=T0, recovered_at=None, target=120, blind=None, last_seen=T0 + timedelta(seconds=185),
                        recovery="r")
    assert (never.status, never.value) == ("fail", 185.0)
    assert "RTO > 185 s" in never.evidence
    blind = metrics.rto(t0=T0, recovered_at=None, target=120, blind="consumer lag unreadable on 4 of 9 readings",
                        last_seen=None, recovery="r")
    assert blind.status == "not_measured" and "unreadable on 4 of 9" in blind.evidence
    no_t0 = metrics.rto(t0=None, recovered_at=T0, target=120, blind=None, last_seen=None, recovery="r")
    assert no_t0.status == "not_measured" and "T+0" in no_t0.evidence


def test_lag_recovery() -> None:
    healed = T0 + timedelta(seconds=20)
    ok = metrics.lag_recovery(healed_at=healed, lag_recovered_at=healed + timedelta(seconds=7), target=60,
                              threshold=10, blind=None)
    assert (ok.name, ok.value, ok.status) == ("lag_recovery_seconds", 7.0, "pass")
    assert "num_pending" in ok.evidence and "under 10" in ok.evidence
    never = metrics.lag_recovery(healed_at=healed, lag_recovered_at=None, target=60, threshold=10, blind=None)
    assert never.status == "fail" and "never under 10" in never.evidence
    blind = metrics.lag_recovery(healed_at=healed, lag_recovered_at=None, target=60, threshold=10, blind="NATS down")
    assert blind.status == "not_measured"
    assert metrics.lag_recovery(healed_at=None, lag_recovered_at=None, target=60, threshold=10,
                                blind=None).status == "not_measured"


def test_rpo_is_the_longest_loss_window_of_lost_canaries() -> None:
    report = canary_report([202] * 10, lost={3, 6, 7, 8})
    m = metrics.rpo(report, 30)
    assert (m.value, m.status) == (1.5, "pass")  # seq 6..8: sent 1 s apart, + one interval of 0.5 s
    assert "4 of 10 lost" in m.evidence
    assert metrics.rpo(canary_report([202] * 4), 30).value == 0.0
    assert metrics.rpo(canary_report([202] * 80, lost=set(range(2, 80))), 30).status == "fail"
    unread = metrics.rpo("events table unreadable", 30)
    assert unread.status == "not_measured" and "events table unreadable" in unread.evidence


def test_event_loss_with_the_labs_ground_truth_adds_the_disjoint_exact_parts() -> None:
    parts = metrics.LossParts(canaries_lost=2, service_reported_dropped=40.0, ground_truth_lost=38,
                              ground_truth_accepted=900)
    m = metrics.event_loss(parts)
    assert (m.value, m.status, m.comparison) == (40, "fail", "==")
    assert "canaries lost + users' events lost" in m.evidence and "38 of 900" in m.evidence
    assert parts.as_events() == {"canaries_lost": 2, "service_reported_dropped": 40.0, "ground_truth_lost": 38}
    clean = metrics.event_loss(metrics.LossParts(canaries_lost=0, service_reported_dropped=0.0, ground_truth_lost=0,
                                                 ground_truth_accepted=900))
    assert (clean.value, clean.status) == (0, "pass")


def test_event_loss_without_truth_is_the_larger_lower_bound_and_says_so() -> None:
    m = metrics.event_loss(metrics.LossParts(canaries_lost=3, service_reported_dropped=666.0))
    assert (m.value, m.status) == (666, "fail")
    assert "at least 666" in m.evidence and "lower bound" in m.evidence
    only_services = metrics.event_loss(metrics.LossParts(canaries_lost=None, canaries_reason="no ingest URL",
                                                         service_reported_dropped=0.0))
    assert (only_services.value, only_services.status) == (0, "pass")
    assert "no ingest URL" in only_services.evidence
    nothing = metrics.event_loss(metrics.LossParts(canaries_lost=None, canaries_reason="no DSN",
                                                   service_reason="Prometheus down"))
    assert nothing.status == "not_measured" and "Prometheus down" in nothing.evidence
    truth_without_canaries = metrics.event_loss(metrics.LossParts(canaries_lost=None, canaries_reason="no DSN",
                                                                  ground_truth_lost=0, ground_truth_accepted=10))
    assert truth_without_canaries.status == "not_measured"


def test_user_facing_errors_count_canaries_and_the_gateways_other_5xx() -> None:
    m = metrics.user_facing_errors(canary_errors=3, canary_5xx=2, gateway_5xx=10.0)
    assert (m.value, m.status) == (11, "fail")  # 3 canaries + the 8 other 5xx answers
    assert metrics.user_facing_errors(canary_errors=0, canary_5xx=0, gateway_5xx=0.0).status == "pass"
    unread = metrics.user_facing_errors(canary_errors=1, canary_5xx=0, gateway_5xx=None)
    assert unread.value == 1 and "not read" in unread.evidence
    assert metrics.user_facing_errors(canary_errors=None, canary_5xx=0, gateway_5xx=None).status == "not_measured"


def test_duplicates_count_extra_rows() -> None:
    m = metrics.duplicates([("k1", 2), ("k2", 3)], canary_duplicated=1)
    assert (m.value, m.status) == (3, "fail")
    assert "over 2 idempotency keys" in m.evidence and "1 of them canaries" in m.evidence
    assert metrics.duplicates([], 0).status == "pass"
    assert metrics.duplicates("events table unreadable: no DSN", 0).status == "not_measured"


def test_alert_fire_time() -> None:
    fired = metrics.alert_fire(t0=T0, fired_at=T0 + timedelta(seconds=33.3), label="NATSUnreachable (api-gateway)",
                               waited=40, target=60, unavailable=None)
    assert (fired.value, fired.status) == (33.3, "pass") and "NATSUnreachable (api-gateway)" in fired.evidence
    silent = metrics.alert_fire(t0=T0, fired_at=None, label="", waited=61, target=60, unavailable=None)
    assert silent.status == "fail" and "no gameday alert fired within 61 s" in silent.evidence
    blind = metrics.alert_fire(t0=T0, fired_at=None, label="", waited=0, target=60,
                               unavailable="neither Alertmanager nor Prometheus is available")
    assert blind.status == "not_measured"
    assert metrics.alert_fire(t0=None, fired_at=None, label="", waited=0, target=60,
                              unavailable=None).status == "not_measured"


@pytest.mark.parametrize(("seconds", "status"), [(60.0, "pass"), (700.04, "fail"), (None, "not_measured")])
def test_team_response(seconds: float | None, status: str) -> None:
    m = metrics.team_response(seconds, "ack − alert", 600)
    assert m.status == status and m.name == "team_response_seconds"
    assert m.value == (None if seconds is None else round(seconds, 1))
