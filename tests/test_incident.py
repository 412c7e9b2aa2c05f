from __future__ import annotations

from pathlib import Path

import pytest

from gamedaylib.clock import Clock
from gamedaylib.forms import (
    action_items_of,
    answered,
    checklist_form,
    observation_form,
    open_questions,
    stamp_buttons,
)
from gamedaylib.incident import DEFAULT_TEMPLATE, PLACEHOLDERS, draft_incident_report, load_template
from gamedaylib.journal import Journal
from gamedaylib.playbook import METRIC_NAMES, PHASES_BY_ID, PLAYBOOK_METRIC_LABELS
from gamedaylib.scorecard import Metric, Scorecard

pytestmark = pytest.mark.timeout(60)


def run_journal(tmp_path: Path) -> tuple[Journal, dict]:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("run.started", None, target="lab", profile="rehearsal")
    checklist_form(journal, checklist={"Backup": True}, live=False, show=False)
    journal.record("phase.started", "injection")
    clock = Clock()
    t0 = clock.now()
    clock.set_t0(t0)
    journal.record("partition.active", "injection", t0=t0.isoformat())
    observation_form(journal, "buffering", answers={
        "Did circuit breakers engage?": "Yes | after 3 s\nsecond line",
    }, live=False, show=False)
    journal.record("partition.healed", "heal")
    stamp_buttons(journal, clock, stamps={"acknowledged": 45}, live=False, show=False)
    observation_form(journal, "postmortem", answers={"What could be improved?": "alert on lag sooner"},
                     live=False, show=False)
    journal.record("action_item", "postmortem", title="Add lag alert", owner="sre", due="2026-02-01", ticket="OPS-9")
    journal.record("run.finished", None, verdict="fail")
    card = Scorecard("GAMEDAY-001", "run-7", "lab", "rehearsal", t0.isoformat(), finished_at=clock.now().isoformat(),
                     completed=True, targets={"rto_seconds": 120})
    card.set_metric(Metric.judged("rto_seconds", 41.2, 120, "T+0 to lag < 10 and buffer empty", unit="s"))
    card.set_metric(Metric.judged("event_loss_count", 3, 0, "3 canaries never stored", unit="events"))
    card.fill_missing("Alertmanager not running")
    return journal, card.as_dict()


def draft(tmp_path: Path, template: str | None = None) -> str:
    journal, scorecard = run_journal(tmp_path)
    entries = journal.entries()
    return draft_incident_report(
        template, scorecard=scorecard, journal_entries=entries,
        params={"partition_seconds": 20.0, "rto_target_seconds": 120.0, "target": "lab", "profile": "rehearsal"},
        observations=answered(entries), open_questions=open_questions(entries), action_items=action_items_of(entries),
    )


def test_report_has_every_section_filled(tmp_path: Path) -> None:
    text = draft(tmp_path)
    assert "{{" not in text
    assert "run-7" in text and "**Verdict: FAIL.**" in text
    # metrics: all eight, in the playbook's order, judged honestly
    for name in METRIC_NAMES:
        assert PLAYBOOK_METRIC_LABELS[name] in text
    assert "| RTO (Recovery Time) | <= 120 s | 41.2 s | ✅ Pass |" in text
    assert "| Event Loss Count | <= 0 events | 3 events | ❌ Fail |" in text
    assert "| Alert Fire Time | <= 0 | — | ⚪ Not measured | not measured: Alertmanager not running |" in text
    assert "Event Loss Count: 3 events against a target of <= 0 events: MISSED." in text  # summary
    # observations verbatim, open questions listed
    assert "  > Yes | after 3 s\n  > second line" in text
    assert "- **How quickly did consumer lag start increasing?** _open_" in text
    assert "- [ ] Event Replay: Were all buffered events delivered?" in text
    # timeline in T-offsets, the stamp at its own time
    assert "| T+00:45 |" in text and "stamp: acknowledged" in text
    assert "partition confirmed active (T+0)" in text
    # action items and improvements
    assert "| 1 | Add lag alert | sre | 2026-02-01 | OPS-9 |" in text
    assert "- [ ] Fix: Event Loss Count missed its target" in text
    assert "- [ ] What could be improved? alert on lag sooner" in text
    assert "- [ ] Measure Alert Fire Time next time (Alertmanager not running)." in text
    assert "- [x] Backup: Create pre-chaos database snapshot" in text


def test_custom_template_and_unknown_placeholder(tmp_path: Path) -> None:
    text = draft(tmp_path, "# {{gameday_id}} / {{ run_id }}\n{{ verdict }}\n{{ no_such_thing }}\n")
    assert text == "# GAMEDAY-001 / run-7\nFAIL\n{{ no_such_thing }}\n"


def test_repo_template_uses_only_known_placeholders() -> None:
    import re

    template = load_template()
    names = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template))
    assert names <= set(PLACEHOLDERS) and {"summary", "metrics_table", "timeline", "observations"} <= names
    assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", DEFAULT_TEMPLATE)) == set(PLACEHOLDERS)


def test_aborted_before_injection(tmp_path: Path) -> None:
    text = draft_incident_report(
        None, scorecard={"verdict": "aborted", "reason": "pre-flight failed", "run_id": "r0", "metrics": []},
        journal_entries=[], params={}, observations={}, open_questions=[("postmortem", "What went well?")],
        action_items=[],
    )
    assert "did not reach the partition" in text and "**Verdict: ABORTED.** The run did not reach its end (pre-flight failed)." in text
    assert "not reached (no confirmed injection)" in text
    assert "| RTO (Recovery Time) | — | — | ⚪ Not measured | not in the scorecard |" in text
    assert "_No action items were recorded._" in text
    assert PHASES_BY_ID["postmortem"].title in text


def test_archive_report_takes_action_items_and_answers_from_the_journal(tmp_path: Path) -> None:
    """What the runbook archives: items typed live (journal only, no parameter) reach the report and
    action-items.csv; an answer recorded live closes its question."""
    import csv

    from gamedaylib.archive import ACTION_ITEMS_FILE, Execution, finalize, render_incident_report

    journal, card = run_journal(tmp_path)
    params = {"gameday_id": "GAMEDAY-001", "run_id": "r1", "target": "lab", "profile": "rehearsal",
              "observations": {}, "action_items": []}
    text = render_incident_report(tmp_path, scorecard=card, params=params, journal=journal.entries())
    assert "Add lag alert" in text and "OPS-9" in text
    open_part = text.split("## Open questions", 1)[1]
    assert "What could be improved?" not in open_part.split("##", 1)[0]
    assert "What went well?" in open_part
    finalize(tmp_path, params, Execution(False, "test"))
    with open(tmp_path / ACTION_ITEMS_FILE, newline="", encoding="utf-8") as fh:
        assert [(r["title"], r["ticket"]) for r in csv.DictReader(fh)] == [("Add lag alert", "OPS-9")]
