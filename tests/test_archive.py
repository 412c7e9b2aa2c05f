"""The archive of a run is complete whatever happened: a run that did not reach its end is marked
``aborted`` with the reason, keeps what it measured, and still has every file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from gamedaylib import archive
from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.parameters import as_dict, validate
from gamedaylib.scorecard import SCHEMA

DESIGN_FILES = {"runbook.ipynb", "report.html", "journal.jsonl", "scorecard.json", "samples.csv",
                "incident-report.md", "params.yaml"}
WRITTEN_BY_FINALIZE = DESIGN_FILES - {"runbook.ipynb", "report.html"} | {"action-items.csv"}


@pytest.fixture
def params(tmp_path: Path) -> dict:
    return as_dict(validate(NatsPartitionParams, {"archive_dir": str(tmp_path), "run_id": "r1"}))


def entries(path: Path) -> list[dict]:
    return list(Journal.read(path / JOURNAL_FILE))


def test_the_archive_holds_the_designs_files_and_the_action_items() -> None:
    assert set(archive.ARCHIVE_FILES) == DESIGN_FILES | {"action-items.csv"}


def test_an_unfinished_run_is_marked_aborted_and_keeps_what_it_measured(tmp_path: Path, params: dict) -> None:
    j = Journal(tmp_path / JOURNAL_FILE)
    j.record("run.started", run_id="r1")
    j.record("measurement", name="rto_seconds", value=12.0, target=120, comparison="<=", status="pass",
             evidence="t0->recovered", unit="s")
    card = archive.finalize(tmp_path, params, False, "DeadKernelError: kernel died", PLAYBOOK)
    jsonschema.validate(card, SCHEMA)
    assert card["verdict"] == "aborted" and card["reason"] == "DeadKernelError: kernel died"
    by_name = {m["name"]: m for m in card["metrics"]}
    assert list(by_name) == list(PLAYBOOK.metric_names)
    assert (by_name["rto_seconds"]["value"], by_name["rto_seconds"]["status"]) == (12.0, "pass")
    assert by_name["rpo_seconds"]["status"] == "not_measured" and "kernel died" in by_name["rpo_seconds"]["reason"]
    assert json.loads((tmp_path / archive.SCORECARD_FILE).read_text()) == card
    for name in WRITTEN_BY_FINALIZE:
        assert (tmp_path / name).exists(), name
    assert "ABORTED" in (tmp_path / archive.REPORT_FILE).read_text()
    assert (tmp_path / archive.SAMPLES_FILE).read_text().startswith("ts,t_offset_s,phase")
    kinds = [e["kind"] for e in entries(tmp_path)]
    assert kinds[-1] == "run.finished" and entries(tmp_path)[-1]["verdict"] == "aborted"
    archive.finalize(tmp_path, params, False, "DeadKernelError: kernel died", PLAYBOOK)  # again: not twice
    assert [e["kind"] for e in entries(tmp_path)].count("run.finished") == 1


def test_a_completed_run_keeps_its_own_scorecard(tmp_path: Path, params: dict) -> None:
    finished = {"gameday_id": "GAMEDAY-001", "run_id": "r1", "target": "lab", "profile": "rehearsal",
                "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:02:00+00:00",
                "verdict": "pass", "metrics": [], "events": {}}
    (tmp_path / archive.SCORECARD_FILE).write_text(json.dumps(finished))
    Journal(tmp_path / JOURNAL_FILE).record("run.finished", verdict="pass")
    assert archive.finalize(tmp_path, params, True, "", PLAYBOOK) == finished
    assert json.loads((tmp_path / archive.SCORECARD_FILE).read_text()) == finished


def test_a_run_stopped_then_killed_keeps_why_it_stopped_and_its_counts(tmp_path: Path, params: dict) -> None:
    stopped = {"condition": "stop_buffer_fraction", "value": 1.0, "threshold": 0.9, "at": "2026-01-01T00:00:04+00:00",
               "words": "gateway buffer 100 % full", "blind": False}
    partial = {"started_at": "2026-01-01T00:00:00+00:00", "targets": {"rto_seconds": 120.0},
               "events": {"canaries_sent": 40, "canaries_stored": 30, "canaries_lost": 10, "canaries_duplicated": 0,
                          "service_reported_dropped": 55.0},
               "stopped_by": stopped,
               "metrics": [{"name": "event_loss_count", "value": 55, "target": 0, "comparison": "==",
                            "status": "fail", "evidence": "at least 55", "unit": "events"}]}
    (tmp_path / archive.SCORECARD_FILE).write_text(json.dumps(partial))
    card = archive.finalize(tmp_path, params, False, "interrupted (SIGINT/SIGTERM)", PLAYBOOK)
    assert card["verdict"] == "aborted" and card["stopped_by"] == stopped
    assert card["started_at"] == "2026-01-01T00:00:00+00:00" and card["targets"] == {"rto_seconds": 120.0}
    assert card["events"]["canaries_lost"] == 10 and card["events"]["service_reported_dropped"] == 55.0
    loss = next(m for m in card["metrics"] if m["name"] == "event_loss_count")
    assert (loss["value"], loss["status"]) == (55, "fail")


def test_params_yaml_is_redacted(tmp_path: Path, params: dict) -> None:
    leaky = {**params, "commands": {"preflight": ["psql postgresql://u:hunter2@db/events"]}, "api_token": "t0k3n-x"}
    archive.finalize(tmp_path, leaky, False, "x", PLAYBOOK)
    text = (tmp_path / archive.PARAMS_FILE).read_text()
    assert "hunter2" not in text and "t0k3n-x" not in text
    assert yaml.safe_load(text)["run_id"] == "r1"


def test_the_report_takes_items_and_answers_from_the_journal_else_from_the_parameters(tmp_path: Path,
                                                                                     params: dict) -> None:
    """Items typed live (journal only) reach the report and action-items.csv; an answer recorded live
    closes its question; a run stopped before its post-mortem form still lists the parameter's items."""
    j = Journal(tmp_path / JOURNAL_FILE)
    j.record("observation", "postmortem", question="What could be improved?", answer="alert sooner", source="form")
    j.record("action_item", "postmortem", title="Add lag alert", owner="sre", due="2026-02-01", ticket="OPS-9")
    card = archive.finalize(tmp_path, params, False, "test", PLAYBOOK)
    text = archive.render_incident_report(tmp_path, scorecard=card, params=params, journal=j.entries(),
                                          playbook=PLAYBOOK)
    assert "Add lag alert" in text and "OPS-9" in text
    open_part = text.split("## Open questions", 1)[1].split("##", 1)[0]
    assert "What could be improved?" not in open_part and "What went well?" in open_part
    with open(tmp_path / archive.ACTION_ITEMS_FILE, newline="", encoding="utf-8") as fh:
        assert [(r["title"], r["ticket"]) for r in csv.DictReader(fh)] == [("Add lag alert", "OPS-9")]

    fresh = tmp_path / "stopped-early"
    given = {**params, "action_items": [{"title": "From the parameter", "owner": "", "due": "", "ticket": ""}],
             "observations": {"postmortem": {"What went well?": "the buffer held"}}}
    card = archive.finalize(fresh, given, False, "pre-flight failed", PLAYBOOK)
    text = (fresh / archive.REPORT_FILE).read_text()
    assert "From the parameter" in text and "the buffer held" in text
    assert "What went well?" not in text.split("## Open questions", 1)[1].split("##", 1)[0]
