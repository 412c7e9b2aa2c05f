"""The post-mortem draft: the packaged template filled from plain data (scorecard, journal, parameters,
the team's answers, open questions, action items), whatever happened to the run."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import gamedaylib
from gamedaylib.clock import Clock
from gamedaylib.forms import checklist_form, observation_form, stamp_buttons
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.incident import (
    DEFAULT_TEMPLATE,
    DEFAULT_TEMPLATE_PATH,
    PLACEHOLDERS,
    draft_incident_report,
    load_template,
)
from gamedaylib.journal import Journal
from gamedaylib.observations import action_items_of, answered, open_questions
from gamedaylib.scorecard import Metric, Scorecard

pytestmark = pytest.mark.timeout(60)


def run_journal(tmp_path: Path) -> tuple[Journal, dict[str, Any]]:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("run.started", None, target="lab", profile="rehearsal")
    checklist_form(journal, PLAYBOOK.checklist, checklist={"Backup": True}, live=False, show=False)
    journal.record("phase.started", "injection")
    clock = Clock()
    t0 = clock.now()
    clock.set_t0(t0)
    journal.record("fault.requested", "injection", fault="the services cut off from every NATS server",
                   deadline_seconds=50)
    journal.record("fault.active", "injection", t0=t0.isoformat())
    observation_form(journal, PLAYBOOK, "buffering", answers={
        "Did circuit breakers engage?": "Yes | after 3 s\nsecond line",
    }, live=False, show=False)
    journal.record("stop_condition", "buffering", condition="stop_buffer_fraction", value=1.0, limit=0.9,
                   detail="gateway buffer 100 % full at T+00:04; limit 90 %")
    journal.record("fault.healed", "heal", at=(t0 + timedelta(seconds=20)).isoformat(), by="rollback")
    stamp_buttons(journal, clock, stamps={"acknowledged": 45}, live=False, show=False)
    observation_form(journal, PLAYBOOK, "postmortem", answers={"What could be improved?": "alert on lag sooner"},
                     live=False, show=False)
    journal.record("action_item", "postmortem", title="Add lag alert", owner="sre", due="2026-02-01", ticket="OPS-9")
    journal.record("run.finished", None, verdict="fail")
    card = Scorecard("GAMEDAY-001", "run-7", "lab", "rehearsal", t0.isoformat(), finished_at=clock.now().isoformat(),
                     completed=True, targets={"rto_seconds": 120}, metric_names=PLAYBOOK.metric_names,
                     labels={m.name: m.label for m in PLAYBOOK.metrics})
    card.set_metric(Metric.judged("rto_seconds", 41.2, 120, "T+0 to lag < 10 and buffer empty", unit="s"))
    card.set_metric(Metric.judged("event_loss_count", 3, 0, "3 canaries never stored", comparison="==",
                                  unit="events"))
    card.fill_missing("Alertmanager not running")
    card.events.update(canaries_sent=40, canaries_stored=37, canaries_lost=3)
    return journal, card.as_dict()


def draft(tmp_path: Path, template: str | None = None) -> str:
    journal, scorecard = run_journal(tmp_path)
    entries = journal.entries()
    return draft_incident_report(
        template, scorecard=scorecard, journal_entries=entries,
        params={"partition_seconds": 20.0, "rto_target_seconds": 120.0, "target": "lab", "profile": "rehearsal",
                "required_metrics": ["rto_seconds"]},
        observations=answered(entries), open_questions=open_questions(entries, PLAYBOOK),
        action_items=action_items_of(entries), playbook=PLAYBOOK,
    )


def test_every_section_is_filled(tmp_path: Path) -> None:
    text = draft(tmp_path)
    assert "{{" not in text
    assert "run-7" in text and "**Verdict: FAIL.**" in text and PLAYBOOK.title in text
    # metrics: all eight, in the playbook's order, judged honestly
    positions = [text.index(f"| {m.label} |") for m in PLAYBOOK.metrics]
    assert positions == sorted(positions)
    assert "| RTO (Recovery Time) | <= 120 s | 41.2 s | ✅ Pass |" in text
    assert "| Event Loss Count | == 0 events | 3 events | ❌ Fail |" in text
    assert "| Alert Fire Time | <= 0 | — | ⚪ Not measured | not measured: Alertmanager not running |" in text
    assert "- Event Loss Count: 3 events against a target of == 0 events: MISSED." in text  # summary
    assert "Canaries: sent 40, stored 37, lost 3, duplicated 0." in text
    assert "| RTO target (`rto_target_seconds`) | 120 s |" in text and "| required metrics | rto_seconds |" in text
    # observations verbatim, open questions listed
    assert "  > Yes | after 3 s\n  > second line" in text
    assert "- **How quickly did consumer lag start increasing?** _open_" in text
    assert "- [ ] Event Replay: Were all buffered events delivered?" in text
    # the timeline in T-offsets: the fault, the stop condition, the stamp at its own time
    assert "fault confirmed in force (T+0)" in text and "fault ended (rollback)" in text
    assert "stop condition stop_buffer_fraction: gateway buffer 100 % full at T+00:04; limit 90 %" in text
    assert "| T+00:45 |" in text and "stamp: acknowledged" in text
    timeline = text.split("## Timeline", 1)[1].split("##", 1)[0]
    offsets = re.findall(r"^\| (T[+-][\d:]+|before T\+0) \|", timeline, re.MULTILINE)
    assert offsets and offsets[-1] == "T+00:45"
    # action items, improvements, the checklist as recorded
    assert "| 1 | Add lag alert | sre | 2026-02-01 | OPS-9 |" in text
    assert ("- [ ] Event Loss Count 3 events against == 0, and no service counted a drop: events were lost "
            "silently.") in text  # an actionable line with the run's numbers, not "fix it"
    assert "- [ ] What could be improved? alert on lag sooner" in text
    assert "- [ ] Measure Alert Fire Time next time: Alertmanager not running." in text
    assert "- [ ] Action item: Add lag alert (OPS-9)" in text
    assert "- [x] Backup: Create pre-chaos database snapshot" in text
    assert "- [ ] Schedule: Announce 48h in advance, block 2h time slot" in text


def test_a_custom_template_and_an_unknown_placeholder(tmp_path: Path) -> None:
    text = draft(tmp_path, "# {{gameday_id}} / {{ run_id }}\n{{ verdict }}\n{{ no_such_thing }}\n")
    assert text == "# GAMEDAY-001 / run-7\nFAIL\n{{ no_such_thing }}\n"  # a typo stays visible


def test_the_packaged_template_uses_only_known_placeholders() -> None:
    assert DEFAULT_TEMPLATE_PATH.is_file()  # package data: nothing read outside the installed package
    assert DEFAULT_TEMPLATE_PATH.is_relative_to(Path(gamedaylib.__file__).resolve().parent)
    template = load_template()
    names = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template))
    assert names <= set(PLACEHOLDERS) and {"summary", "metrics_table", "timeline", "observations"} <= names
    assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", DEFAULT_TEMPLATE)) == set(PLACEHOLDERS)


def test_a_run_aborted_before_the_fault(tmp_path: Path) -> None:
    text = draft_incident_report(
        None, scorecard={"verdict": "aborted", "reason": "pre-flight failed", "run_id": "r0", "metrics": []},
        journal_entries=[], params={}, observations={}, open_questions=[("postmortem", "What went well?")],
        action_items=[], playbook=PLAYBOOK,
    )
    assert "did not reach its fault: no fault was confirmed injected" in text
    assert "**Verdict: ABORTED.** The run did not reach its end (pre-flight failed)." in text
    assert "not reached (no confirmed injection)" in text
    assert "| RTO (Recovery Time) | — | — | ⚪ Not measured | not in the scorecard |" in text
    assert "_No action items were recorded._" in text and "_The journal holds no events._" in text
    assert "- [ ] Post-Mortem: What went well?" in text
    assert "_The checklist was not recorded._" in text
