from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from gamedaylib.clock import Clock
from gamedaylib.forms import (
    action_items_form,
    answered,
    checklist_form,
    observation_form,
    open_questions,
    stamp_buttons,
    team_response_seconds,
    write_action_items_csv,
)
from gamedaylib.journal import Journal
from gamedaylib.playbook import PHASES_BY_ID, PRE_GAMEDAY_CHECKLIST

pytestmark = pytest.mark.timeout(120)

Q_BREAKERS = "Did circuit breakers engage?"
Q_LAG = "How quickly did consumer lag start increasing?"


def observations(journal: Journal) -> list[dict]:
    return [e for e in journal.entries() if e["kind"] == "observation"]


def test_live_record_journals_each_answer_and_keeps_corrections(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    form = observation_form(journal, "buffering", answers=None, live=True, show=False)
    assert list(form.textareas) == list(PHASES_BY_ID["buffering"].questions)
    assert not form.record_button.disabled

    form.textareas[Q_BREAKERS].value = "yes, opened after ~3 s"
    form.record_button.click()
    form.record_button.click()  # nothing changed: nothing new
    assert [(e["question"], e["answer"]) for e in observations(journal)] == [(Q_BREAKERS, "yes, opened after ~3 s")]

    form.textareas[Q_BREAKERS].value = "yes, but only on api-gateway"
    form.textareas[Q_LAG].value = "within 2 s"
    form.record_button.click()
    obs = observations(journal)
    assert [e["answer"] for e in obs if e["question"] == Q_BREAKERS] == [
        "yes, opened after ~3 s",
        "yes, but only on api-gateway",
    ]
    assert all(e["phase"] == "buffering" and e["ts"] for e in obs)
    assert answered(journal.entries())["buffering"] == {
        Q_BREAKERS: "yes, but only on api-gateway",
        Q_LAG: "within 2 s",
    }
    still_open = open_questions(journal.entries())
    assert ("buffering", Q_BREAKERS) not in still_open
    assert ("buffering", "Are services logging retry attempts?") in still_open
    assert ("postmortem", "What went well?") in still_open


def test_headless_answers_journaled_once_and_widgets_disabled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    given = {Q_BREAKERS: "no — the breaker never opened", "not a playbook question?": "x"}
    form = observation_form(journal, "buffering", answers=given, live=False, show=False)
    observation_form(journal, "buffering", answers=given, live=False, show=False)  # the cell ran twice
    assert all(a.disabled for a in form.textareas.values()) and form.record_button.disabled
    assert form.textareas[Q_BREAKERS].value == "no — the breaker never opened"
    assert len(observations(journal)) == 2
    table = form.static_table()
    rows = {r[0]: r[1] for r in table.rows}
    assert rows[Q_BREAKERS] == "no — the breaker never opened"
    assert rows[Q_LAG] == "open"
    assert rows["not a playbook question? (not a playbook question)"] == "x"
    assert "no — the breaker never opened" in table.html() and "| open |" in table.markdown()


def test_stamps_and_team_response(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    clock = Clock()
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    clock.set_t0(t0)
    sb = stamp_buttons(
        journal, clock, stamps={"alert_seen": 70, "acknowledged": "2026-01-01T12:04:10+00:00"}, live=False, show=False
    )
    stamp_buttons(journal, clock, stamps={"acknowledged": 1}, live=False, show=False)  # re-run: not again
    stamps = [e for e in journal.entries() if e["kind"] == "stamp"]
    assert [(e["stamp"], e["at"]) for e in stamps] == [
        ("alert_seen", "2026-01-01T12:01:10+00:00"),
        ("acknowledged", "2026-01-01T12:04:10+00:00"),
    ]
    assert stamps[1]["t_offset"] == "T+04:10"
    assert all(b.disabled for b in sb.buttons.values())

    # the alert time from monitoring wins over the "alert seen" stamp
    seconds, evidence = team_response_seconds(journal.entries(), "2026-01-01T12:00:40+00:00")
    assert seconds == 210.0 and "monitoring" in evidence
    seconds, evidence = team_response_seconds(journal.entries(), None)
    assert seconds == 180.0 and "alert seen" in evidence

    empty = Journal(tmp_path / "empty.jsonl")
    seconds, reason = team_response_seconds(empty.entries(), t0)
    assert seconds is None and "acknowledged" in reason


def test_relative_stamp_without_t0_is_not_invented(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    stamp_buttons(journal, Clock(), stamps={"acknowledged": 30}, live=False, show=False)
    (entry,) = [e for e in journal.entries() if e["kind"] == "stamp"]
    assert entry["at"] is None and "T+0" in entry["reason"]
    seconds, reason = team_response_seconds(journal.entries(), datetime.now(timezone.utc))
    assert seconds is None and "acknowledged" in reason


def test_live_stamp_button_records_now(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    clock = Clock()
    clock.set_t0(clock.now() - timedelta(seconds=100))
    sb = stamp_buttons(journal, clock, stamps=None, live=True, show=False)
    before = datetime.now(timezone.utc)
    sb.buttons["paged"].click()
    (entry,) = [e for e in journal.entries() if e["kind"] == "stamp"]
    at = datetime.fromisoformat(entry["at"])
    assert entry["stamp"] == "paged" and before <= at <= datetime.now(timezone.utc)
    assert entry["t_offset"].startswith("T+01:4")
    assert sb.buttons["paged"].description.startswith("paged ✓")


def test_live_stamp_with_a_typed_time(tmp_path: Path) -> None:
    """A moment stamped late (e.g. after a wait that blocked the kernel) takes the time typed."""
    journal = Journal(tmp_path / "journal.jsonl")
    now = datetime(2026, 1, 1, 12, 10, 0, tzinfo=timezone.utc)
    clock = Clock(now=lambda: now)
    clock.set_t0(datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc))
    sb = stamp_buttons(journal, clock, stamps=None, live=True, show=False)
    sb.when.value = "T+04:30"
    sb.buttons["acknowledged"].click()
    sb.when.value = "12:01:15"
    sb.buttons["alert_seen"].click()
    sb.when.value = "soon-ish"
    sb.buttons["paged"].click()  # unreadable: shown, not journaled
    assert "cannot read" in sb.status.value and sb.when.value == "soon-ish"
    got = {e["stamp"]: e["at"] for e in journal.entries() if e["kind"] == "stamp"}
    assert got == {"acknowledged": "2026-01-01T12:04:30+00:00", "alert_seen": "2026-01-01T12:01:15+00:00"}
    assert team_response_seconds(journal, None).seconds == 195.0


def test_checklist_headless_and_live(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    form = checklist_form(journal, checklist={"Backup": True, PRE_GAMEDAY_CHECKLIST[0]: True}, live=False, show=False)
    (entry,) = [e for e in journal.entries() if e["kind"] == "checklist"]
    assert entry["phase"] == "preflight" and entry["complete"] is False
    assert entry["items"][PRE_GAMEDAY_CHECKLIST[0]] is True
    assert entry["items"]["Backup: Create pre-chaos database snapshot"] is True
    assert len(entry["missing"]) == len(PRE_GAMEDAY_CHECKLIST) - 2
    assert form.static_table().note == f"2 of {len(PRE_GAMEDAY_CHECKLIST)} done"

    live = checklist_form(journal, checklist=None, live=True, show=False)
    for box in live.checkboxes.values():
        box.value = True
    live.record_button.click()
    assert [e for e in journal.entries() if e["kind"] == "checklist"][-1]["complete"] is True


def test_action_items_form_and_csv(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    items = [
        {"title": "Alert on consumer lag > 1000", "owner": "sre", "due": "2026-02-01", "ticket": "OPS-1"},
        {"title": 'Buffer size, "quoted", with commas', "owner": "", "due": "", "ticket": ""},
    ]
    action_items_form(journal, items=items, live=False, show=False)
    action_items_form(journal, items=items, live=False, show=False)  # re-run: not twice
    live = action_items_form(journal, items=None, live=True, show=False)
    live.fields["title"].value = "Page the platform team too"
    live.fields["owner"].value = "alice"
    live.add_button.click()
    assert live.fields["title"].value == ""

    path = write_action_items_csv(journal.entries(), tmp_path / "action-items.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["title"] for r in rows] == [items[0]["title"], items[1]["title"], "Page the platform team too"]
    assert rows[0]["ticket"] == "OPS-1" and rows[2]["owner"] == "alice" and rows[2]["recorded_at"]
    # plain item dicts work too
    path2 = write_action_items_csv(items, tmp_path / "plain.csv")
    assert path2.read_text(encoding="utf-8").splitlines()[0] == "title,owner,due,ticket,recorded_at"


NOTEBOOK_CODE = """
from gamedaylib.journal import Journal
from gamedaylib.clock import Clock
from gamedaylib import forms
journal = Journal({journal!r})
clock = Clock()
clock.set_t0(clock.now())
forms.checklist_form(journal, checklist={{"Backup": True}}, live=False)
forms.observation_form(journal, "buffering", answers={answers!r}, live=False)
forms.stamp_buttons(journal, clock, stamps={{"acknowledged": 42}}, live=False)
forms.action_items_form(journal, items=[{{"title": "Add a lag alert", "owner": "bob", "due": "", "ticket": "OPS-7"}}], live=False)
"""


def test_headless_answers_survive_without_widget_state(tmp_path: Path) -> None:
    """Run the forms headless in a real kernel, drop the widget state as Papermill does, and read the
    notebook back with nbformat and as HTML: every answer is there, unanswered questions say open."""
    answer = "Yes: retries every 1-2 s & backoff (see gateway log)"
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            NOTEBOOK_CODE.format(journal=str(tmp_path / "journal.jsonl"), answers={"Are services logging retry attempts?": answer})
        )
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    nb.metadata.pop("widgets", None)
    path = tmp_path / "runbook.ipynb"
    nbformat.write(nb, path)

    read = nbformat.read(path, as_version=4)
    outputs = read.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    plain = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    htmls = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert answer in plain
    assert "answer: open" in plain  # unanswered questions are listed as open
    assert "Add a lag alert" in plain and "OPS-7" in plain
    assert "T+00:42" in plain
    assert "retries every 1-2 s &amp; backoff" in htmls

    body, _ = HTMLExporter().from_notebook_node(read)
    assert "Are services logging retry attempts?" in body
    assert "retries every 1-2 s &amp; backoff (see gateway log)" in body
    assert "Did circuit breakers engage?" in body
    assert "VBox(children" not in body and "[observation form: Event Buffering" in body  # short fallback
    entries = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [e["answer"] for e in entries if e["kind"] == "observation"] == [answer]


# The headless end-to-end check (answers, stamps and action items in runbook.ipynb, report.html and
# incident-report.md; action-items.csv) runs a real gameday: tests/test_facilitator_e2e.py.
