"""What a run found, in words (``gamedaylib.findings``): the verdict's reason, each metric's one-line why,
the loss reconciled, the configuration that mattered and the moments in the samples. Pure functions
over the scorecard, parameters and samples, as the report, the incident report and the verdict banner
use them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest

from gamedaylib import findings

T0 = datetime(2026, 12, 1, 23, 19, 37, tzinfo=timezone.utc)


def _metric(name: str, status: str, value: Any = None, evidence: str = "", **extra: Any) -> dict[str, Any]:
    m = {"name": name, "label": name.replace("_", " ").title(), "status": status, "value": value,
         "target": extra.pop("target", 0), "comparison": extra.pop("comparison", "=="), "unit": extra.pop("unit", ""),
         "evidence": evidence, **extra}
    if status == "not_measured":
        m["reason"] = evidence.removeprefix("not measured: ")
    return m


EVENTS = {"canaries_sent": 64, "canaries_stored": 28, "canaries_lost": 36, "canaries_duplicated": 0,
          "service_reported_dropped": 127.0, "ground_truth_lost": 91}
LOSS = _metric("event_loss_count", "fail", 127, "127 = canaries lost + users' events lost: 36 canaries ...",
               unit="events")


def test_the_verdict_says_why_in_words() -> None:
    stopped = {"condition": "stop_buffer_fraction", "value": 0.55, "threshold": 0.5, "blind": False,
               "words": "gateway buffer 55 % full in its fullest replica at T+00:02; limit 50 %"}
    assert findings.verdict_reason({"verdict": "fail", "metrics": [LOSS], "required_metrics": ["event_loss_count"]}) \
        == "Missed: Event Loss Count 127 events (target == 0 events)."
    alert = _metric("alert_fire_seconds", "fail", None, "no gameday alert fired within 60 s after T+0", target=60,
                    comparison="<=", unit="s")
    assert findings.verdict_reason({"verdict": "fail", "metrics": [alert]}) == (
        "Missed: Alert Fire Seconds: no gameday alert fired within 60 s after T+0 (target <= 60 s), not required.")
    assert findings.verdict_reason({"verdict": "fail", "metrics": [], "stopped_by": stopped}).startswith(
        "A stop condition ended the fault early: gateway buffer 55 % full in its fullest replica at T+00:02; "
        "limit 50 %. The run went on to verify")
    aborted = {"verdict": "aborted", "metrics": [], "reason": "cell 8 raised GamedayAborted: rehearsed fault"}
    assert findings.verdict_reason(aborted) == ("The run did not reach its end (cell 8 raised GamedayAborted: "
                                                "rehearsed fault). It could not judge the system.")
    refused = {"verdict": "aborted", "metrics": [], "reason": "cell 4 raised PreflightFailed: pre-flight failed: "
               "one primary: primary None; events table reachable: refused; nothing was injected"}
    assert findings.verdict_reason(refused) == (
        "Pre-flight refused to start the fault, so nothing was injected and the system was not judged. Failed "
        "checks: one primary: primary None; events table reachable: refused.")
    blind = {"verdict": "aborted", "metrics": [], "stopped_by": {**stopped, "blind": True, "words": "lag unreadable"}}
    assert findings.verdict_reason(blind).startswith("The run lost sight of what it measures")
    unmeasured = _metric("team_response_seconds", "not_measured", None, "not measured: no 'acknowledged' stamp")
    assert findings.verdict_reason({"verdict": "pass", "metrics": [unmeasured]}) == \
        "Every measured target was met; 1 metric(s) not measured, not required: Team Response Seconds."
    required = {"verdict": "fail", "metrics": [_metric("rto_seconds", "not_measured", None,
                                                       "not measured: no confirmed injection (T+0)")],
                "required_metrics": ["rto_seconds"]}
    assert findings.verdict_reason(required) == \
        "Required but not measured: Rto Seconds (no confirmed injection (T+0))."


@pytest.mark.parametrize(("metric", "why"), [
    (_metric("rto_seconds", "pass", 23.0, "T+0 2026-12-01T23:19:37+00:00 (fault confirmed) → full recovery "
             "2026-12-01T23:20:00.133330+00:00 (healed, lag < 10, gateway buffers empty, in-flight settled; "
             "confirmed by every canary accepted from then on being stored; read every 1 s)"),
     "T+0 23:19:37 (fault confirmed) → full recovery 23:20:00"),
    (_metric("rpo_seconds", "pass", 14.5, "loss window of lost canaries (36 of 64 lost; 0 when none lost): 64 "
             "canaries sent every 0.5 s ..."), "loss window of lost canaries (36 of 64 lost; 0 when none lost)"),
    (_metric("team_response_seconds", "not_measured", None, "not measured: no 'acknowledged' stamp was recorded"),
     "no 'acknowledged' stamp was recorded"),
    (LOSS, "36 canaries + 91 users' events accepted and never stored; the gateways counted 127 dropped"),
])
def test_each_metric_has_a_one_line_why(metric: dict[str, Any], why: str) -> None:
    assert findings.metric_why(metric, EVENTS) == why
    assert len(findings.metric_why(_metric("x", "fail", 1, "word " * 100))) <= findings.WHY_LIMIT


def test_the_loss_is_reconciled_across_its_parts() -> None:
    card = {"metrics": [LOSS], "events": EVENTS}
    assert findings.loss_summary(card) == (
        "127 events were accepted and never stored: 36 canaries + 91 users' events (lab ground truth). The "
        "gateways counted exactly 127 dropped (events_dropped_total): every lost event is one they discarded, "
        "so the loss is the buffer overflowing, not a silent loss elsewhere.")
    silent = {"metrics": [LOSS], "events": {**EVENTS, "service_reported_dropped": 100.0}}
    assert "27 lost events were discarded where no service counts them" in findings.loss_summary(silent)
    unseen = {"metrics": [LOSS], "events": {**EVENTS, "service_reported_dropped": 0.0}}
    assert "The gateways counted none dropped: all 127 were lost where no service counts them" in (
        findings.loss_summary(unseen))
    no_truth = {"metrics": [LOSS], "events": {**EVENTS, "ground_truth_lost": None}}
    assert findings.loss_summary(no_truth).startswith("36 canaries were accepted and never stored (users' events "
                                                      "have no ground truth on this target")
    not_measured = {"metrics": [_metric("event_loss_count", "not_measured", None,
                                        "not measured: the run was aborted before this was measured")],
                    "events": {"canaries_lost": 0}}
    assert findings.loss_summary(not_measured) == \
        "The loss was not measured: the run was aborted before this was measured."
    assert [line.key for line in findings.loss_lines(EVENTS)] == ["canaries_lost", "ground_truth_lost",
                                                                  "service_reported_dropped"]


def test_the_configuration_that_mattered() -> None:
    params = {"target": "lab", "lab_buffer_capacity": 20, "lab_overflow": "drop", "lab_event_rate": 5.0,
              "lab_service_replicas": 2, "lab_retry": True, "partition_seconds": 20.0,
              "lab_partition_mode": "blackhole", "stop_buffer_fraction": 1.0, "stop_error_rate": 0.5,
              "stop_lag_limit": 100000.0}
    lines = findings.configuration(params, {"events": EVENTS})
    assert lines[0] == "lab flaws staged (differ from a healthy lab): `lab_buffer_capacity=20`, `lab_overflow=drop`"
    assert "when full, the oldest buffered event is silently discarded (`lab_overflow=drop`)" in lines[1]
    assert "a 20 s partition needs room for about 100 events" in lines[2]
    assert lines[-1] == "the gateways dropped 127 events (events_dropped_total over the gameday)"
    healthy = findings.configuration({**params, "lab_buffer_capacity": 10000, "lab_overflow": "reject"})
    assert healthy[0] == "lab: every knob at its healthy default"
    failover = findings.configuration({**params, "lab_buffer_capacity": 10000, "lab_overflow": "reject",
                                       "lab_pg_replication": "async", "lab_pg_endpoint": "multihost",
                                       "lab_reporting_ack": "after_commit"})
    assert failover[0] == ("lab flaws staged (differ from a healthy lab): `lab_pg_endpoint=multihost`, "
                           "`lab_pg_replication=async`"), "GAMEDAY-002's knobs are judged too"


def test_moments_the_samples_show() -> None:
    rows = []
    for i in range(30):
        full = 4 <= i < 21
        rows.append({"ts": (T0 + timedelta(seconds=i)).isoformat(), "buffer_size": 20.0 if full else float(i % 4),
                     "buffer_capacity": 20.0, "buffer_fraction_max": 1.0 if full else 0.1,
                     "dropped_total": float(max(0, min(i - 4, 17)) * 7), "alerts_firing": 1.0 if i >= 3 else 0.0,
                     "lag_pending": float(i if i < 22 else 0), "requests_5xx": 0.0})
    moments = findings.moments_from_samples(pd.DataFrame(rows), T0)
    said = [((m.at - T0).total_seconds(), m.words) for m in moments]
    assert (4.0, "gateway buffer full in its fullest replica (20 events held of 20)") in said
    assert (5.0, "the gateways start dropping events (7 dropped so far)") in said
    assert (21.0, "the gateways' last drop: 119 events dropped in all") in said
    assert (21.0, "gateway buffer no longer full (10 % in its fullest replica)") in said
    assert (3.0, "alerts firing: 1 (was 0; read by the sampler)") in said
    assert (21.0, "consumer lag at its peak: 21 messages pending") in said
    assert [s for s, _ in said] == sorted(s for s, _ in said)
    assert findings.moments_from_samples(None) == []


def test_times_without_microseconds() -> None:
    assert findings.fmt_time("2026-12-01T23:19:31.554338+00:00") == "2026-12-01 23:19:31 UTC"
    assert findings.fmt_time("2026-12-01T23:19:31.554338+00:00", date=False) == "23:19:31"
    assert findings.fmt_time(None) == "—"
