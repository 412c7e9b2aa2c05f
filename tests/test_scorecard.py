"""The scorecard: metrics judged against their targets, never ``pass`` without a measurement, and the
verdict a scheduler acts on (pass 0, fail 1, aborted 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.scorecard import SCHEMA, Metric, Scorecard, load, table_markdown, verdict

STOPPED = {"condition": "stop_buffer_fraction", "value": 1.0, "threshold": 0.9, "at": "2026-01-01T00:00:04+00:00",
           "words": "gateway buffer 100 % full", "blind": False}


def card(**kwargs: object) -> Scorecard:
    return Scorecard("GAMEDAY-001", "r1", "lab", "rehearsal", "2026-01-01T00:00:00+00:00",
                     metric_names=PLAYBOOK.metric_names, labels={m.name: m.label for m in PLAYBOOK.metrics},
                     **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "comparison", "target", "status"),
    [(41.2, "<=", 120, "pass"), (120, "<=", 120, "pass"), (121, "<=", 120, "fail"), (0, "==", 0, "pass"),
     (1, "==", 0, "fail"), (5, "<", 5, "fail"), (5, ">=", 5, "pass"), (4, ">", 5, "fail")],
)
def test_judging(value: float, comparison: str, target: float, status: str) -> None:
    m = Metric.judged("m", value, target, "how", comparison=comparison)
    assert (m.status, m.value, m.evidence) == (status, value, "how")


def test_a_metric_without_a_value_is_never_a_pass() -> None:
    nm = Metric.not_measured("alert_fire_seconds", 60, "no Alertmanager", unit="s")
    assert (nm.status, nm.value) == ("not_measured", None)
    assert nm.evidence == "not measured: no Alertmanager"
    assert nm.as_dict()["reason"] == "no Alertmanager"
    assert Metric.judged("rto_seconds", math.nan, 120, "nan").status == "not_measured"
    assert Metric.judged("rto_seconds", None, 120, "").status == "not_measured"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="comparison"):
        Metric.judged("x", 1, 1, "e", comparison="~")


def test_verdict_rules() -> None:
    ok = Metric.judged("rto_seconds", 1, 2, "e")
    bad = Metric.judged("rpo_seconds", 3, 2, "e")
    nm = Metric.not_measured("alert_fire_seconds", 60, "no probe")
    assert verdict([ok, nm], completed=True) == "pass"
    assert verdict([ok, nm], completed=True, required=["alert_fire_seconds"]) == "fail"
    assert verdict([ok, bad], completed=True) == "fail"
    assert verdict([ok], completed=False) == "aborted"
    assert verdict([ok, bad], completed=False) == "aborted"
    # a stop condition fired by the system: the system failed (exit 1), even with every metric met
    assert verdict([ok], completed=True, stopped_by=STOPPED) == "fail"
    # a blind one (the run lost sight of what it measures): it could not judge the system (exit 2)
    assert verdict([ok], completed=True, stopped_by={**STOPPED, "blind": True}) == "aborted"


def test_set_metric_orders_labels_and_marks_required_the_last_measurement_wins() -> None:
    c = card(required_metrics=["rpo_seconds"])
    c.set_metric(Metric.judged("duplicate_count", 0, 0, "e", comparison="=="))
    c.set_metric(Metric.judged("rpo_seconds", 40, 30, "first count"))
    c.set_metric(Metric.judged("rto_seconds", 41, 120, "e"))
    c.set_metric(Metric.judged("rpo_seconds", 10, 30, "recounted"))
    assert [m.name for m in c.metrics] == ["rto_seconds", "rpo_seconds", "duplicate_count"]
    rpo = c.metric("rpo_seconds")
    assert rpo is not None and (rpo.value, rpo.status, rpo.required) == (10, "pass", True)
    assert rpo.label == "RPO (Data Loss Window)"
    assert c.metric("rto_seconds").required is False  # type: ignore[union-attr]
    assert c.metric("nope") is None


def test_scorecard_json_matches_the_schema_and_every_playbook_metric_appears(tmp_path: Path) -> None:
    c = card(required_metrics=["rto_seconds"], targets={"rto_seconds": 120, "rpo_seconds": 30})
    c.set_metric(Metric.judged("rto_seconds", 41.2, 120, "t0->recovered", unit="s"))
    c.fill_missing()
    c.completed = True
    c.finished_at = "2026-01-01T00:02:00+00:00"
    path = c.write(tmp_path / "scorecard.json")
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    data = load(path)
    jsonschema.validate(data, SCHEMA)
    assert data["verdict"] == "pass" and data["stopped_by"] is None
    assert [m["name"] for m in data["metrics"]] == list(PLAYBOOK.metric_names)
    assert data["metrics"][0]["required"] is True and data["metrics"][0]["label"] == "RTO (Recovery Time)"
    rest = data["metrics"][1:]
    assert all(m["status"] == "not_measured" and m["reason"] for m in rest)
    assert next(m for m in rest if m["name"] == "rpo_seconds")["target"] == 30
    assert json.loads(path.read_text()) == c.as_dict()


def test_a_stopped_run_says_why_in_the_scorecard() -> None:
    c = card()
    c.completed, c.stopped_by, c.reason = True, dict(STOPPED), STOPPED["words"]
    c.finished_at = "2026-01-01T00:01:00+00:00"
    c.fill_missing()
    data = c.as_dict()
    assert data["verdict"] == "fail"
    assert data["stopped_by"]["condition"] == "stop_buffer_fraction" and data["reason"] == "gateway buffer 100 % full"
    jsonschema.validate(data, SCHEMA)


def test_table_markdown_is_the_playbooks_table_filled() -> None:
    metrics = [Metric.judged("rto_seconds", 41.25, 120, "a | b", unit="s"),
               Metric.not_measured("alert_fire_seconds", 60, "no Alertmanager", unit="s")]
    c = card()
    for m in metrics:
        c.set_metric(m)
    table = table_markdown(c.metrics)
    assert "| RTO (Recovery Time) | <= 120 s | 41.2 s | ✔ Pass | a \\| b |" in table
    assert "| Alert Fire Time | <= 60 s | — | – Not measured | not measured: no Alertmanager |" in table
