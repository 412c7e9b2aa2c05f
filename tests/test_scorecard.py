from __future__ import annotations

import jsonschema

from gamedaylib.playbook import METRIC_NAMES
from gamedaylib.scorecard import SCHEMA, Metric, Scorecard, load, table_markdown, verdict


def test_judging() -> None:
    assert Metric.judged("rto_seconds", 41.2, 120, "t0->recovered").status == "pass"
    assert Metric.judged("rto_seconds", 121, 120, "x").status == "fail"
    assert Metric.judged("event_loss_count", 0, 0, "x").status == "pass"
    assert Metric.judged("event_loss_count", 1, 0, "x").status == "fail"
    nm = Metric.not_measured("alert_fire_seconds", 60, "no Alertmanager")
    assert nm.status == "not_measured" and "no Alertmanager" in nm.evidence and nm.value is None


def test_verdict_rules() -> None:
    ok = Metric.judged("rto_seconds", 1, 2, "e")
    bad = Metric.judged("rpo_seconds", 3, 2, "e")
    nm = Metric.not_measured("alert_fire_seconds", 60, "no probe")
    assert verdict([ok, nm], completed=True) == "pass"
    assert verdict([ok, nm], completed=True, required=["alert_fire_seconds"]) == "fail"
    assert verdict([ok, bad], completed=True) == "fail"
    assert verdict([ok], completed=False) == "aborted"


def test_scorecard_json_matches_schema(tmp_path) -> None:
    card = Scorecard("GAMEDAY-001", "r1", "lab", "rehearsal", "2026-01-01T00:00:00+00:00",
                     required_metrics=["rto_seconds"], targets={"rto_seconds": 120})
    card.set_metric(Metric.judged("rto_seconds", 41.2, 120, "t0->recovered", unit="s"))
    card.fill_missing()
    card.completed = True
    card.finished_at = "2026-01-01T00:02:00+00:00"
    path = card.write(tmp_path / "scorecard.json")
    data = load(path)
    jsonschema.validate(data, SCHEMA)
    assert data["verdict"] == "pass"
    assert [m["name"] for m in data["metrics"]] == list(METRIC_NAMES)
    assert data["metrics"][0]["required"] is True
    assert all(m["status"] == "not_measured" for m in data["metrics"][1:])
    assert "| RTO (Recovery Time) |" in table_markdown(card.metrics)
